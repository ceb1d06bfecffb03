"""Fast and slow charging piles: part of a lot's static data, checked against its EV spaces, and sent to the
city platform with the rest of the lot's static data."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc import aio
from v2x.parking.v1 import parking_pb2 as pb

from services.common.runtime import Resources
from tests.conftest import Keys
from tests.parking.helpers import lot, outbox_payloads
from tests.parking.test_bad_inputs import nothing_written

if TYPE_CHECKING:
    # The async flavour of the stub exists only in the generated .pyi.
    from v2x.parking.v1.parking_pb2_grpc import ParkingServiceAsyncStub as Stub


def piled(lot_id: str, fast: int, slow: int, *, ev: int = 10) -> pb.Lot:
    out = lot(lot_id, ev=ev)
    out.fast_charging_piles, out.slow_charging_piles = fast, slow
    return out




async def test_registered_piles_are_shown_and_sent(stub: Stub, keys: Keys, unique: str,
                                                   resources: Resources) -> None:
    lot_id = f"P-{unique}"
    made = await stub.RegisterLot(pb.RegisterLotRequest(lot=piled(lot_id, 2, 6)), metadata=keys.md(keys.admin))
    assert (made.fast_charging_piles, made.slow_charging_piles) == (2, 6)
    view = await stub.GetLot(pb.GetLotRequest(lot_id=lot_id), metadata=keys.md(keys.driver))
    assert (view.lot.fast_charging_piles, view.lot.slow_charging_piles) == (2, 6)
    [payload] = await outbox_payloads(resources.engine, lot_id, "lot_static")
    assert (payload["fast_charging_piles"], payload["slow_charging_piles"]) == (2, 6)


async def test_an_update_changes_the_piles(stub: Stub, keys: Keys, unique: str, resources: Resources) -> None:
    lot_id = f"P-{unique}"
    await stub.RegisterLot(pb.RegisterLotRequest(lot=piled(lot_id, 2, 6)), metadata=keys.md(keys.admin))
    updated = await stub.UpdateLot(pb.UpdateLotRequest(lot=piled(lot_id, 4, 8, ev=12)), metadata=keys.md(keys.op_a))
    assert (updated.fast_charging_piles, updated.slow_charging_piles) == (4, 8)
    view = await stub.GetLot(pb.GetLotRequest(lot_id=lot_id), metadata=keys.md(keys.op_a))
    assert (view.lot.fast_charging_piles, view.lot.slow_charging_piles) == (4, 8)
    assert [(p["fast_charging_piles"], p["slow_charging_piles"])
            for p in await outbox_payloads(resources.engine, lot_id, "lot_static")] == [(2, 6), (4, 8)]


async def test_a_lot_without_piles_reads_zero(stub: Stub, keys: Keys, unique: str) -> None:
    made = await stub.RegisterLot(pb.RegisterLotRequest(lot=lot(f"P-{unique}")), metadata=keys.md(keys.admin))
    assert (made.fast_charging_piles, made.slow_charging_piles) == (0, 0)


@pytest.mark.parametrize(("fast", "slow", "ev", "field", "says"), [
    (-1, 0, 10, "lot.fast_charging_piles", "must be between 0 and 100000, not -1"),
    (0, -3, 10, "lot.slow_charging_piles", "must be between 0 and 100000, not -3"),
    (4, 7, 10, "lot.slow_charging_piles", "4 fast + 7 slow charging piles exceed the 10 EV spaces"),
    (11, 0, 10, "lot.fast_charging_piles", "exceed the 10 EV spaces"),
    (0, 1, 0, "lot.slow_charging_piles", "exceed the 0 EV spaces"),
], ids=["negative-fast", "negative-slow", "more-than-ev", "fast-alone-more-than-ev", "no-ev-spaces"])
async def test_bad_pile_counts_are_invalid_and_name_the_field(fast: int, slow: int, ev: int, field: str, says: str,
                                                              stub: Stub, keys: Keys, unique: str,
                                                              resources: Resources) -> None:
    lot_id = f"P-{unique}"
    await stub.RegisterLot(pb.RegisterLotRequest(lot=lot(lot_id)), metadata=keys.md(keys.admin))
    calls: list[Callable[[], Awaitable[pb.Lot]]] = [
        lambda: stub.RegisterLot(pb.RegisterLotRequest(lot=piled(f"Q-{unique}", fast, slow, ev=ev)),
                                 metadata=keys.md(keys.admin)),
        lambda: stub.UpdateLot(pb.UpdateLotRequest(lot=piled(lot_id, fast, slow, ev=ev)),
                               metadata=keys.md(keys.op_a))]
    for call in calls:
        async with nothing_written(resources):
            with pytest.raises(aio.AioRpcError) as err:
                await call()
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"{field}: " in (err.value.details() or "") and says in (err.value.details() or "")
