"""API keys: printed once by the CLI, stored hashed, verified, revoked; schema check at start."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys

import pytest
from sqlalchemy import text

from services.common.apikeys import KeyVerifier, create_key, revoke_key
from services.common.db import create_engine, require_current_schema
from services.common.errors import FailedPrecondition, Unauthenticated
from services.common.principal import Role
from services.common.runtime import Resources


async def test_cli_prints_a_new_key_once_and_stores_only_its_hash(settings: object, resources: Resources) -> None:
    env = {**os.environ, "DATABASE_URL": resources.settings.database_url or ""}
    out = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "services.cli", "keys", "create", "--role",
                                                   "operator:ACME", "--label", "gate"],
                                  env=env, capture_output=True, text=True, check=True)
    key = out.stdout.split()[0]
    assert key.startswith("v2x_") and "operator:ACME" in out.stdout
    key_id, secret = key.split("_")[1:]
    async with resources.engine.connect() as conn:
        row = (await conn.execute(text("SELECT * FROM api_keys WHERE key_id = :k"), {"k": key_id})).one()
    assert bytes(row.secret_hash) == hashlib.sha256(secret.encode()).digest()
    assert secret not in str(tuple(row)) and row.role == "operator" and row.scope == "ACME"
    principal = await KeyVerifier(resources.engine, 0).verify(key)
    assert principal.role is Role.OPERATOR and principal.scope == "ACME"


async def test_cli_refuses_an_unknown_role(resources: Resources) -> None:
    env = {**os.environ, "DATABASE_URL": resources.settings.database_url or ""}
    out = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "services.cli", "keys", "create", "--role",
                                                   "mayor"], env=env, capture_output=True, text=True)
    assert out.returncode == 2 and "unknown role" in out.stderr


async def test_wrong_secret_and_revoked_keys_are_refused(resources: Resources) -> None:
    issued = await create_key(resources.engine, "police")
    verifier = KeyVerifier(resources.engine, 0)
    assert (await verifier.verify(issued.key)).role is Role.POLICE
    with pytest.raises(Unauthenticated):
        await verifier.verify(issued.key[:-2] + "xx")
    await revoke_key(resources.engine, issued.principal.key_id)
    with pytest.raises(Unauthenticated):
        await verifier.verify(issued.key)


async def test_service_refuses_to_start_on_an_unmigrated_database(database_url: str) -> None:
    import asyncpg

    base = database_url.rsplit("/", 1)[0].replace("postgresql+asyncpg", "postgresql")
    admin = await asyncpg.connect(base + "/postgres")
    await admin.execute("DROP DATABASE IF EXISTS v2x_unmigrated_probe")
    await admin.execute("CREATE DATABASE v2x_unmigrated_probe")
    engine = create_engine(base + "/v2x_unmigrated_probe", pool_size=1)
    try:
        with pytest.raises(FailedPrecondition, match="v2x migrate"):
            await require_current_schema(engine)
    finally:
        await engine.dispose()
        await admin.execute("DROP DATABASE v2x_unmigrated_probe WITH (FORCE)")
        await admin.close()
