"""The services' event loop: Python's own by default, uvloop on request; the tests run on the default."""

from __future__ import annotations

import asyncio
import concurrent.futures

import pytest
import uvloop

from services.common import eventloop
from services.common.config import ConfigError, Settings


async def test_the_tests_run_on_the_loop_the_services_run_on() -> None:
    assert Settings.from_env({}).event_loop == "asyncio"
    assert not isinstance(asyncio.get_running_loop(), uvloop.Loop)


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_run_takes_the_configured_kind() -> None:
    # In a thread of its own: pytest-asyncio may have a loop running in this one.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        on_uvloop = pool.submit(eventloop.run, _loop_type(), "uvloop").result()
        on_asyncio = pool.submit(eventloop.run, _loop_type(), "asyncio").result()
    assert issubclass(on_uvloop, uvloop.Loop)
    assert not issubclass(on_asyncio, uvloop.Loop)


def test_an_unknown_event_loop_is_refused_by_name() -> None:
    assert Settings.from_env({"V2X_EVENT_LOOP": "uvloop"}).event_loop == "uvloop"
    with pytest.raises(ConfigError, match="V2X_EVENT_LOOP"):
        Settings.from_env({"V2X_EVENT_LOOP": "trio"})
