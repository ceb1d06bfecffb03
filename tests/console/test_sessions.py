"""Console sessions: in Redis (the default) every replica of the console knows every sign-in and every sign-out,
Redis holds neither a cookie nor a key, sessions expire, and a Redis that does not answer is a 503, not a sign-out."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from yarl import URL

from services.common.runtime import Resources
from services.console.app import bound_port, start_console
from services.console.sessions import (
    COOKIE,
    CSRF_HEADER,
    REDIS_PREFIX,
    MemorySessions,
    RedisSessions,
    SessionStore,
    redis_key,
)
from services.console.settings import ConsoleSettings
from tests.conftest import Keys
from tests.console.conftest import Console
from tests.console.helpers import http_client, http_sign_in


async def another_console(console: Console, redis: Redis) -> web.AppRunner:
    """A second replica: the same services, the given Redis for its sessions."""
    targets = {name: f"127.0.0.1:{s.server.port}" for name, s in console.services.items()}
    return await start_console(ConsoleSettings(port=0, targets=targets, session_ttl_s=600), "127.0.0.1",
                               sessions=RedisSessions(redis, 600))


@pytest.fixture
async def replica(console: Console, resources: Resources) -> AsyncIterator[str]:
    runner = await another_console(console, resources.redis)
    yield f"http://127.0.0.1:{bound_port(runner)}"
    await runner.cleanup()


def cookie_of(http: aiohttp.ClientSession, url: str) -> str:
    return http.cookie_jar.filter_cookies(URL(url))[COOKIE].value


async def test_a_sign_in_on_one_replica_holds_on_another_and_a_sign_out_there_ends_it_on_both(
        console: Console, replica: str, keys: Keys) -> None:
    async with http_client() as http:
        signed_in = await http_sign_in(http, console, keys.police)
        cookie = cookie_of(http, console.url)
        async with http.get(replica + "/api/v1/session") as r:
            assert (await r.json()) == signed_in
        async with http.get(replica + "/api/v1/incidents") as r:
            assert r.status == 200, await r.text()
        async with http.delete(replica + "/api/v1/session", headers={CSRF_HEADER: signed_in["csrf"]}) as r:
            assert r.status == 200, await r.text()
    # The old cookie, presented again to the replica that issued it: that session is gone there too.
    async with aiohttp.ClientSession(cookies={COOKIE: cookie}) as stale:
        async with stale.get(console.url + "/api/v1/session") as r:
            assert (await r.json()) == {"signed_in": False}
        async with stale.get(console.url + "/api/v1/incidents") as r:
            assert r.status == 403


async def test_redis_holds_neither_the_cookie_nor_the_key_and_an_entry_opens_only_under_its_own_name(
        resources: Resources, keys: Keys) -> None:
    store = RedisSessions(resources.redis, 600)
    session = await store.create(keys.police, "police", "", "k1")
    name = redis_key(session.id)
    raw = await resources.redis.get(name)
    assert raw is not None and name.startswith(REDIS_PREFIX) and session.id not in name
    for secret in (keys.police, keys.police.rsplit("_", 1)[-1], session.id, session.csrf):
        assert secret.encode() not in raw
    assert 590 <= await resources.redis.ttl(name) <= 600  # Redis forgets it with the cookie's Max-Age
    assert await store.get(session.id) == session
    # The entry copied under another session's name does not open with that session's id.
    other = await store.create(keys.driver, "driver", "", "k2")
    await resources.redis.set(redis_key(other.id), raw, ex=600)
    assert await store.get(other.id) is None
    assert await store.get(session.id) == session


@pytest.mark.parametrize("kind", ["redis", "memory"])
async def test_a_session_ends_when_it_expires_or_is_dropped(resources: Resources, kind: str) -> None:
    def store() -> SessionStore:
        return RedisSessions(resources.redis, 1) if kind == "redis" else MemorySessions(1)

    sessions = store()
    expiring = await sessions.create("v2x_a_b", "police", "", "k1")
    dropped = await sessions.create("v2x_c_d", "operator", "OPA", "k2")
    assert (await sessions.get(dropped.id)) == dropped and (await sessions.get("not-a-session")) is None
    await sessions.drop(dropped.id)
    assert await sessions.get(dropped.id) is None
    assert await sessions.get(expiring.id) == expiring
    await asyncio.sleep(1.1)
    assert await sessions.get(expiring.id) is None


async def test_a_redis_that_does_not_answer_is_a_503_not_a_sign_out(console: Console, keys: Keys) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = Redis(host="127.0.0.1", port=port, retry=Retry(NoBackoff(), 0), socket_connect_timeout=1)
    runner = await another_console(console, dead)
    url = f"http://127.0.0.1:{bound_port(runner)}"
    try:
        async with http_client() as http:
            await http_sign_in(http, console, keys.police)
            cookie = cookie_of(http, console.url)
        async with aiohttp.ClientSession(cookies={COOKIE: cookie}) as http:
            async with http.get(url + "/api/v1/incidents") as r:
                assert r.status == 503 and "session store does not answer" in (await r.json())["error"]
            async with http.post(url + "/api/v1/session", json={"key": keys.police}) as r:
                assert r.status == 503
            # What needs no session still works: the probes, the pages.
            async with http.get(url + "/healthz") as r:
                assert r.status == 200 and await r.text() == "ok" and r.headers["Cache-Control"] == "no-store"
            async with http.get(url + "/public") as r:
                assert r.status == 200
            # And the session itself was not touched: the replica whose Redis answers still knows it.
            async with http.get(console.url + "/api/v1/incidents") as r:
                assert r.status == 200, await r.text()
    finally:
        await runner.cleanup()
        await dead.aclose()
