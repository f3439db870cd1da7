"""External validators the tests run on what tl_med writes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

# dicom3tools' DICOM validator: on PATH (Debian's dicom3tools) or beside the interpreter (the pip package)
DCIODVFY = shutil.which("dciodvfy") or str(Path(sys.executable).parent / "dciodvfy")


def dciodvfy_errors(path: Path) -> list[str]:
    """The ``Error`` lines dciodvfy prints for ``path`` (warnings are not errors)."""
    done = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]
