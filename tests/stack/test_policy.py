"""The approval policy (the ``[tlmed]`` section of the auth ini) and the audit table, without a server."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

from tl_med.registry_auth.audit import AliasEvent, AuditLog
from tl_med.registry_auth.policy import PolicySource, read_policy


def test_policy_reads_approvers_and_defaults(tmp_path):
    ini = tmp_path / "auth.ini"
    ini.write_text("[mlflow]\ndatabase_uri = sqlite:///a.db\n\n[tlmed]\napprovers = dr_chen,\n  dr_osei\n")
    policy = read_policy(ini)
    assert policy.approvers == {"dr_chen", "dr_osei"} and policy.protected_aliases == {"champion"}
    assert policy.audit_database_uri == "sqlite:///a.db"
    assert policy.may_move("dr_osei", "champion") and policy.may_move("pipeline", "challenger")
    assert not policy.may_move("pipeline", " CHAMPION ") and not policy.may_move("admin", "champion")
    assert read_policy(tmp_path / "missing.ini").approvers == frozenset()  # nobody, not everybody


def test_policy_source_rereads_a_changed_file(tmp_path):
    ini = tmp_path / "auth.ini"
    ini.write_text("[tlmed]\napprovers = a\n")
    source = PolicySource(ini)
    assert source.current().approvers == {"a"}
    ini.write_text("[tlmed]\napprovers = a, b\nprotected_aliases = champion, production\n")
    os.utime(ini, ns=(1, 10**18))
    assert source.current().approvers == {"a", "b"} and not source.current().may_move("c", "production")


def test_audit_log_keeps_order_and_refuses_rewrites(tmp_path):
    log = AuditLog(f"sqlite:///{tmp_path / 'audit.db'}")
    for i in range(3):
        log.append(AliasEvent(at=f"2026-12-0{i + 1}T00:00:00.000000Z", username="u", model="m", alias="champion",
                              action="set", version=str(i + 1), previous_version=str(i) if i else None))
    assert [e.version for e in log.events(model="m")] == ["1", "2", "3"]
    assert [e.version for e in log.events(model="m", limit=2)] == ["2", "3"]  # the newest, oldest first
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), log.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM tlmed_alias_audit")
