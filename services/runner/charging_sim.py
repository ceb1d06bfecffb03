"""Keeps the demo charging stations alive: operators' back ends pushing connector statuses through the real API.

Each round (every ~20 s), every operator streams over StreamStatus: a status step for a random share of
its connectors (vehicles arriving, charging, leaving; now and then a fault or a repair), the connectors
under EV bays following what the occupancy simulator last said about their spots (a vehicle that
parks mostly plugs in; a bay that empties frees its connector), and a re-send of every reading that has
used up part of its TTL, so no pushed reading expires while the demo runs.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from grpc import aio
from v2x.charging.v1 import charging_pb2 as pb
from v2x.charging.v1.charging_pb2_grpc import ChargingServiceStub
from v2x.common.v1 import common_pb2 as cpb
from v2x.parking.v1 import parking_pb2 as ppb

from services.common.timestamps import ts
from services.runner.demo_chargers import detail, first_status, stations

if TYPE_CHECKING:
    # The async flavour of the stub exists only in the generated .pyi.
    from v2x.charging.v1.charging_pb2_grpc import ChargingServiceAsyncStub as Stub
else:
    Stub = ChargingServiceStub

log = logging.getLogger("v2x.sim.charging")
S = pb.ConnectorStatus
# Statuses with a vehicle at the connector.
_WITH_VEHICLE = frozenset({S.CONNECTOR_STATUS_OCCUPIED, S.CONNECTOR_STATUS_PREPARING, S.CONNECTOR_STATUS_CHARGING,
                           S.CONNECTOR_STATUS_SUSPENDED_EV, S.CONNECTOR_STATUS_SUSPENDED_EVSE,
                           S.CONNECTOR_STATUS_FINISHING})
# One step of a connector's life (weights). About two thirds of the connectors read AVAILABLE.
_NEXT: Mapping[int, tuple[tuple[int, int], ...]] = {
    S.CONNECTOR_STATUS_AVAILABLE: ((S.CONNECTOR_STATUS_AVAILABLE, 170), (S.CONNECTOR_STATUS_PREPARING, 12),
                                   (S.CONNECTOR_STATUS_CHARGING, 12), (S.CONNECTOR_STATUS_RESERVED, 3),
                                   (S.CONNECTOR_STATUS_FAULTED, 1), (S.CONNECTOR_STATUS_UNAVAILABLE, 1)),
    S.CONNECTOR_STATUS_PREPARING: ((S.CONNECTOR_STATUS_CHARGING, 80), (S.CONNECTOR_STATUS_AVAILABLE, 20)),
    S.CONNECTOR_STATUS_CHARGING: ((S.CONNECTOR_STATUS_CHARGING, 55), (S.CONNECTOR_STATUS_SUSPENDED_EV, 10),
                                  (S.CONNECTOR_STATUS_FINISHING, 35)),
    S.CONNECTOR_STATUS_SUSPENDED_EV: ((S.CONNECTOR_STATUS_CHARGING, 50), (S.CONNECTOR_STATUS_FINISHING, 50)),
    S.CONNECTOR_STATUS_SUSPENDED_EVSE: ((S.CONNECTOR_STATUS_CHARGING, 60), (S.CONNECTOR_STATUS_FINISHING, 40)),
    S.CONNECTOR_STATUS_FINISHING: ((S.CONNECTOR_STATUS_AVAILABLE, 80), (S.CONNECTOR_STATUS_OCCUPIED, 20)),
    S.CONNECTOR_STATUS_OCCUPIED: ((S.CONNECTOR_STATUS_AVAILABLE, 60), (S.CONNECTOR_STATUS_OCCUPIED, 40)),
    S.CONNECTOR_STATUS_RESERVED: ((S.CONNECTOR_STATUS_PREPARING, 50), (S.CONNECTOR_STATUS_AVAILABLE, 50)),
    S.CONNECTOR_STATUS_FAULTED: ((S.CONNECTOR_STATUS_AVAILABLE, 30), (S.CONNECTOR_STATUS_FAULTED, 70)),
    S.CONNECTOR_STATUS_UNAVAILABLE: ((S.CONNECTOR_STATUS_AVAILABLE, 40), (S.CONNECTOR_STATUS_UNAVAILABLE, 60)),
}
# Spot states by lot and spot, as the occupancy simulator last pushed them.
SpotBoard = dict[str, dict[str, int]]


@dataclass
class SimConnector:
    id: str
    operator_id: str
    lot_id: str
    spot_id: str
    ttl_s: int
    status: int = S.CONNECTOR_STATUS_UNKNOWN
    error_code: int = pb.CONNECTOR_ERROR_CODE_NO_ERROR
    info: str = ""
    sent_at: datetime | None = None
    refresh_after_s: float = 0.0
    spot: int | None = None  # the bay's state when last looked at


def step(status: int, rng: random.Random) -> int:
    choices = _NEXT.get(status)
    if choices is None:  # UNKNOWN: no reading yet, or it expired
        return first_status(rng)[0]
    return rng.choices([s for s, _ in choices], [w for _, w in choices])[0]


def follow_spot(c: SimConnector, spot: int | None, rng: random.Random) -> int:
    """The status of a connector under an EV bay, given the bay's state."""
    previous, c.spot = c.spot, spot
    if spot == ppb.SPOT_STATUS_FREE and c.status in _WITH_VEHICLE:
        return S.CONNECTOR_STATUS_AVAILABLE  # the vehicle left
    if spot == ppb.SPOT_STATUS_OCCUPIED:
        if c.status == S.CONNECTOR_STATUS_AVAILABLE and previous != ppb.SPOT_STATUS_OCCUPIED:
            # A vehicle arrived: mostly it plugs in; now and then it only parks (a bay flag, later).
            return S.CONNECTOR_STATUS_CHARGING if rng.random() < 0.8 else S.CONNECTOR_STATUS_AVAILABLE
        if c.status in (S.CONNECTOR_STATUS_CHARGING, S.CONNECTOR_STATUS_SUSPENDED_EV) and rng.random() < 0.1:
            return S.CONNECTOR_STATUS_FINISHING
    if c.status == S.CONNECTOR_STATUS_UNKNOWN:
        return first_status(rng, spot)[0]
    return c.status


