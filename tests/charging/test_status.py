"""Operators push connector status (unary and streamed): ordering, ownership, outbox, live feed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc import aio
from sqlalchemy import text
from v2x.charging.v1 import charging_pb2 as pb

from services.common.runtime import Resources
from tests.charging.conftest import NewStation, Stub
from tests.charging.helpers import AVAILABLE, CHARGING, connector_state, report
from tests.conftest import Keys

S = pb.ConnectorStatus


async def _outbox(resources: Resources, connector_id: str) -> list[dict[str, Any]]:
    async with resources.engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT payload FROM outbox WHERE kind = 'charger_status' AND payload->>'connector_id' = :c ORDER BY id"),
            {"c": connector_id})).scalars().all()
    return [json.loads(r) if isinstance(r, str) else r for r in rows]


async def test_an_accepted_report_is_stored_and_sent_to_the_outbox(stub: Stub, keys: Keys, resources: Resources,
                                                                   new_station: NewStation) -> None:
    st = await new_station()
    cid = st.evses[0].connectors[0].id
    ack = await stub.ReportStatus(report(cid, CHARGING, report_id="r-1", seconds_ago=2), metadata=keys.md(keys.op_a))
    assert ack.result == pb.ACK_RESULT_ACCEPTED and ack.report_id == "r-1"
    assert ack.state.status == CHARGING and not ack.state.freshness.stale
    got = await stub.GetStation(pb.GetStationRequest(station_id=st.id), metadata=keys.md(keys.driver))
    state = connector_state(got, cid)
    assert state.status == CHARGING and state.source == pb.STATUS_SOURCE_OPERATOR
    assert state.status_since == state.freshness.observed_at
    [row] = await _outbox(resources, cid)
    assert row["status"] == "CONNECTOR_STATUS_CHARGING" and row["ocpi_status"] == "CHARGING"
    assert row["station_id"] == st.id and row["error_code"] == "CONNECTOR_ERROR_CODE_NO_ERROR"
    assert row["coordinate_system"] == "WGS-84" and row["standard"] == "CONNECTOR_STANDARD_GBT_DC"
    assert row["source"] == "STATUS_SOURCE_OPERATOR"


async def test_the_same_report_again_is_a_duplicate(stub: Stub, keys: Keys, resources: Resources,
                                                    new_station: NewStation) -> None:
    st = await new_station()
    cid = st.evses[0].connectors[0].id
    r = report(cid, AVAILABLE)
    await stub.ReportStatus(r, metadata=keys.md(keys.op_a))
    ack = await stub.ReportStatus(r, metadata=keys.md(keys.op_a))
    assert ack.result == pb.ACK_RESULT_DUPLICATE
    assert len(await _outbox(resources, cid)) == 1


async def test_a_report_observed_before_the_stored_one_is_stale(stub: Stub, keys: Keys,
                                                                new_station: NewStation) -> None:
    st = await new_station()
    cid = st.evses[0].connectors[0].id
    await stub.ReportStatus(report(cid, CHARGING, seconds_ago=5), metadata=keys.md(keys.op_a))
    ack = await stub.ReportStatus(report(cid, AVAILABLE, seconds_ago=10), metadata=keys.md(keys.op_a))
    assert ack.result == pb.ACK_RESULT_STALE and ack.state.status == CHARGING


async def test_a_newer_report_of_the_same_status_refreshes_without_an_outbox_row(
        stub: Stub, keys: Keys, resources: Resources, new_station: NewStation) -> None:
    st = await new_station()
    cid = st.evses[0].connectors[0].id
    first = await stub.ReportStatus(report(cid, AVAILABLE, seconds_ago=30), metadata=keys.md(keys.op_a))
    again = await stub.ReportStatus(report(cid, AVAILABLE), metadata=keys.md(keys.op_a))
    assert again.result == pb.ACK_RESULT_ACCEPTED
    assert again.state.status_since == first.state.status_since  # available since the first reading
    assert again.state.freshness.observed_at.seconds > first.state.freshness.observed_at.seconds
    assert len(await _outbox(resources, cid)) == 1


async def test_an_operator_may_not_report_for_another_operators_connector(
        stub: Stub, keys: Keys, resources: Resources, new_station: NewStation) -> None:
    st = await new_station(operator="OPA")
    cid = st.evses[0].connectors[0].id
    with pytest.raises(aio.AioRpcError) as err:
        await stub.ReportStatus(report(cid, AVAILABLE), metadata=keys.md(keys.op_b))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await _outbox(resources, cid) == []


async def test_drivers_may_not_report_status(stub: Stub, keys: Keys, new_station: NewStation) -> None:
    st = await new_station()
    with pytest.raises(aio.AioRpcError) as err:
        await stub.ReportStatus(report(st.evses[0].connectors[0].id, AVAILABLE), metadata=keys.md(keys.driver))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_stream_answers_every_report_in_order_and_goes_on_after_a_bad_one(
        stub: Stub, keys: Keys, new_station: NewStation, unique: str) -> None:
    st = await new_station(plugs=[(2, 60.0)] * 4)
    ids = [c.id for e in st.evses for c in e.connectors]
    reports = [report(cid, AVAILABLE, seconds_ago=20, report_id=f"a{i}") for i, cid in enumerate(ids)]
    reports.insert(2, report(f"NOPE-{unique}", AVAILABLE, report_id="bad-1"))
    reports.insert(3, report(ids[0], S.CONNECTOR_STATUS_UNKNOWN, report_id="bad-2"))
    reports += [report(cid, CHARGING, seconds_ago=10, report_id=f"b{i}") for i, cid in enumerate(ids)]

    async def feed() -> AsyncIterator[pb.StatusReport]:
        for r in reports:
            yield r

    acks = [a async for a in stub.StreamStatus(feed(), metadata=keys.md(keys.op_a))]
    assert [a.report_id for a in acks] == [r.report_id for r in reports]
    results = {a.report_id: a for a in acks}
    assert results["bad-1"].result == pb.ACK_RESULT_REJECTED
    assert results["bad-1"].error.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert results["bad-2"].result == pb.ACK_RESULT_REJECTED and "status" in results["bad-2"].error.message
    assert all(a.result == pb.ACK_RESULT_ACCEPTED for a in acks if not a.report_id.startswith("bad"))
    got = await stub.GetStation(pb.GetStationRequest(station_id=st.id), metadata=keys.md(keys.driver))
    assert all(connector_state(got, cid).status == CHARGING for cid in ids)


async def test_a_stream_commits_reports_in_batches(stub: Stub, keys: Keys, resources: Resources,
                                                   new_station: NewStation) -> None:
    st = await new_station(plugs=[(2, 60.0)] * 50)
    ids = [c.id for e in st.evses for c in e.connectors]
    statuses = [AVAILABLE, CHARGING, S.CONNECTOR_STATUS_FINISHING]

    async def feed() -> AsyncIterator[pb.StatusReport]:
        for k in range(6):
            for cid in ids:
                yield report(cid, statuses[k % 3], seconds_ago=60 - k)

    acks = [a async for a in stub.StreamStatus(feed(), metadata=keys.md(keys.op_a))]
    assert len(acks) == 300 and all(a.result == pb.ACK_RESULT_ACCEPTED for a in acks)
    async with resources.engine.connect() as conn:
        rows, txs = (await conn.execute(text(
            "SELECT count(*), count(DISTINCT txid) FROM outbox WHERE kind = 'charger_status' "
            "AND payload->>'station_id' = :s"), {"s": st.id})).one()
    assert rows == 300 and txs < 300 / 2


async def test_watchers_get_a_snapshot_then_each_change(stub: Stub, keys: Keys, new_station: NewStation) -> None:
    st = await new_station(plugs=[(2, 60.0)] * 2)
    cid = st.evses[1].connectors[0].id
    call = stub.WatchStation(pb.WatchStationRequest(station_id=st.id), metadata=keys.md(keys.driver))
    try:
        first = await asyncio.wait_for(call.read(), 5)
        assert isinstance(first, pb.StationUpdate)
        assert first.reason == pb.StationUpdate.REASON_SNAPSHOT and first.station.id == st.id
        await stub.ReportStatus(report(cid, CHARGING), metadata=keys.md(keys.op_a))
        change = await asyncio.wait_for(call.read(), 5)
        assert isinstance(change, pb.StationUpdate)
        assert change.reason == pb.StationUpdate.REASON_CONNECTOR_CHANGED
        assert change.evse_id == "E2" and change.connector.id == cid and change.connector.state.status == CHARGING
        await stub.UpdateStation(pb.UpdateStationRequest(station=first.station), metadata=keys.md(keys.op_a))
        restated = await asyncio.wait_for(call.read(), 5)
        assert isinstance(restated, pb.StationUpdate)
        assert restated.reason == pb.StationUpdate.REASON_STATION_CHANGED and restated.station.version == 2
    finally:
        call.cancel()


async def test_outbox_rows_pass_the_municipal_adapters_checks(stub: Stub, keys: Keys, resources: Resources,
                                                              new_station: NewStation) -> None:
    """The contract with the adapter that drains the outbox (services/municipal/checks.py)."""
    from datetime import UTC, datetime

    from services.municipal.checks import check
    from services.municipal.model import OutboxRecord

    st = await new_station()
    cid = st.evses[0].connectors[0].id
    await stub.ReportStatus(report(cid, S.CONNECTOR_STATUS_FAULTED, error=pb.CONNECTOR_ERROR_CODE_GROUND_FAILURE),
                            metadata=keys.md(keys.op_a))
    async with resources.engine.connect() as conn:
        row = (await conn.execute(text(
            "SELECT id, txid::text::bigint AS txid, created_at, kind, aggregate_id, payload FROM outbox "
            "WHERE kind = 'charger_status' AND payload->>'connector_id' = :c"), {"c": cid})).one()
    payload = json.loads(row.payload) if isinstance(row.payload, str) else row.payload
    record = OutboxRecord(row.id, row.txid, row.created_at, row.kind, row.aggregate_id, payload)
    assert check(record, datetime.now(UTC)).reasons == []
