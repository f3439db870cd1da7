"""The append-only alias audit log: one row per alias set/delete, in a table of the auth database.

Rows are only ever inserted; triggers (SQLite and PostgreSQL) abort any UPDATE or DELETE, so neither
an API user (the server exposes no write endpoint) nor a bug in the server can rewrite history. An
operator with database rights can still drop the triggers: keep the database itself access-controlled.

Example:
    >>> log = AuditLog("sqlite://")
    >>> log.append(AliasEvent(at="2026-12-01T10:00:00.000000Z", username="dr_chen", model="m",
    ...                       alias="champion", action="set", version="2", previous_version="1"))
    >>> [(e.username, e.version, e.previous_version) for e in log.events(model="m")]
    [('dr_chen', '2', '1')]
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

import sqlalchemy as sa
from sqlalchemy.pool import StaticPool

__all__ = ["AliasEvent", "AuditLog", "TABLE", "utc_now"]

TABLE = "tlmed_alias_audit"

_metadata = sa.MetaData()
_table = sa.Table(
    TABLE, _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.String(32), nullable=False),
    sa.Column("username", sa.String(255), nullable=False),
    sa.Column("model", sa.String(256), nullable=False, index=True),
    sa.Column("alias", sa.String(256), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("version", sa.String(32), nullable=True),
    sa.Column("previous_version", sa.String(32), nullable=True),
    sa.Column("outcome", sa.String(16), nullable=False, server_default="ok"),
)

_SQLITE_TRIGGERS = [
    f"CREATE TRIGGER IF NOT EXISTS {TABLE}_no_{op.lower()} BEFORE {op} ON {TABLE} "
    f"BEGIN SELECT RAISE(ABORT, '{TABLE} is append-only'); END"
    for op in ("UPDATE", "DELETE")
]
_POSTGRES_TRIGGERS = [
    f"CREATE OR REPLACE FUNCTION {TABLE}_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
    f"BEGIN RAISE EXCEPTION '{TABLE} is append-only'; END $$",
    f"CREATE OR REPLACE TRIGGER {TABLE}_append_only BEFORE UPDATE OR DELETE ON {TABLE} "
    f"FOR EACH ROW EXECUTE FUNCTION {TABLE}_append_only()",
]


def utc_now() -> str:
    """``2026-12-01T10:00:00.123456Z`` (sorts as text)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class AliasEvent:
    """One alias change (or refused attempt): ``action`` is set, delete, delete-version or delete-model."""

    at: str
    username: str
    model: str
    alias: str
    action: str
    version: str | None = None
    previous_version: str | None = None
    outcome: str = "ok"  # or "denied"

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


class AuditLog:
    """Insert-and-read access to the audit table at ``database_uri`` (created on first use)."""

    def __init__(self, database_uri: str) -> None:
        kwargs = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}} \
            if database_uri in ("sqlite://", "sqlite:///:memory:") else {}
        self.engine = sa.create_engine(database_uri, **kwargs)
        self._created = False

    def create(self) -> None:
        """Create the table and its append-only triggers (idempotent; safe for concurrent workers)."""
        if self._created:
            return
        triggers = _POSTGRES_TRIGGERS if self.engine.dialect.name == "postgresql" else _SQLITE_TRIGGERS
        for attempt in range(3):  # several server workers may race on the first start
            try:
                with self.engine.begin() as conn:
                    _metadata.create_all(conn)
                    if self.engine.dialect.name in ("postgresql", "sqlite"):
                        for statement in triggers:
                            conn.exec_driver_sql(statement)
                break
            except sa.exc.SQLAlchemyError:
                if attempt == 2:
                    raise
        self._created = True

    def append(self, event: AliasEvent) -> None:
        self.create()
        with self.engine.begin() as conn:
            conn.execute(_table.insert().values(**event.as_dict()))

    def events(self, *, model: str | None = None, alias: str | None = None,
               limit: int = 1000) -> list[AliasEvent]:
        """The newest ``limit`` events, oldest first, optionally of one model and/or alias."""
        self.create()
        query = sa.select(_table).order_by(_table.c.id.desc())
        if model is not None:
            query = query.where(_table.c.model == model)
        if alias is not None:
            query = query.where(_table.c.alias == alias)
        with self.engine.connect() as conn:
            rows = conn.execute(query.limit(max(1, min(limit, 10000)))).mappings().all()
        return [AliasEvent(**{k: v for k, v in row.items() if k != "id"}) for row in reversed(rows)]
