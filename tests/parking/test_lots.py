"""Lots: registration, updates, reads, and who may do them."""

from __future__ import annotations

import grpc
import pytest
from grpc import aio
from v2x.common.v1 import common_pb2 as cpb
from v2x.parking.v1 import parking_pb2 as pb

from tests.conftest import Keys
from tests.parking.conftest import Stub
from tests.parking.helpers import lot


async def test_admin_registers_and_anyone_reads_a_lot(stub: Stub, keys: Keys, unique: str) -> None:
    created = await stub.RegisterLot(pb.RegisterLotRequest(lot=lot(f"L-{unique}")), metadata=keys.md(keys.admin))
    assert created.version == 1
    assert created.capacity.general == 100
    view = await stub.GetLot(pb.GetLotRequest(lot_id=f"L-{unique}"), metadata=keys.md(keys.driver))
    assert view.lot.name == f"Lot L-{unique}"
    assert view.lot.location.lat == pytest.approx(31.40)
    assert view.availability.status == pb.SITE_STATUS_UNKNOWN  # no reading yet
    assert not view.availability.HasField("total_free")


async def test_registering_an_existing_id_is_already_exists(stub: Stub, keys: Keys,
                                                              unique: str) -> None:
    await stub.RegisterLot(pb.RegisterLotRequest(lot=lot(f"L-{unique}")), metadata=keys.md(keys.admin))
    with pytest.raises(aio.AioRpcError) as err:
        await stub.RegisterLot(pb.RegisterLotRequest(lot=lot(f"L-{unique}")), metadata=keys.md(keys.admin))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_operator_updates_own_lot_with_version_check(stub: Stub, keys: Keys,
                                                           unique: str) -> None:
    await stub.RegisterLot(pb.RegisterLotRequest(lot=lot(f"L-{unique}")), metadata=keys.md(keys.admin))
    changed = lot(f"L-{unique}", general=120)
    updated = await stub.UpdateLot(pb.UpdateLotRequest(lot=changed, expected_version=1), metadata=keys.md(keys.op_a))
    assert updated.version == 2 and updated.capacity.general == 120
    with pytest.raises(aio.AioRpcError) as err:
        await stub.UpdateLot(pb.UpdateLotRequest(lot=changed, expected_version=1), metadata=keys.md(keys.op_a))
    assert err.value.code() == grpc.StatusCode.ABORTED


async def test_other_operator_cannot_update_or_steal_a_lot(stub: Stub, keys: Keys,
                                                           unique: str) -> None:
    await stub.RegisterLot(pb.RegisterLotRequest(lot=lot(f"L-{unique}")), metadata=keys.md(keys.admin))
    with pytest.raises(aio.AioRpcError) as err:
        await stub.UpdateLot(pb.UpdateLotRequest(lot=lot(f"L-{unique}", general=1)), metadata=keys.md(keys.op_b))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(aio.AioRpcError) as err:
        await stub.UpdateLot(pb.UpdateLotRequest(lot=lot(f"L-{unique}", operator="OPB")), metadata=keys.md(keys.op_a))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    view = await stub.GetLot(pb.GetLotRequest(lot_id=f"L-{unique}"), metadata=keys.md(keys.admin))
    assert view.lot.version == 1 and view.lot.operator_id == "OPA"


async def test_operator_lists_only_its_own_lots(stub: Stub, keys: Keys, unique: str) -> None:
    await stub.RegisterLot(pb.RegisterLotRequest(lot=lot(f"LA-{unique}")), metadata=keys.md(keys.admin))
    await stub.RegisterLot(pb.RegisterLotRequest(lot=lot(f"LB-{unique}", operator="OPB")),
                           metadata=keys.md(keys.admin))
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListLots(pb.ListLotsRequest(page=cpb.PageRequest(page_size=3, page_token=token)),
                                   metadata=keys.md(keys.op_b))
        seen += [v.lot.id for v in page.lots]
        token = page.page.next_page_token
        if not token:
            break
    assert f"LB-{unique}" in seen and f"LA-{unique}" not in seen
    assert all(v.startswith(("LB-", "L")) for v in seen)
    assert seen == sorted(seen)


async def test_on_street_segment_keeps_its_kerb_line(stub: Stub, keys: Keys, unique: str) -> None:
    seg = lot(f"R-{unique}", kind=pb.LOT_KIND_ON_STREET_SEGMENT, detection=pb.DETECTION_TYPE_SINGLE_SPACE)
    created = await stub.RegisterLot(pb.RegisterLotRequest(lot=seg), metadata=keys.md(keys.admin))
    assert len(created.line.points) == 2
    assert created.line.points[0].lon == pytest.approx(121.4897)
