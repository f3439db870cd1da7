"""Who may move which alias: the ``[tlmed]`` section of MLflow's auth ini file.

Keys (all optional)::

    [tlmed]
    approvers = dr_chen, dr_osei        # accounts allowed to set/delete protected aliases
    protected_aliases = champion        # compared case-insensitively
    audit_database_uri = sqlite:////srv/mlflow/audit.db   # default: [mlflow] database_uri

The file is re-read when it changes, so an operator adds an approver without restarting the server.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ApprovalPolicy", "read_policy", "PolicySource", "DEFAULT_PROTECTED"]

DEFAULT_PROTECTED = ("champion",)


def _names(text: str) -> frozenset[str]:
    return frozenset(n.strip() for n in text.replace("\n", ",").split(",") if n.strip())


@dataclass(frozen=True)
class ApprovalPolicy:
    """The approvers, the protected aliases and where the audit log lives."""

    approvers: frozenset[str]
    protected_aliases: frozenset[str]
    audit_database_uri: str

    def is_protected(self, alias: str) -> bool:
        return alias.strip().casefold() in {a.casefold() for a in self.protected_aliases}

    def may_move(self, username: str, alias: str) -> bool:
        """Whether ``username`` may set or delete ``alias``.

        Example:
            >>> p = ApprovalPolicy(frozenset({"dr_chen"}), frozenset({"champion"}), "sqlite://")
            >>> p.may_move("pipeline", "challenger"), p.may_move("pipeline", "Champion"), p.may_move("dr_chen", "champion")
            (True, False, True)
        """
        return not self.is_protected(alias) or username in self.approvers


def read_policy(path: str | os.PathLike[str]) -> ApprovalPolicy:
    """The policy in the ini file at ``path`` (MLflow's own ``[mlflow]`` section supplies the default DB)."""
    parser = configparser.ConfigParser()
    parser.read(path)
    section = parser["tlmed"] if parser.has_section("tlmed") else {}
    default_db = parser.get("mlflow", "database_uri", fallback="sqlite:///basic_auth.db")
    protected = _names(section.get("protected_aliases", "")) or frozenset(DEFAULT_PROTECTED)
    return ApprovalPolicy(approvers=_names(section.get("approvers", "")), protected_aliases=protected,
                          audit_database_uri=section.get("audit_database_uri", "").strip() or default_db)


class PolicySource:
    """The policy of one ini file, re-read when the file's modification time changes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._stamp: int | None = None
        self._policy: ApprovalPolicy | None = None

    def current(self) -> ApprovalPolicy:
        try:
            stamp = self.path.stat().st_mtime_ns
        except OSError:
            stamp = None
        if self._policy is None or stamp != self._stamp:
            self._policy, self._stamp = read_policy(self.path), stamp
        return self._policy
