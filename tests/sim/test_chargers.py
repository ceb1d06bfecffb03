"""The simulator's kerbside chargers against the real charging service and its OCPP gateway (in this process, port 0):
registered as an administrator does, connected over WebSocket with Basic auth (one 1.6J, one 2.0.1 charge point),
stepped through an hour of the simulator's clock in seconds, each cut off once and reconnecting. What the service
says (WatchStation, GetStation) must follow what the chargers truly did."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
from v2x.charging.v1 import charging_pb2 as pb

from roadside_sim.chargers import Chargers, district_chargers, status_name
from roadside_sim.network import District
from roadside_sim.score import charger_scores
from services.common.runtime import Resources
from tests.charging.conftest import start_harness, stop_harness
from tests.conftest import Keys
from tests.waiting import assert_eventually

STEP_S = 5.0  # simulated seconds per step


async def _watch(h_stub: object, station_id: str, key: str, seen: dict[str, set[str]], ready: asyncio.Event) -> None:
    call = h_stub.WatchStation(pb.WatchStationRequest(station_id=station_id),  # type: ignore[attr-defined]
                               metadata=(("authorization", f"Bearer {key}"),))
    async for update in call:
        if update.reason == pb.StationUpdate.REASON_SNAPSHOT:
            ready.set()
        if update.HasField("connector"):
            seen[update.connector.id].add(status_name(update.connector.state.status))


@pytest.mark.slow  # an hour of simulated charging in 360 steps: ~9 s
async def test_simulated_chargers_drive_the_service_over_ocpp_and_come_back_after_a_drop(
        resources: Resources, keys: Keys, unique: str, tmp_path: Path) -> None:
    h = await start_harness(resources, lambda: datetime.now(UTC), ocpp_heartbeat_s=5)
    fleet: Chargers | None = None
    watchers: list[asyncio.Task[None]] = []
    try:
        specs = district_chargers(District(), 2, prefix=f"T{unique}")
        assert [s.version for s in specs] == ["1.6", "2.0.1"]
        seen: dict[str, set[str]] = defaultdict(set)
        fleet = await Chargers.start(h.stub, keys.admin, specs, tmp_path, seed=5, drops_per_hour=0.0)
        ready = [asyncio.Event() for _ in specs]
        watchers = [asyncio.create_task(_watch(h.stub, s.station_id, keys.admin, seen, r))
                    for s, r in zip(specs, ready, strict=True)]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 20)
        samples: list[tuple[datetime, str, str]] = []
        sim_t = 17 * 3600.0  # the evening rush: about 4 arrivals an hour at a free connector
        fleet.step(sim_t, datetime.now(UTC))
        await assert_eventually(lambda: all(p.online for p in fleet.points), "both charge points booted")
        for i in range(int(3600 / STEP_S)):
            sim_t += STEP_S
            fleet.step(sim_t, datetime.now(UTC))
            if i == 300:  # cut both connections off (no close handshake); what happens meanwhile is queued
                for p in fleet.points:
                    p.down_until = datetime.now(UTC)
                    p.wake.set()
            await asyncio.sleep(0.01)
        await assert_eventually(lambda: all(p.online and not p.outbox for p in fleet.points),
                                "every queued message sent", within_s=60)

        async def agrees() -> bool:
            samples.clear()
            for s in specs:
                st = await h.stub.GetStation(pb.GetStationRequest(station_id=s.station_id),
                                             metadata=keys.md(keys.admin))
                now = datetime.now(UTC)
                samples.extend((now, c.id, status_name(c.state.status)) for e in st.evses for c in e.connectors)
            return all(fleet.truth.state_at(cid, now) is not None
                       and status_name(fleet.truth.state_at(cid, now)) == got  # type: ignore[arg-type]
                       for now, cid, got in samples)

        await assert_eventually(agrees, "GetStation agrees with the chargers' true states", within_s=20)
        scores = charger_scores(fleet.truth, samples, lag_s=0.0)
        assert scores["accuracy"] == 1.0 and scores["samples"] == 6, scores
    finally:
        for w in watchers:
            w.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        if fleet is not None:
            await fleet.stop(1.0)
        await stop_harness(h)

    summary = fleet.summary()
    assert summary["calls_refused"] == 0 and summary["connection_failures"] == 0, summary
    assert summary["drops"] == 2 and summary["connects"] == 4, summary  # one drop and one reconnect each
    assert summary["sessions"] >= 6, summary
    # Every connector went through sessions as the gateway maps each protocol's messages.
    one6 = {c for s in specs if s.version == "1.6" for c in (s.connector_id(n) for n in range(1, 4))}
    seen16 = set().union(*(seen[c] for c in one6))
    seen201 = set().union(*(v for c, v in seen.items() if c not in one6))
    assert {"PREPARING", "CHARGING", "FINISHING", "AVAILABLE"} <= seen16, seen16
    assert {"OCCUPIED", "CHARGING", "FINISHING", "AVAILABLE"} <= seen201, seen201
    assert (tmp_path / "chargers.jsonl").stat().st_size > 0