def _observed(state: pb.ConnectorState) -> datetime | None:
    f = state.freshness
    if state.status == S.CONNECTOR_STATUS_UNKNOWN or f.stale or not f.HasField("observed_at"):
        return None
    return f.observed_at.ToDatetime(tzinfo=UTC)


async def load(stub: Stub, operator: str, key: str, ids: frozenset[str],
               rng: random.Random) -> list[SimConnector]:
    """The operator's demo connectors with their current states, read through ListStations."""
    out: list[SimConnector] = []
    token = ""
    while True:
        reply = await stub.ListStations(
            pb.ListStationsRequest(page=cpb.PageRequest(page_size=500, page_token=token)),
            metadata=(("authorization", f"Bearer {key}"),))
        for st in reply.stations:
            if st.id not in ids:
                continue
            for e in st.evses:
                for c in e.connectors:
                    out.append(SimConnector(
                        c.id, operator, st.parking_lot_id, c.parking_spot_id, st.status_ttl_s, c.state.status,
                        c.state.error_code, c.state.info, _observed(c.state),
                        st.status_ttl_s * rng.uniform(0.25, 0.5)))
        token = reply.page.next_page_token
        if not token:
            return out


def plan(mine: list[SimConnector], spots: SpotBoard, share: float, rng: random.Random,
         now: datetime) -> list[tuple[SimConnector, int]]:
    """(connector, status to report) for this round: changes, and re-sends of ageing readings."""
    loose = [c for c in mine if not c.spot_id]
    chosen = {c.id for c in rng.sample(loose, min(len(loose), max(1, round(len(loose) * share))))}
    out: list[tuple[SimConnector, int]] = []
    for c in mine:
        if c.spot_id:
            new = follow_spot(c, spots.get(c.lot_id, {}).get(c.spot_id, c.spot), rng)
        elif c.id in chosen or c.status == S.CONNECTOR_STATUS_UNKNOWN:
            new = step(c.status, rng)
        else:
            new = c.status
        due = c.sent_at is None or (now - c.sent_at) >= timedelta(seconds=c.refresh_after_s)
        if new != c.status or due:
            out.append((c, new))
    return out


async def push(stub: Stub, key: str, planned: list[tuple[SimConnector, int]],
               rng: random.Random, now: datetime) -> int:
    """Streams the round's reports; returns how many were accepted (the rest are logged)."""
    observed = ts(now)
    by_id: dict[str, tuple[SimConnector, int, int, str]] = {}
    reports: list[pb.StatusReport] = []
    for c, status in planned:
        error_code, info = (c.error_code, c.info) if status == c.status else detail(status, rng)
        by_id[c.id] = (c, status, error_code, info)
        reports.append(pb.StatusReport(connector_id=c.id, status=status,  # type: ignore[arg-type]
                                       error_code=error_code, info=info,  # type: ignore[arg-type]
                                       observed_at=observed))

    async def feed() -> AsyncIterator[pb.StatusReport]:
        for r in reports:
            yield r

    accepted = 0
    call = stub.StreamStatus(feed(), metadata=(("authorization", f"Bearer {key}"),))
    async for ack in call:
        c, status, error_code, info = by_id[ack.connector_id]
        if ack.result in (pb.ACK_RESULT_ACCEPTED, pb.ACK_RESULT_DUPLICATE):
            c.status, c.error_code, c.info = status, error_code, info
            c.sent_at, c.refresh_after_s = now, c.ttl_s * rng.uniform(0.25, 0.5)
            accepted += 1
        else:
            log.warning("simulated charger status refused", extra={
                "connector": c.id, "result": pb.AckResult.Name(ack.result), "error": ack.error.message})
    return accepted


async def simulate(target: str, operator_keys: Mapping[str, str], period_s: float = 20.0, share: float = 0.2,
                   spots: SpotBoard | None = None) -> None:
    """Runs until cancelled. `spots` is the occupancy simulator's board (EV bays follow it when given)."""
    demo = stations()
    ids = frozenset(s.id for s in demo)
    operators = sorted({s.operator_id for s in demo} & set(operator_keys))
    board: SpotBoard = {} if spots is None else spots
    rng = random.Random()
    known: dict[str, list[SimConnector]] = {}
    async with aio.insecure_channel(target) as channel:
        stub: Stub = ChargingServiceStub(channel)
        while True:
            now = datetime.now(UTC)
            for operator in operators:
                key = operator_keys[operator]
                try:
                    if operator not in known:
                        known[operator] = await load(stub, operator, key, ids, rng)
                    planned = plan(known[operator], board, share, rng, now)
                    if planned:
                        await push(stub, key, planned, rng, now)
                except aio.AioRpcError as exc:
                    log.warning("simulated charger push failed", extra={
                        "operator": operator, "code": exc.code().name, "details": exc.details()})
            await asyncio.sleep(period_s)
