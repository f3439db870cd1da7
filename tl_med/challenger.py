"""Who holds ``challenger``: the policy for a new site model version (pure; no MLflow).

A new adapted version is always registered, but it takes the alias ``challenger`` only when it is
not flagged for negative transfer and does not score below the current challenger on the same
test manifest (version tags ``test_dice`` and ``manifest_sha256``). When the two were tested on
different manifests the scores cannot be compared, and the newer version takes the alias.

Example:
    >>> challenger_decision({"test_dice": "0.71", "manifest_sha256": "a"},
    ...                     ("3", {"test_dice": "0.78", "manifest_sha256": "a"}))
    (False, "test Dice 0.7100 below challenger v3's 0.7800 on the same test split")
    >>> challenger_decision({"test_dice": "0.80", "manifest_sha256": "a"}, None)
    (True, 'first version: no current challenger')
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["challenger_decision"]


def _dice(tags: Mapping[str, str]) -> float | None:
    try:
        return float(tags["test_dice"])
    except (KeyError, ValueError):
        return None


def challenger_decision(new: Mapping[str, str],
                        current: tuple[str, Mapping[str, str]] | None) -> tuple[bool, str]:
    """Whether a new version with tags ``new`` takes ``challenger`` from ``current`` (its version
    and tags, ``None`` when no version holds the alias), and why in one line.

    Refused: a version flagged for negative transfer (``negative_transfer=true``), or one whose
    test Dice is below the current challenger's on the same test manifest.
    """
    if new.get("negative_transfer") == "true":
        why = new.get("negative_transfer_reason") or "adapted Dice below a baseline"
        return False, f"flagged for negative transfer: {why}"
    if current is None:
        return True, "first version: no current challenger"
    version, tags = current
    ours, theirs = _dice(new), _dice(tags)
    if tags.get("negative_transfer") == "true":
        return True, f"challenger v{version} is flagged for negative transfer"
    if not tags.get("manifest_sha256") or tags.get("manifest_sha256") != new.get("manifest_sha256"):
        return True, (f"challenger v{version} was evaluated on another test manifest: the test Dice cannot be "
                      "compared")
    if ours is None or theirs is None:
        return True, f"no test Dice on record for {'this version' if ours is None else f'challenger v{version}'}"
    if ours < theirs:
        return False, f"test Dice {ours:.4f} below challenger v{version}'s {theirs:.4f} on the same test split"
    return True, f"test Dice {ours:.4f} ≥ challenger v{version}'s {theirs:.4f} on the same test split"
