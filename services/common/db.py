"""The database: one async engine per process, and migrations at start-up."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.common.config import normalise_database_url
from services.common.errors import FailedPrecondition

metadata = MetaData()
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def create_engine(url: str, *, pool_size: int = 10, application_name: str = "v2x") -> AsyncEngine:
    return create_async_engine(
        normalise_database_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={
            # Short OLTP queries only: JIT compilation would cost more than it saves.
            "server_settings": {"application_name": application_name, "jit": "off", "timezone": "UTC"},
            # Statements are prepared once per connection; keep them (asyncpg's default is 100).
            "statement_cache_size": 500,
        },
    )


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
