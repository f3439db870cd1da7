"""``python -m tl_med.stack up|down|status [--workspace DIR] [--approver NAME ...]``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tl_med.errors import TlMedError
from tl_med.stack.control import down, status, up


def _workspace(arg: str | None) -> Path:
    return Path(arg or os.environ.get("TL_MED_HOME") or "tlmed-workspace").resolve()


def _print(rows) -> int:
    for r in rows:
        print(f"{r.name:15} {'healthy' if r.healthy else 'DOWN':8} pid {r.pid or '-':<8} {r.address}  (log {r.log})")
    return 0 if all(r.healthy for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tl_med.stack", description=__doc__)
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--workspace", "-w", help="workspace root (default: $TL_MED_HOME or ./tlmed-workspace)")
    parser.add_argument("--approver", action="append", default=[],
                        help="MLflow account allowed to move champion (written into the auth ini on first up)")
    parser.add_argument("--mlflow-workers", type=int, default=1)
    args = parser.parse_args(argv)
    ws = _workspace(args.workspace)
    try:
        if args.command == "up":
            code = _print(up(ws, approvers=args.approver, mlflow_workers=args.mlflow_workers))
            print(f"clients: source {ws / 'stack' / 'client.env'}; secrets in {ws / 'stack' / 'secrets'} (mode 0600)")
            return code
        if args.command == "down":
            stopped = down(ws)
            print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
            return 0
        return _print(status(ws))
    except TlMedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
