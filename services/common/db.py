"""The database: one async engine per process, and migrations at start-up."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, event
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.common.config import normalise_database_url
from services.common.errors import FailedPrecondition

metadata = MetaData()
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


# A connection that sat in the pool longer than this is pinged before use (see _ping_idle_connections).
PING_IDLE_S = 1.0


def create_engine(url: str, *, pool_size: int = 10, application_name: str = "v2x") -> AsyncEngine:
    engine = create_async_engine(
        normalise_database_url(url),
        # Up to 2 x pool_size connections, as before, but all kept: "overflow" connections were closed as
        # soon as pool_size others sat idle, so a steady load above pool_size concurrent queries opened and
        # closed several connections a second (a backend fork, TLS probe and type introspection each).
        pool_size=2 * pool_size,
        max_overflow=0,
        connect_args={
            # Short OLTP queries only: JIT compilation would cost more than it saves.
            "server_settings": {"application_name": application_name, "jit": "off", "timezone": "UTC"},
            # Statements are prepared once per connection; keep them (asyncpg's default is 100).
            "statement_cache_size": 500,
        },
    )
    _ping_idle_connections(engine, PING_IDLE_S)
    return engine


def _ping_idle_connections(engine: AsyncEngine, idle_s: float) -> None:
    """`pool_pre_ping`, but only for connections idle longer than `idle_s`.

    SQLAlchemy's asyncpg driver pings inside a transaction (BEGIN, ping, ROLLBACK: three round trips),
    which on every checkout cost more than a one-query rpc itself. A connection in steady use is known
    good (and a failure in use invalidates the pool anyway); one that sat idle may have been cut by a
    database restart or the network, so it is pinged first, and a failed ping invalidates the pool and
    checks out a fresh connection, as pre-ping does."""

    @event.listens_for(engine.sync_engine, "checkin")
    def _checkin(dbapi_connection: Any, record: Any) -> None:
        record.info["v2x_idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.get("v2x_idle_since")
        if since is None or time.monotonic() - since <= idle_s:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise InvalidatePoolError(f"pooled connection failed its ping after {idle_s:g} s idle: {exc}") from exc


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", normalise_database_url(url).replace("%", "%%"))
    return cfg


def _upgrade(url: str) -> None:
    # Each service owns a branch of the history (branched off the foundation); upgrade them all.
    command.upgrade(alembic_config(url), "heads")


async def migrate(url: str) -> None:
    """Brings the schema to the newest revision (Alembic runs its own event loop in a thread)."""
    await asyncio.to_thread(_upgrade, url)


def head_revisions() -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config("postgresql://x/x")).get_heads())


async def require_current_schema(engine: AsyncEngine) -> None:
    """Fails fast when the database was not migrated to what this code expects."""

    def current(conn: Connection) -> set[str]:
        return set(MigrationContext.configure(conn).get_current_heads())

    async with engine.connect() as conn:
        revisions = await conn.run_sync(current)
    expected = head_revisions()
    if revisions != expected:
        have = ", ".join(sorted(revisions)) or "none"
        raise FailedPrecondition(
            f"database schema is at revision {have}, this code needs {', '.join(sorted(expected))}: "
            "run `v2x migrate`"
        )
