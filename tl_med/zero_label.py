"""Is this source model fit to adapt a site that has no labels?

With no target label, what the source model learnt decides most of the outcome: in the benchmarks
(README, "Zero target labels"), a source pretrained with ``intensity`` augmentation
recovers about 0 % of the gap to the oracle where the tissue contrast changes, whatever zero-label
step follows, while a source pretrained with ``contrast`` augmentation (the default) recovers about
half of it after 50 epochs and most of it after 1200.
The source stage records its training augmentation and epochs as tags of the registered version
(``augment``, ``epochs``); a zero-label adaptation reads the augmentation, tags its parent run with
it (``source_augment``) and warns in one line when the source was not trained for contrast changes.

Example:
    >>> zero_label_caveat("east", "models:/tlmed-liver-north@challenger", "intensity")[:40]
    'east: no target labels, and the source m'
    >>> zero_label_caveat("east", "models:/tlmed-liver-north@challenger", "contrast") is None
    True
"""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tl_med.models.pretrained import registered_version

__all__ = ["ROBUST_AUGMENT", "source_augmentation", "zero_label_caveat"]

# the pretraining augmentation that makes a source model survive a change of tissue contrast
ROBUST_AUGMENT = "contrast"


def source_augmentation(source: str, client: MlflowClient) -> str | None:
    """The training augmentation a source records: a registered version's ``augment`` tag
    (``models:/<name>@<alias>``, ``models:/<name>/<version>``) or a pretraining run's
    ``pretrain.augment`` parameter (``runs:/<id>/...``, what the pipeline adapts from); ``None`` when
    it is unknown (a bundle, a checkpoint, another run, a version from before the tag, or one that
    cannot be read)."""
    try:
        if source.startswith("models:/"):
            return registered_version(source, client).tags.get("augment") or None
        if source.startswith("runs:/"):
            run = client.get_run(source.removeprefix("runs:/").split("/")[0])
            return run.data.params.get("pretrain.augment") if run.data.tags.get("strategy") == "pretrain" else None
    except (MlflowException, ValueError, TypeError):
        return None
    return None


def zero_label_caveat(site: str, source: str, augment: str | None) -> str | None:
    """One line for a zero-label adaptation from a source not trained for contrast changes (``None``
    when it was)."""
    if augment == ROBUST_AUGMENT:
        return None
    how = f"with '{augment}' augmentation" if augment else "with an unrecorded augmentation"
    return (f"{site}: no target labels, and the source model {source} was pretrained {how}: where the tissue "
            f"contrast changes, expect little of the gap to close (benchmarks: about 0 %); a source pretrained "
            f"with pretrain.augment: {ROBUST_AUGMENT} (the default) closed about half of it in 50 epochs and most "
            f"of it in 1200 (README, 'Contrast augmentation by default')")
