"""What a provisioned NVFlare deployment must allow before it runs tl_med's job.

NVFlare builds a job's components only from class paths in each participant's
``local/resources.json`` ``class_allow_list`` (``class_list_enforcement_mode: enforce``), and its
default list does not hold the PyTorch model persistor or MONAI's networks, so tl_med's job fails
with ``ComponentNotAuthorized`` until the site's admin allows them. :func:`allow_components` adds
the prefixes :data:`REQUIRED` to one participant's folder (server or client, as ``nvflare
provision`` or ``nvflare poc prepare`` wrote it), keeping everything already there::

    python -m tl_med.federated.provision prod_00/server prod_00/north prod_00/east
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tl_med.errors import InputError

__all__ = ["REQUIRED", "allow_components", "check_startup_kit", "main"]

REQUIRED = ("nvflare.app_opt.pt.", "monai.networks.nets.")  # the persistor and the network it builds


def check_startup_kit(folder: str | Path) -> Path:
    """``folder`` if it is an admin's startup kit (it holds ``startup/``); else one-line :class:`InputError`."""
    if not (Path(folder) / "startup").is_dir():
        raise InputError(f"NVFlare startup kit {folder} has no startup/ folder: give the admin's kit folder that "
                         "`nvflare provision` wrote (e.g. prod_00/admin@hospital.org)")
    return Path(folder)


def allow_components(participant: Path) -> Path:
    """Add :data:`REQUIRED` to ``participant/local/resources.json`` (created from NVFlare's
    ``resources.json.default`` when absent); returns the file written."""
    local = Path(participant) / "local"
    target = local / "resources.json"
    source = target if target.is_file() else local / "resources.json.default"
    if not source.is_file():
        raise InputError(f"{participant}: no local/resources.json(.default); give a participant folder that "
                         "`nvflare provision` wrote (its server or a client)")
    try:
        doc = json.loads(source.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{source}: not JSON ({exc.msg}, line {exc.lineno})") from None
    allowed = doc.setdefault("class_allow_list", [])
    allowed += [p for p in REQUIRED if p not in allowed and "*" not in allowed]
    target.write_text(json.dumps(doc, indent=2) + "\n")
    return target


def main(argv: list[str] | None = None) -> None:
    folders = sys.argv[1:] if argv is None else argv
    if not folders:
        sys.exit("usage: python -m tl_med.federated.provision PARTICIPANT_FOLDER...")
    try:
        for folder in folders:
            print(f"{allow_components(Path(folder))}: allows {', '.join(REQUIRED)}")
    except InputError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
