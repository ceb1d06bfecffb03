"""OCPP 2.0.1: real charging stations (the `ocpp` package's client over `websockets`) against the gateway."""

from __future__ import annotations

from typing import Any

import pytest
from ocpp.exceptions import PropertyConstraintViolationError
from ocpp.v201 import call
from sqlalchemy import text
from v2x.charging.v1 import charging_pb2 as pb
from websockets.exceptions import InvalidStatus

from services.common.runtime import Resources
from tests.charging.conftest import Harness, NewChargePoint, Registered
from tests.charging.helpers import connector_state, ocpp_client, ocpp_now, open_ws
from tests.conftest import Keys

S = pb.ConnectorStatus


async def _status(h: Harness, keys: Keys, cp: Registered, n: int = 1) -> int:
    st = await h.stub.GetStation(pb.GetStationRequest(station_id=cp.station.id), metadata=keys.md(keys.driver))
    return connector_state(st, cp.connector(n)).status


def _notify(evse: int, status: str) -> Any:
    return call.StatusNotification(timestamp=ocpp_now(), connector_status=status, evse_id=evse, connector_id=1)


def _event(event: str, seq: int, tx: str, *, state: str | None = None, trigger: str = "ChargingStateChanged",
           evse: int | None = None, token: str | None = None, energy_wh: float | None = None,
           reason: str | None = None) -> Any:
    info: dict[str, Any] = {"transaction_id": tx}
    if state:
        info["charging_state"] = state
    if reason:
        info["stopped_reason"] = reason
    return call.TransactionEvent(
        event_type=event, timestamp=ocpp_now(), trigger_reason=trigger, seq_no=seq, transaction_info=info,
        evse={"id": evse, "connector_id": 1} if evse else None,
        id_token={"id_token": token, "type": "ISO14443"} if token else None,
        meter_value=[{"timestamp": ocpp_now(), "sampled_value": [
            {"value": energy_wh, "measurand": "Energy.Active.Import.Register"}]}] if energy_wh is not None else None)


async def test_boot_heartbeat_and_status_land_in_the_store(charging: Harness, keys: Keys,
                                                          new_charge_point: NewChargePoint) -> None:
    cp = await new_charge_point("2.0.1", plugs=[(3, 150.0), (3, 150.0)])
    async with ocpp_client(cp.url, cp.cp_id, cp.password, "2.0.1") as client:
        boot = await client.call(call.BootNotification(
            charging_station={"model": "HPC150", "vendor_name": "Acme", "firmware_version": "2.1"}, reason="PowerUp"))
        assert boot.status == "Accepted" and boot.interval == 60
        assert (await client.call(call.Heartbeat())).current_time.endswith("Z")
        await client.call(_notify(1, "Available"))
        await client.call(_notify(2, "Unavailable"))
    assert await _status(charging, keys, cp, 1) == S.CONNECTOR_STATUS_AVAILABLE
    assert await _status(charging, keys, cp, 2) == S.CONNECTOR_STATUS_UNAVAILABLE


async def test_a_transaction_event_sequence_drives_the_connector(charging: Harness, keys: Keys, resources: Resources,
                                                                 new_charge_point: NewChargePoint) -> None:
    cp = await new_charge_point("2.0.1")
    tx = "5f0c1a9e-tx-1"
    async with ocpp_client(cp.url, cp.cp_id, cp.password, "2.0.1") as client:
        await client.call(call.BootNotification(charging_station={"model": "m", "vendor_name": "v"},
                                                reason="PowerUp"))
        await client.call(_notify(1, "Available"))
        await client.call(_notify(1, "Occupied"))
        assert await _status(charging, keys, cp) == S.CONNECTOR_STATUS_OCCUPIED
        started = await client.call(_event("Started", 0, tx, state="EVConnected", trigger="CablePluggedIn", evse=1,
                                           token="TOKEN-7", energy_wh=10_000))
        assert started.id_token_info["status"] == "Accepted"
        await client.call(_event("Updated", 1, tx, state="Charging", energy_wh=12_500))
        assert await _status(charging, keys, cp) == S.CONNECTOR_STATUS_CHARGING
        # 2.0.1 StatusNotification knows only Occupied: it does not coarsen a live CHARGING.
        await client.call(_notify(1, "Occupied"))
        assert await _status(charging, keys, cp) == S.CONNECTOR_STATUS_CHARGING
        await client.call(_event("Updated", 2, tx, state="SuspendedEV"))
        assert await _status(charging, keys, cp) == S.CONNECTOR_STATUS_SUSPENDED_EV
        await client.call(_event("Ended", 3, tx, trigger="StopAuthorized", reason="Local", energy_wh=15_000))
        assert await _status(charging, keys, cp) == S.CONNECTOR_STATUS_FINISHING
        await client.call(_notify(1, "Available"))
    assert await _status(charging, keys, cp) == S.CONNECTOR_STATUS_AVAILABLE
    async with resources.engine.connect() as conn:
        session = (await conn.execute(text(
            "SELECT * FROM charging_sessions WHERE charge_point_id = :cp AND transaction_id = :tx"),
            {"cp": cp.cp_id, "tx": tx})).one()
    assert session.connector_id == cp.connector()
    assert (session.meter_start_wh, session.meter_stop_wh) == (10_000.0, 15_000.0)
    assert session.stopped_at is not None and session.stop_reason == "Local"


async def test_an_ended_transaction_after_the_ev_left_does_not_reopen_the_connector(
        charging: Harness, keys: Keys, new_charge_point: NewChargePoint) -> None:
    cp = await new_charge_point("2.0.1")
    async with ocpp_client(cp.url, cp.cp_id, cp.password, "2.0.1") as client:
        await client.call(_event("Started", 0, "tx-gone", state="Charging", trigger="CablePluggedIn", evse=1))
        await client.call(_notify(1, "Available"))
        await client.call(_event("Ended", 1, "tx-gone", trigger="EVCommunicationLost", reason="EVDisconnected"))
    assert await _status(charging, keys, cp) == S.CONNECTOR_STATUS_AVAILABLE


async def test_a_wrong_password_is_refused(new_charge_point: NewChargePoint) -> None:
    cp = await new_charge_point("2.0.1")
    with pytest.raises(InvalidStatus) as err:
        await open_ws(cp.url, cp.cp_id, "not-the-password-at-all-0123456", "ocpp2.0.1")
    assert err.value.response.status_code == 401


async def test_a_status_for_an_undeclared_evse_is_refused(charging: Harness, keys: Keys,
                                                          new_charge_point: NewChargePoint) -> None:
    cp = await new_charge_point("2.0.1")
    async with ocpp_client(cp.url, cp.cp_id, cp.password, "2.0.1") as client:
        with pytest.raises(PropertyConstraintViolationError):
            await client.call(_notify(9, "Available"), suppress=False)
    assert await _status(charging, keys, cp) == S.CONNECTOR_STATUS_UNKNOWN
