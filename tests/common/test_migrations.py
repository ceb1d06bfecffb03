"""Every service's migrations go down and up again cleanly on real PostgreSQL + PostGIS."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from alembic import command

from services.common.db import alembic_config, head_revisions, migrate
from tests.conftest import fresh_database


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


async def test_downgrade_to_base_and_upgrade_again_restores_every_table() -> None:
    async for url in fresh_database(f"v2x_test_migrations_{uuid.uuid4().hex[:8]}"):
        migrated = await _tables(url)
        # One table at least per service branch, so a branch whose scripts did not run shows here.
        assert {"outbox", "parking_lots", "roadside_cameras", "idps_incidents", "charging_stations",
                "municipal_destinations"} <= migrated
        await asyncio.to_thread(command.downgrade, alembic_config(url), "base")
        assert await _tables(url) <= {"alembic_version", "spatial_ref_sys"}
        await migrate(url)
        assert await _tables(url) == migrated
        conn = await asyncpg.connect(url)
        try:
            versions = {r["version_num"] for r in await conn.fetch("SELECT version_num FROM alembic_version")}
        finally:
            await conn.close()
        assert versions == head_revisions()
