"""Clients that walk away: every streaming rpc of every service, each call cancelled by its client at a random
moment, against a whole `v2x run`. Every process comes out of it alive (the same process, never restarted) and
serving. Before the fix the first few hundred such calls killed four of the five services with SIGSEGV."""

from __future__ import annotations

import pytest

from load.walkaway import MOMENTS, Suite, Walker, prepare, serving
from tests.runner.conftest import RunningSuite

CALLS = 400


@pytest.mark.slow  # the whole `v2x run` and 400 calls
async def test_every_service_survives_clients_that_cancel_streams_at_random_moments(suite: RunningSuite) -> None:
    before = suite.processes()
    log_before = len(suite.output())
    keys, targets = suite.keys, suite.targets
    clients = Suite(targets, keys["admin"], keys["police"], keys["driver"], keys["operator:BSCT"])
    walker = Walker(clients, await prepare(clients))
    try:
        tally = await walker.run(CALLS, concurrency=16)
    finally:
        await walker.close()

    assert tally.total == CALLS
    rpcs = {name for name, _ in tally.calls}
    for rpc in ("idps.Subscribe", "parking.WatchAvailability", "charging.WatchStation", "roadside.StreamFrames",
                "parking.StreamOccupancy", "charging.StreamStatus"):
        assert rpc in rpcs
    assert {f"{s}.ServerReflectionInfo" for s in targets} <= rpcs
    assert {m for _, m in tally.calls} == set(MOMENTS), "every moment was tried"
    assert tally.codes["CANCELLED"] > CALLS // 2, tally.codes
    assert not tally.unexpected, tally.unexpected[:10]

    after = suite.processes()
    for name, process in after.items():
        assert process["pid"] == before[name]["pid"], f"{name} was restarted: {process['exits']}"
        assert process["crashes"] == before[name]["crashes"]
    assert await serving(targets) == {name: "SERVING" for name in targets}
    # The servers' side: nothing logged at WARNING or above (the suite logs at WARNING), no grpc internal error.
    logged = [line for line in suite.output()[log_before:].splitlines() if '"level": "' in line]
    assert not logged, "\n".join(logged[:5])  # whole lines: the traceback is in them
