"""OCPP 1.6J: real charge points (the `ocpp` package's client over `websockets`) against the gateway."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest
from grpc import aio
from ocpp.exceptions import OCPPError, PropertyConstraintViolationError
from ocpp.v16 import call
from sqlalchemy import text
from v2x.charging.v1 import charging_pb2 as pb
from websockets.exceptions import ConnectionClosed, InvalidStatus

from services.common.runtime import Resources
from tests.charging.conftest import Harness, NewChargePoint, Registered
from tests.charging.helpers import connector_state, ocpp_client, ocpp_now, open_ws
from tests.conftest import Keys
from tests.waiting import assert_eventually


async def _status(h: Harness, keys: Keys, cp: Registered, n: int = 1) -> pb.ConnectorState:
    st = await h.stub.GetStation(pb.GetStationRequest(station_id=cp.station.id), metadata=keys.md(keys.driver))
    return connector_state(st, cp.connector(n))


def _notify(connector_id: int, status: str, error_code: str = "NoError", **kw: Any) -> Any:
    return call.StatusNotification(connector_id=connector_id, error_code=error_code, status=status,
                                   timestamp=ocpp_now(), **kw)


async def _outbox(resources: Resources, connector_id: str) -> list[dict[str, Any]]:
    async with resources.engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT payload FROM outbox WHERE kind = 'charger_status' AND payload->>'connector_id' = :c ORDER BY id"),
            {"c": connector_id})).scalars().all()
    return [json.loads(r) if isinstance(r, str) else r for r in rows]


async def test_boot_heartbeat_and_status_land_in_the_store(charging: Harness, keys: Keys,
                                                          new_charge_point: NewChargePoint) -> None:
    cp = await new_charge_point(plugs=[(1, 60.0), (1, 60.0)])
    async with ocpp_client(cp.url, cp.cp_id, cp.password) as client:
        boot = await client.call(call.BootNotification(charge_point_model="DC60", charge_point_vendor="Acme"))
        assert boot.status == "Accepted" and boot.interval == 60
        beat = await client.call(call.Heartbeat())
        assert beat.current_time.endswith("Z")
        await client.call(_notify(1, "Available"))
        await client.call(_notify(2, "Faulted", "GroundFailure", info="RCD tripped"))
        one, two = await _status(charging, keys, cp, 1), await _status(charging, keys, cp, 2)
        assert one.status == pb.CONNECTOR_STATUS_AVAILABLE and one.source == pb.STATUS_SOURCE_OCPP16
        assert not one.freshness.stale and one.freshness.ttl_s == 180  # 3 heartbeat intervals
        assert two.status == pb.CONNECTOR_STATUS_FAULTED
        assert two.error_code == pb.CONNECTOR_ERROR_CODE_GROUND_FAILURE and two.info == "RCD tripped"
        record = await charging.app.store.get_charge_point(cp.cp_id)
        assert record.connected and record.last_seen_at is not None

    async def disconnected() -> bool:
        return not (await charging.app.store.get_charge_point(cp.cp_id)).connected

    await assert_eventually(disconnected, "the charge point's row to say it is disconnected")


async def test_a_transaction_runs_from_start_to_stop(charging: Harness, keys: Keys, resources: Resources,
                                                     new_charge_point: NewChargePoint) -> None:
    cp = await new_charge_point()
    async with ocpp_client(cp.url, cp.cp_id, cp.password) as client:
        await client.call(call.BootNotification(charge_point_model="DC60", charge_point_vendor="Acme"))
        await client.call(_notify(1, "Preparing"))
        auth = await client.call(call.Authorize(id_tag="RFID-0042"))
        assert auth.id_tag_info["status"] == "Accepted"
        start = await client.call(call.StartTransaction(connector_id=1, id_tag="RFID-0042", meter_start=1000,
                                                        timestamp=ocpp_now()))
        assert start.transaction_id > 0 and start.id_tag_info["status"] == "Accepted"
        await client.call(_notify(1, "Charging"))
        assert (await _status(charging, keys, cp)).status == pb.CONNECTOR_STATUS_CHARGING
        await client.call(call.MeterValues(connector_id=1, transaction_id=start.transaction_id, meter_value=[{
            "timestamp": ocpp_now(), "sampled_value": [
                {"value": "1.5", "measurand": "Energy.Active.Import.Register", "unit": "kWh"},
                {"value": "7200", "measurand": "Power.Active.Import", "unit": "W"},
                {"value": "64", "measurand": "SoC", "unit": "Percent"}]}]))
        stop = await client.call(call.StopTransaction(meter_stop=2500, timestamp=ocpp_now(),
                                                      transaction_id=start.transaction_id, reason="EVDisconnected",
                                                      id_tag="RFID-0042"))
        assert stop.id_tag_info["status"] == "Accepted"
        await client.call(_notify(1, "Finishing"))
        await client.call(_notify(1, "Available"))
    assert (await _status(charging, keys, cp)).status == pb.CONNECTOR_STATUS_AVAILABLE
    async with resources.engine.connect() as conn:
        session = (await conn.execute(text("SELECT * FROM charging_sessions WHERE id = :id"),
                                      {"id": start.transaction_id})).one()
    assert session.connector_id == cp.connector() and session.charge_point_id == cp.cp_id
    assert (session.meter_start_wh, session.meter_stop_wh) == (1000.0, 2500.0)
    assert (session.last_energy_wh, session.last_power_w, session.last_soc_pct) == (1500.0, 7200.0, 64.0)
    assert session.stopped_at is not None and session.stop_reason == "EVDisconnected"
    assert session.id_token_sha256 and "RFID" not in session.id_token_sha256
    statuses = [p["status"].removeprefix("CONNECTOR_STATUS_") for p in await _outbox(resources, cp.connector())]
    assert statuses == ["PREPARING", "CHARGING", "FINISHING", "AVAILABLE"]


async def test_a_repeated_start_transaction_gets_the_same_id(new_charge_point: NewChargePoint) -> None:
    cp = await new_charge_point()
    async with ocpp_client(cp.url, cp.cp_id, cp.password) as client:
        at = ocpp_now()
        first = await client.call(call.StartTransaction(connector_id=1, id_tag="T", meter_start=5, timestamp=at))
        again = await client.call(call.StartTransaction(connector_id=1, id_tag="T", meter_start=5, timestamp=at))
    assert first.transaction_id == again.transaction_id


async def test_a_wrong_password_is_refused_before_the_upgrade(new_charge_point: NewChargePoint) -> None:
    cp = await new_charge_point()
    with pytest.raises(InvalidStatus) as err:
        await open_ws(cp.url, cp.cp_id, cp.password[:-1] + ("x" if cp.password[-1] != "x" else "y"), "ocpp1.6")
    assert err.value.response.status_code == 401
    assert err.value.response.headers["WWW-Authenticate"].startswith("Basic")


async def test_an_unknown_charge_point_is_refused(charging: Harness, unique: str) -> None:
    with pytest.raises(InvalidStatus) as err:
        await open_ws(charging.ocpp_url, f"NOBODY-{unique}", "a-password-of-32-characters-xxxx", "ocpp1.6")
    assert err.value.response.status_code == 401


async def test_a_charge_point_without_credentials_is_refused(new_charge_point: NewChargePoint) -> None:
    cp = await new_charge_point()
    with pytest.raises(InvalidStatus) as err:
        await open_ws(cp.url, cp.cp_id, None, "ocpp1.6")
    assert err.value.response.status_code == 401


async def test_credentials_of_another_charge_point_are_refused(new_charge_point: NewChargePoint) -> None:
    a, b = await new_charge_point(), await new_charge_point()
    with pytest.raises(InvalidStatus) as err:
        await open_ws(a.url, a.cp_id, b.password, "ocpp1.6")
    assert err.value.response.status_code == 401


async def test_a_charge_point_must_speak_its_registered_protocol(new_charge_point: NewChargePoint) -> None:
    cp = await new_charge_point()
    with pytest.raises(InvalidStatus) as err:
        await open_ws(cp.url, cp.cp_id, cp.password, "ocpp2.0.1")
    assert err.value.response.status_code == 400


async def test_another_path_is_not_found(charging: Harness) -> None:
    with pytest.raises(InvalidStatus) as err:
        await open_ws(charging.ocpp_url.replace("/ocpp", "/other"), "CP1", "x" * 32, "ocpp1.6")
    assert err.value.response.status_code == 404


async def test_a_status_for_an_undeclared_connector_is_refused(charging: Harness, keys: Keys, resources: Resources,
                                                               new_charge_point: NewChargePoint) -> None:
    cp = await new_charge_point()
    async with ocpp_client(cp.url, cp.cp_id, cp.password) as client:
        with pytest.raises(PropertyConstraintViolationError):
            await client.call(_notify(7, "Available"), suppress=False)
        assert await client.call(call.Heartbeat())  # the connection goes on
    assert await _outbox(resources, cp.connector()) == []


async def test_a_malformed_status_is_answered_with_a_call_error(charging: Harness, keys: Keys,
                                                                new_charge_point: NewChargePoint) -> None:
    cp = await new_charge_point()
    async with ocpp_client(cp.url, cp.cp_id, cp.password) as client:
        with pytest.raises(OCPPError):
            await client.call(_notify(1, "Sleeping"), suppress=False, skip_schema_validation=True)
        with pytest.raises(OCPPError):
            await client.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Available",
                                                      timestamp="yesterday"), suppress=False)
    assert (await _status(charging, keys, cp)).status == pb.CONNECTOR_STATUS_UNKNOWN


async def test_a_password_reset_cuts_the_connection_and_the_old_password(charging: Harness, keys: Keys,
                                                                         new_charge_point: NewChargePoint) -> None:
    cp = await new_charge_point()
    async with ocpp_client(cp.url, cp.cp_id, cp.password) as client:
        await client.call(call.Heartbeat())
        reply = await charging.stub.RegisterChargePoint(pb.RegisterChargePointRequest(
            charge_point_id=cp.cp_id, station_id=cp.station.id, protocol=pb.OCPP_PROTOCOL_OCPP16J,
            reset_password=True), metadata=keys.md(keys.admin))
        with pytest.raises((ConnectionClosed, asyncio.TimeoutError)):
            await client._connection.wait_closed()
            await client.call(call.Heartbeat())
    with pytest.raises(InvalidStatus):
        await open_ws(cp.url, cp.cp_id, cp.password, "ocpp1.6")
    async with ocpp_client(cp.url, cp.cp_id, reply.password) as client:
        assert (await client.call(call.BootNotification(charge_point_model="m", charge_point_vendor="v"))).status \
            == "Accepted"


async def test_a_new_connection_replaces_the_old_one(charging: Harness, new_charge_point: NewChargePoint) -> None:
    cp = await new_charge_point()
    async with (ocpp_client(cp.url, cp.cp_id, cp.password) as first,
                ocpp_client(cp.url, cp.cp_id, cp.password) as second):
        await asyncio.wait_for(first._connection.wait_closed(), 5)
        assert await second.call(call.Heartbeat())
        assert charging.app.gateway.connected(cp.cp_id)


async def test_boot_is_rejected_once_the_registration_changed_elsewhere(charging: Harness, resources: Resources,
                                                                        new_charge_point: NewChargePoint) -> None:
    """Another gateway process reset the password: this connection's charge point is no longer known."""
    cp = await new_charge_point()
    async with ocpp_client(cp.url, cp.cp_id, cp.password) as client:
        async with resources.engine.begin() as conn:
            await conn.execute(text("UPDATE charging_charge_points SET password_hash = 'pbkdf2_sha256$1$AA==$AA==' "
                                    "WHERE id = :id"), {"id": cp.cp_id})
        boot = await client.call(call.BootNotification(charge_point_model="m", charge_point_vendor="v"))
        assert boot.status == "Rejected"
        await asyncio.wait_for(client._connection.wait_closed(), 5)


async def test_registering_a_charge_point_twice_needs_a_reset(charging: Harness, keys: Keys,
                                                              new_charge_point: NewChargePoint) -> None:
    cp = await new_charge_point()
    with pytest.raises(aio.AioRpcError) as err:
        await charging.stub.RegisterChargePoint(pb.RegisterChargePointRequest(
            charge_point_id=cp.cp_id, station_id=cp.station.id, protocol=pb.OCPP_PROTOCOL_OCPP16J),
            metadata=keys.md(keys.admin))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    async with ocpp_client(cp.url, cp.cp_id, cp.password) as client:  # the first password still works
        assert await client.call(call.Heartbeat())
