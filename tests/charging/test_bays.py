"""EV bay checks: a connector linked to a parking spot is checked against the spot's state (the
parking service's own, pushed through its gRPC API). The check runs with an injected clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc import aio
from v2x.charging.v1 import charging_pb2 as pb
from v2x.parking.v1 import parking_pb2 as ppb
from v2x.parking.v1.parking_pb2_grpc import ParkingServiceStub

if TYPE_CHECKING:
    from v2x.parking.v1.parking_pb2_grpc import ParkingServiceAsyncStub as ParkingStub
else:
    ParkingStub = ParkingServiceStub

from tests.charging.conftest import Harness, NewStation
from tests.charging.helpers import AVAILABLE, CHARGING, report
from tests.conftest import Keys
from tests.parking.helpers import lot
from tests.parking.helpers import report as spot_report

NON_CHARGING = pb.BAY_FLAG_KIND_NON_CHARGING_VEHICLE
FAULT = pb.BAY_FLAG_KIND_CHARGING_WHILE_SPOT_FREE
OCCUPIED, FREE = ppb.SPOT_STATUS_OCCUPIED, ppb.SPOT_STATUS_FREE


@dataclass
class Bays:
    """A parking lot with EV spots EV1 and EV2 and a station whose connectors C1, C2 serve them."""

    parking: ParkingStub
    lot_id: str
    station: pb.Station
    t0: datetime
    seq: int = 0

    def connector(self, n: int) -> str:
        return f"{self.station.id}-C{n}"

    async def spots(self, keys: Keys, states: dict[str, int], at: datetime | None = None) -> None:
        self.seq += 1
        await self.parking.PushOccupancy(spot_report(self.lot_id, self.seq, at=at or self.t0, spots=states),
                                         metadata=keys.md(keys.op_a))


@pytest.fixture
async def bays(charging: Harness, parking_channel: aio.Channel, keys: Keys, unique: str,
               new_station: NewStation) -> Bays:
    parking: ParkingStub = ParkingServiceStub(parking_channel)
    lot_id = f"EVLOT-{unique}"
    await parking.RegisterLot(ppb.RegisterLotRequest(lot=lot(lot_id, general=2, ev=2, disabled=0, ttl_s=3600,
                                                             detection=ppb.DETECTION_TYPE_SINGLE_SPACE)),
                              metadata=keys.md(keys.admin))
    await parking.UpsertSpots(ppb.UpsertSpotsRequest(lot_id=lot_id, spots=[
        ppb.Spot(id="EV1", space_class=ppb.SPACE_CLASS_EV), ppb.Spot(id="EV2", space_class=ppb.SPACE_CLASS_EV)]),
        metadata=keys.md(keys.op_a))
    st = await new_station(lot=lot_id, plugs=[(1, 120.0), (1, 120.0)], spots=["EV1", "EV2"])
    return Bays(parking, lot_id, st, datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1))


async def _push(h: Harness, keys: Keys, connector_id: str, status: int, at: datetime) -> None:
    await h.stub.ReportStatus(report(connector_id, status, at=at, ttl_s=7200), metadata=keys.md(keys.op_a))


async def _flags(h: Harness, keys: Keys, b: Bays, key: str | None = None, **kw: object) -> pb.ListBayFlagsResponse:
    return await h.stub.ListBayFlags(pb.ListBayFlagsRequest(parking_lot_id=b.lot_id, **kw),  # type: ignore[arg-type]
                                     metadata=keys.md(key or keys.op_a))


async def test_a_bay_occupied_without_charging_for_15_minutes_is_flagged(charging: Harness, keys: Keys,
                                                                         bays: Bays) -> None:
    await bays.spots(keys, {"EV1": OCCUPIED})
    await _push(charging, keys, bays.connector(1), AVAILABLE, bays.t0)
    await charging.app.bays.check(bays.t0 + timedelta(minutes=14))
    assert not (await _flags(charging, keys, bays)).flags
    await charging.app.bays.check(bays.t0 + timedelta(minutes=15, seconds=1))
    reply = await _flags(charging, keys, bays)
    [flag] = reply.flags
    assert flag.kind == NON_CHARGING and flag.parking_spot_id == "EV1" and flag.connector_id == bays.connector(1)
    assert flag.station_id == bays.station.id and flag.operator_id == "OPA"
    assert flag.since.ToDatetime(tzinfo=UTC) == bays.t0 and not flag.HasField("cleared_at")
    assert {(c.kind, c.open, c.total) for c in reply.counts} == {(NON_CHARGING, 1, 1), (FAULT, 0, 0)}


async def test_the_flag_clears_when_charging_starts_and_stays_counted(charging: Harness, keys: Keys,
                                                                      bays: Bays) -> None:
    before = bays.t0 - timedelta(minutes=20)
    await bays.spots(keys, {"EV1": OCCUPIED}, at=before)
    await _push(charging, keys, bays.connector(1), AVAILABLE, before)
    await charging.app.bays.check(before + timedelta(minutes=16))
    assert len((await _flags(charging, keys, bays, open_only=True)).flags) == 1
    await _push(charging, keys, bays.connector(1), CHARGING, bays.t0)
    await charging.app.bays.check(bays.t0 + timedelta(minutes=1))
    reply = await _flags(charging, keys, bays)
    [flag] = reply.flags
    assert flag.cleared_at.ToDatetime(tzinfo=UTC) == bays.t0 + timedelta(minutes=1)
    assert {(c.kind, c.open, c.total) for c in reply.counts} == {(NON_CHARGING, 0, 1), (FAULT, 0, 0)}
    assert not (await _flags(charging, keys, bays, open_only=True)).flags


async def test_a_bay_whose_other_connector_charges_is_not_flagged(charging: Harness, keys: Keys,
                                                                  new_station: NewStation, bays: Bays) -> None:
    twin = await new_station(lot=bays.lot_id, plugs=[(1, 60.0), (1, 60.0)], spots=["EV1", "EV1"])
    await bays.spots(keys, {"EV1": OCCUPIED})
    await _push(charging, keys, bays.connector(1), AVAILABLE, bays.t0)
    await _push(charging, keys, f"{twin.id}-C1", AVAILABLE, bays.t0)
    await _push(charging, keys, f"{twin.id}-C2", CHARGING, bays.t0)
    await charging.app.bays.check(bays.t0 + timedelta(minutes=20))
    assert not (await _flags(charging, keys, bays)).flags


async def test_charging_while_the_spot_reads_free_is_a_data_fault(charging: Harness, keys: Keys, bays: Bays) -> None:
    await bays.spots(keys, {"EV2": FREE})
    await _push(charging, keys, bays.connector(2), CHARGING, bays.t0)
    await charging.app.bays.check(bays.t0 + timedelta(seconds=30))  # within the grace: feeds may lag
    assert not (await _flags(charging, keys, bays)).flags
    await charging.app.bays.check(bays.t0 + timedelta(seconds=61))
    reply = await _flags(charging, keys, bays, kinds=[FAULT])
    [flag] = reply.flags
    assert flag.kind == FAULT and flag.connector_id == bays.connector(2) and flag.parking_spot_id == "EV2"
    assert flag.connector_status == CHARGING
    assert [(c.kind, c.open, c.total) for c in reply.counts] == [(FAULT, 1, 1)]


async def test_stale_readings_prove_nothing(charging: Harness, keys: Keys, bays: Bays) -> None:
    await bays.spots(keys, {"EV1": OCCUPIED, "EV2": FREE})
    await charging.stub.ReportStatus(report(bays.connector(1), AVAILABLE, at=bays.t0, ttl_s=600),
                                     metadata=keys.md(keys.op_a))
    await charging.stub.ReportStatus(report(bays.connector(2), CHARGING, at=bays.t0, ttl_s=60),
                                     metadata=keys.md(keys.op_a))
    await charging.app.bays.check(bays.t0 + timedelta(minutes=16))
    assert not (await _flags(charging, keys, bays)).flags


async def test_flags_are_the_owners_to_see(charging: Harness, keys: Keys, bays: Bays) -> None:
    await bays.spots(keys, {"EV1": OCCUPIED})
    await _push(charging, keys, bays.connector(1), AVAILABLE, bays.t0)
    await charging.app.bays.check(bays.t0 + timedelta(minutes=16))
    assert len((await _flags(charging, keys, bays, keys.police)).flags) == 1
    other = await _flags(charging, keys, bays, keys.op_b)
    assert not other.flags and all(c.total == 0 for c in other.counts)
    with pytest.raises(aio.AioRpcError) as err:
        await charging.stub.ListBayFlags(pb.ListBayFlagsRequest(station_id=bays.station.id),
                                         metadata=keys.md(keys.op_b))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(aio.AioRpcError) as err:
        await _flags(charging, keys, bays, keys.driver)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
