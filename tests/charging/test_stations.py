"""Stations: registration, static updates that keep connector state, ownership, listing."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from grpc import aio
from sqlalchemy import text
from v2x.charging.v1 import charging_pb2 as pb
from v2x.common.v1 import common_pb2 as cpb

from services.common.runtime import Resources
from tests.charging.conftest import NewStation, Stub, start_harness, stop_harness
from tests.charging.helpers import AVAILABLE, CCS2, GBT_AC, GBT_DC, UNKNOWN, connector_state, report, station
from tests.conftest import Keys


async def test_registered_station_reads_back_with_unknown_connectors(stub: Stub, keys: Keys,
                                                                     new_station: NewStation) -> None:
    created = await new_station(plugs=[(GBT_DC, 120.0), (GBT_AC, 7.0)])
    got = await stub.GetStation(pb.GetStationRequest(station_id=created.id), metadata=keys.md(keys.driver))
    assert [e.id for e in got.evses] == ["E1", "E2"]
    assert [(c.standard, c.max_power_kw) for e in got.evses for c in e.connectors] == [(GBT_DC, 120.0), (GBT_AC, 7.0)]
    assert got.status_ttl_s == 300 and got.version == 1
    for e in got.evses:
        for c in e.connectors:
            assert c.state.status == UNKNOWN and c.state.freshness.stale
            assert not c.state.HasField("status_since")


async def test_a_connector_id_of_another_station_is_refused(stub: Stub, keys: Keys, new_station: NewStation,
                                                            unique: str) -> None:
    first = await new_station()
    clash = station(f"X-{unique}")
    clash.evses[0].connectors[0].id = first.evses[0].connectors[0].id
    with pytest.raises(aio.AioRpcError) as err:
        await stub.RegisterStation(pb.RegisterStationRequest(station=clash), metadata=keys.md(keys.admin))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert first.id in (err.value.details() or "")


async def _statics(resources: Resources, station_id: str) -> list[tuple[dict[str, Any], bool]]:
    """The station's charger_static outbox rows in order, each with whether it was written by the transaction that
    last wrote the station's row (its xmin: the 32-bit xid of the outbox row's 64-bit transaction id)."""
    async with resources.engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT o.payload, (o.txid::text::bigint % 4294967296) = s.xmin::text::bigint AS same_tx "
            "FROM outbox o JOIN charging_stations s ON s.id = o.aggregate_id "
            "WHERE o.kind = 'charger_static' AND o.aggregate_id = :id ORDER BY o.id"), {"id": station_id})).all()
    return [(json.loads(r.payload) if isinstance(r.payload, str) else r.payload, r.same_tx) for r in rows]


async def test_a_station_create_and_update_each_write_its_static_record_in_their_transaction(
        stub: Stub, keys: Keys, resources: Resources, new_station: NewStation) -> None:
    st = await new_station(plugs=[(GBT_DC, 120.0), (GBT_AC, 7.0)])
    ((created, same_tx),) = await _statics(resources, st.id)
    assert same_tx  # the station's row and its outbox row: one transaction
    assert (created["station_id"], created["operator_id"], created["version"]) == (st.id, "OPA", 1)
    assert created["coordinate_system"] == "WGS-84" and created["parking_lot_id"] is None
    assert [(c["evse_id"], c["connector_id"], c["standard"], c["max_power_kw"]) for c in created["connectors"]] == [
        ("E1", f"{st.id}-C1", "CONNECTOR_STANDARD_GBT_DC", 120.0),
        ("E2", f"{st.id}-C2", "CONNECTOR_STANDARD_GBT_AC", 7.0)]
    await stub.UpdateStation(pb.UpdateStationRequest(station=station(st.id, plugs=[(CCS2, 60.0)]), expected_version=1),
                             metadata=keys.md(keys.op_a))
    statics = await _statics(resources, st.id)
    assert [same_tx for _, same_tx in statics] == [False, True]  # the first is the create's, the station moved on
    updated = statics[1][0]
    assert updated["version"] == 2 and [c["standard"] for c in updated["connectors"]] == ["CONNECTOR_STANDARD_CCS2"]


async def test_a_refused_station_write_leaves_no_static_record(stub: Stub, keys: Keys, resources: Resources,
                                                              new_station: NewStation) -> None:
    st = await new_station()
    with pytest.raises(aio.AioRpcError):
        await stub.UpdateStation(pb.UpdateStationRequest(station=station(st.id), expected_version=7),
                                 metadata=keys.md(keys.op_a))
    with pytest.raises(aio.AioRpcError):
        await stub.RegisterStation(pb.RegisterStationRequest(station=station(st.id)), metadata=keys.md(keys.admin))
    assert [p["version"] for p, _ in await _statics(resources, st.id)] == [1]


async def test_update_keeps_the_state_of_connectors_that_remain(stub: Stub, keys: Keys,
                                                                new_station: NewStation) -> None:
    st = await new_station(plugs=[(GBT_DC, 120.0), (GBT_AC, 7.0)])
    kept = st.evses[0].connectors[0].id
    await stub.ReportStatus(report(kept, AVAILABLE), metadata=keys.md(keys.op_a))
    new = station(st.id, plugs=[(GBT_DC, 160.0), (CCS2, 60.0)])
    new.evses[1].connectors[0].id = f"{st.id}-NEW"
    updated = await stub.UpdateStation(pb.UpdateStationRequest(station=new, expected_version=1),
                                       metadata=keys.md(keys.op_a))
    assert updated.version == 2
    assert connector_state(updated, kept).status == AVAILABLE
    assert updated.evses[0].connectors[0].max_power_kw == 160.0
    assert connector_state(updated, f"{st.id}-NEW").status == UNKNOWN
    assert {c.id for e in updated.evses for c in e.connectors} == {kept, f"{st.id}-NEW"}


async def test_update_with_an_old_version_is_aborted(stub: Stub, keys: Keys, new_station: NewStation) -> None:
    st = await new_station()
    await stub.UpdateStation(pb.UpdateStationRequest(station=station(st.id), expected_version=1),
                             metadata=keys.md(keys.admin))
    with pytest.raises(aio.AioRpcError) as err:
        await stub.UpdateStation(pb.UpdateStationRequest(station=station(st.id), expected_version=1),
                                 metadata=keys.md(keys.admin))
    assert err.value.code() == grpc.StatusCode.ABORTED


async def test_an_operator_may_not_update_another_operators_station(stub: Stub, keys: Keys,
                                                                    new_station: NewStation) -> None:
    st = await new_station()
    with pytest.raises(aio.AioRpcError) as err:
        await stub.UpdateStation(pb.UpdateStationRequest(station=station(st.id)), metadata=keys.md(keys.op_b))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_an_operator_may_not_give_its_station_away(stub: Stub, keys: Keys, new_station: NewStation) -> None:
    st = await new_station()
    with pytest.raises(aio.AioRpcError) as err:
        await stub.UpdateStation(pb.UpdateStationRequest(station=station(st.id, "OPB")), metadata=keys.md(keys.op_a))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_operators_list_only_their_own_stations_in_pages(stub: Stub, keys: Keys,
                                                               new_station: NewStation) -> None:
    mine = [(await new_station(operator="OPB")).id for _ in range(3)]
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListStations(pb.ListStationsRequest(page=cpb.PageRequest(page_size=2, page_token=token)),
                                       metadata=keys.md(keys.op_b))
        assert all(s.operator_id == "OPB" for s in page.stations)
        seen += [s.id for s in page.stations]
        token = page.page.next_page_token
        if not token:
            break
    assert set(mine) <= set(seen)
    assert seen == sorted(seen)


async def test_drivers_do_not_see_charge_point_identities(stub: Stub, keys: Keys, new_station: NewStation,
                                                         unique: str) -> None:
    st = await new_station(charge_point=f"CP-{unique}")
    as_driver = await stub.GetStation(pb.GetStationRequest(station_id=st.id), metadata=keys.md(keys.driver))
    as_owner = await stub.GetStation(pb.GetStationRequest(station_id=st.id), metadata=keys.md(keys.op_a))
    assert as_driver.evses[0].charge_point_id == ""
    assert as_owner.evses[0].charge_point_id == f"CP-{unique}"


async def test_stations_registered_before_the_static_record_existed_get_theirs_when_the_service_starts(
        resources: Resources, new_station: NewStation) -> None:
    olds = [await new_station(plugs=[(GBT_DC, 60.0)]) for _ in range(3)]
    ids = [s.id for s in olds]
    async with resources.engine.begin() as conn:  # as migration 0302 leaves a station registered before it
        await conn.execute(text("DELETE FROM outbox WHERE kind = 'charger_static' AND aggregate_id = ANY(:ids)"),
                           {"ids": ids})
        await conn.execute(text("UPDATE charging_stations SET announced = false WHERE id = ANY(:ids)"), {"ids": ids})
    # Two replicas starting together: each station gets its record once.
    first, second = await asyncio.gather(start_harness(resources, lambda: datetime.now(UTC)),
                                         start_harness(resources, lambda: datetime.now(UTC)))
    try:
        for s in olds:
            ((record, _),) = await _statics(resources, s.id)
            assert (record["station_id"], record["version"]) == (s.id, 1)
            assert [c["standard"] for c in record["connectors"]] == ["CONNECTOR_STANDARD_GBT_DC"]
        third = await start_harness(resources, lambda: datetime.now(UTC))  # a restart writes nothing more
        await stop_harness(third)
        assert [len(await _statics(resources, i)) for i in ids] == [1, 1, 1]
    finally:
        await stop_harness(first)
        await stop_harness(second)
