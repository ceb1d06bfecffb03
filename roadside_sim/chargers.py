"""Kerbside chargers of the simulated district that speak OCPP over WebSocket, as real charge points do.

Each simulated junction has a kerbside station of the on-street operator with CONNECTORS connectors, driven by one
charge point: OCPP 1.6J at even junctions, 2.0.1 at odd ones. The simulator registers them as an administrator would
(RegisterStation, RegisterChargePoint with a new password each run) and then runs each as the `ocpp` package's
ChargePoint over the gateway's WebSocket URL with HTTP Basic: BootNotification, heartbeats at the interval the boot
answer gives, StatusNotification for every connector, and sessions driven by EV arrivals.

Arrivals are a seeded Poisson process per free connector on the simulator's clock, at a rate that follows the hour of
the day (busy in the rush hours, rare at night). A session: 1.6J Preparing -> StartTransaction, Charging -> meter
values every METER_EVERY_S -> now and then SuspendedEV -> StopTransaction, Finishing -> Available when the EV leaves;
2.0.1 Occupied -> TransactionEvent Started (EVConnected) -> Updated (Charging, meter values) -> Ended (Finishing) ->
Available. Now and then a connector faults and is repaired. Every charge point loses its connection now and then (the
socket is cut, no close handshake) and reconnects after a few seconds; what happened meanwhile is queued and sent
after the new BootNotification with its original timestamps, then every connector's status again.

The truth is the connector's status in the suite's canonical vocabulary (what the gateway's mapping makes of the
messages) from the moment it physically changed; `chargers.jsonl` next to the run has every change.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import random
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import grpc
from grpc import aio
from ocpp.exceptions import OCPPError
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from v2x.charging.v1 import charging_pb2 as pb
from v2x.charging.v1.charging_pb2_grpc import ChargingServiceStub
from v2x.common.v1 import common_pb2 as cpb
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from roadside_sim.network import District

if TYPE_CHECKING:
    from v2x.charging.v1.charging_pb2_grpc import ChargingServiceAsyncStub as ChargingStub
else:
    ChargingStub = ChargingServiceStub

log = logging.getLogger("roadside_sim.chargers")
OPERATOR = "STREET"  # the district's on-street operator runs the kerbside chargers
CONNECTORS = 3
METER_EVERY_S = 60.0
# EV arrivals per free connector per hour, by local hour: a quiet night, busy rush hours.
ARRIVALS_PER_HOUR = (0.3, 0.2, 0.2, 0.2, 0.3, 0.6, 1.5, 3.0, 4.0, 3.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.5, 4.0,
                     4.0, 3.0, 2.0, 1.5, 1.0, 0.5)
FAULTS_PER_HOUR = 0.3  # per free connector
DROPS_PER_HOUR = 12.0  # per charge point: a lost connection every ~5 minutes
DROP_DOWN_S = (2.0, 8.0)
RESPONSE_TIMEOUT_S = 10


def status_name(status: int) -> str:
    return pb.ConnectorStatus.Name(status).removeprefix("CONNECTOR_STATUS_")  # type: ignore[arg-type]


@dataclass(frozen=True)
class ChargerSpec:
    station_id: str
    cp_id: str
    version: str  # "1.6" or "2.0.1"
    connectors: int
    lat: float
    lon: float

    def connector_id(self, n: int) -> str:
        return f"{self.station_id}-C{n}"

    def station(self) -> pb.Station:
        evses = []
        ocpp201 = self.version != "1.6"
        for n in range(1, self.connectors + 1):
            dc = n == 1
            plug = pb.Connector(id=self.connector_id(n),
                                standard=pb.CONNECTOR_STANDARD_GBT_DC if dc else pb.CONNECTOR_STANDARD_GBT_AC,
                                max_power_kw=60.0 if dc else 7.0, price_per_kwh_fen=95,
                                service_fee_per_kwh_fen=80 if dc else 50, ocpp_connector_id=1 if ocpp201 else n)
            evses.append(pb.Evse(id=f"E{n}", charge_point_id=self.cp_id, ocpp_evse_id=n if ocpp201 else 0,
                                 connectors=[plug]))
        return pb.Station(id=self.station_id, operator_id=OPERATOR, name=f"{self.station_id} kerbside (simulated)",
                          location=cpb.LatLon(lat=self.lat, lon=self.lon), address="宝山区 (simulated kerbside)",
                          evses=evses)


def district_chargers(district: District, intersections: int, prefix: str = "SIM") -> list[ChargerSpec]:
    """One kerbside station per junction with cameras, 25 m north-east of its centre."""
    out = []
    for k, junction in enumerate(district.junctions[:intersections]):
        x, y = district.local(*district.net.getNode(junction).getCoord())
        lat, lon = district.frame.to_wgs84(x + 25.0, y + 25.0)
        out.append(ChargerSpec(f"{prefix}-CS-{junction}", f"{prefix}-CP-{junction}", "1.6" if k % 2 == 0 else "2.0.1",
                               CONNECTORS, lat, lon))
    return out


def _md(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


async def register(stub: ChargingStub, key: str, specs: list[ChargerSpec]) -> dict[str, tuple[str, str]]:
    """Stations (kept when they exist) and charge points (a new password each run): cp id -> (URL, password)."""
    out = {}
    for spec in specs:
        try:
            await stub.RegisterStation(pb.RegisterStationRequest(station=spec.station()), metadata=_md(key),
                                       timeout=60, wait_for_ready=True)
        except aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
        protocol = pb.OCPP_PROTOCOL_OCPP16J if spec.version == "1.6" else pb.OCPP_PROTOCOL_OCPP201
        reply = await stub.RegisterChargePoint(pb.RegisterChargePointRequest(
            charge_point_id=spec.cp_id, station_id=spec.station_id, protocol=protocol, reset_password=True),
            metadata=_md(key), timeout=30)
        out[spec.cp_id] = (reply.endpoint_url, reply.password)
    return out


def ocpp_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Session:
    tx: str  # 2.0.1: the charger's transaction id; 1.6: the central system's, once StartTransaction is answered
    kw: float
    meter_wh: float
    soc: float
    seq: int = 0
    charge_at: float = 0.0  # sim seconds: energy starts flowing
    suspend_at: float | None = None
    resume_at: float | None = None
    end_at: float = 0.0  # charging ends (Finishing)
    leave_at: float = 0.0  # the EV unplugs and leaves
    next_meter_at: float = 0.0
    tx16: int | None = None


@dataclass
class Outgoing:
    kind: str  # status | start | state | meter | stop
    n: int  # the connector (1.6) or EVSE (2.0.1) number
    at: datetime
    status: int = 0
    session: Session | None = None
    error_code: str = "NoError"


@dataclass
class SimConnector:
    n: int
    connector_id: str
    dc: bool
    status: int = pb.CONNECTOR_STATUS_AVAILABLE
    session: Session | None = None
    repair_at: float = 0.0
    error_code: str = "NoError"


class ChargerTruth:
    """Every connector's true status from the moment it changed; `chargers.jsonl` has the changes."""

    def __init__(self, out: Path | None) -> None:
        self.history: dict[str, list[tuple[datetime, int]]] = {}
        self._file: TextIO | None = (out / "chargers.jsonl").open("w") if out is not None else None

    def set(self, station_id: str, connector_id: str, status: int, at: datetime, sim_s: float) -> None:
        self.history.setdefault(connector_id, []).append((at, status))
        if self._file is not None:
            self._file.write(json.dumps({"at": at.isoformat(), "sim_s": round(sim_s, 2), "station": station_id,
                                         "connector": connector_id, "status": status_name(status)}) + "\n")

    def state_at(self, connector_id: str, at: datetime) -> int | None:
        state = None
        for when, status in self.history.get(connector_id, []):
            if when > at:
                break
            state = status
        return state

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


FAULT_CODES = ("GroundFailure", "HighTemperature", "EVCommunicationError", "InternalError")
_STATUS16: dict[int, str] = {pb.CONNECTOR_STATUS_AVAILABLE: "Available", pb.CONNECTOR_STATUS_PREPARING: "Preparing",
             pb.CONNECTOR_STATUS_CHARGING: "Charging", pb.CONNECTOR_STATUS_SUSPENDED_EV: "SuspendedEV",
             pb.CONNECTOR_STATUS_FINISHING: "Finishing", pb.CONNECTOR_STATUS_FAULTED: "Faulted"}
_STATE201: dict[int, str] = {pb.CONNECTOR_STATUS_CHARGING: "Charging", pb.CONNECTOR_STATUS_SUSPENDED_EV: "SuspendedEV",
             pb.CONNECTOR_STATUS_OCCUPIED: "EVConnected"}
_STATUS201: dict[int, str] = {pb.CONNECTOR_STATUS_AVAILABLE: "Available", pb.CONNECTOR_STATUS_FAULTED: "Faulted"}
IN_SESSION = frozenset({pb.CONNECTOR_STATUS_PREPARING, pb.CONNECTOR_STATUS_OCCUPIED, pb.CONNECTOR_STATUS_CHARGING,
                        pb.CONNECTOR_STATUS_SUSPENDED_EV, pb.CONNECTOR_STATUS_FINISHING})


class _Cp16(ChargePoint16):  # type: ignore[misc]
    """An OCPP 1.6J charge point: it calls; the central system's requests are answered NotImplemented."""


class _Cp201(ChargePoint201):  # type: ignore[misc]
    """An OCPP 2.0.1 charging station that calls."""


class _Dropped(Exception):
    """The simulator cut the connection (a charger losing power or network)."""


@dataclass
class ChargePointSim:
    spec: ChargerSpec
    url: str
    password: str
    rng: random.Random
    truth: ChargerTruth
    connectors: list[SimConnector] = field(default_factory=list)
    outbox: deque[Outgoing] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    down_until: datetime | None = None
    connects: int = 0
    drops: int = 0
    answered: int = 0
    refused: int = 0  # CALLERRORs
    failures: int = 0  # connections that could not be made or broke
    sessions: int = 0
    heartbeat_s: float = 60.0
    online: bool = False
    drops_per_hour: float = DROPS_PER_HOUR

    def __post_init__(self) -> None:
        self.connectors = [SimConnector(n, self.spec.connector_id(n), n == 1)
                           for n in range(1, self.spec.connectors + 1)]

    @property
    def v16(self) -> bool:
        return self.spec.version == "1.6"

    # ----- what happens at the chargers (on the simulator's clock) -----------------------------------------

    def begin(self, sim_t: float, wall: datetime, busy_share: float) -> None:
        """The first moment: every connector's status; about `busy_share` of them already charging."""
        for c in self.connectors:
            if self.rng.random() < busy_share:
                self._arrive(c, sim_t, wall, charging=True)
            else:
                self._set(c, pb.CONNECTOR_STATUS_AVAILABLE, wall, sim_t)

    def step(self, sim_t: float, dt: float, wall: datetime) -> None:
        hour = (sim_t / 3600) % 24
        for c in self.connectors:
            self._advance(c, sim_t, dt, wall, hour)
        if self.online and self.down_until is None and self._chance(self.drops_per_hour, dt):
            self.down_until = wall + timedelta(seconds=self.rng.uniform(*DROP_DOWN_S))
            self.wake.set()

    def _chance(self, per_hour: float, dt: float) -> bool:
        return self.rng.random() < 1.0 - math.exp(-per_hour * dt / 3600.0)

    def _send(self, kind: str, c: SimConnector, wall: datetime, status: int = 0) -> None:
        self.outbox.append(Outgoing(kind, c.n, wall, status, c.session, c.error_code))
        self.wake.set()

    def _set(self, c: SimConnector, status: int, wall: datetime, sim_t: float, *, send: bool = True) -> None:
        c.status = status
        self.truth.set(self.spec.station_id, c.connector_id, status, wall, sim_t)
        if not send:
            return
        if self.v16 or status in (pb.CONNECTOR_STATUS_AVAILABLE, pb.CONNECTOR_STATUS_FAULTED,
                                  pb.CONNECTOR_STATUS_OCCUPIED):
            self._send("status", c, wall, status)
        elif status in _STATE201:
            self._send("state", c, wall, status)

    def _arrive(self, c: SimConnector, sim_t: float, wall: datetime, *, charging: bool = False) -> None:
        rng = self.rng
        kw = 60.0 if c.dc else 7.0
        minutes = rng.uniform(4, 15) if c.dc else rng.uniform(5, 20)  # short sessions: a lively demo
        s = Session(tx=f"{self.spec.cp_id}-{c.n}-{rng.getrandbits(32):08x}", kw=kw,
                    meter_wh=float(rng.randint(10_000, 900_000)), soc=rng.uniform(15, 60))
        s.charge_at = sim_t if charging else sim_t + rng.uniform(5, 15)
        s.end_at = s.charge_at + minutes * 60 * (rng.uniform(0.2, 1.0) if charging else 1.0)
        s.leave_at = s.end_at + rng.uniform(20, 90)
        if rng.random() < 0.25:
            s.suspend_at = s.charge_at + (s.end_at - s.charge_at) * rng.uniform(0.3, 0.6)
            s.resume_at = s.suspend_at + rng.uniform(30, 90)
        s.next_meter_at = s.charge_at + METER_EVERY_S
        c.session = s
        self.sessions += 1
        if self.v16:
            self._set(c, pb.CONNECTOR_STATUS_PREPARING, wall, sim_t)
        else:
            self._set(c, pb.CONNECTOR_STATUS_OCCUPIED, wall, sim_t)
            self._send("start", c, wall)
        if charging:
            self._charge(c, sim_t, wall)

    def _charge(self, c: SimConnector, sim_t: float, wall: datetime) -> None:
        if self.v16:
            self._send("start", c, wall)
        self._set(c, pb.CONNECTOR_STATUS_CHARGING, wall, sim_t)

    def _advance(self, c: SimConnector, sim_t: float, dt: float, wall: datetime, hour: float) -> None:
        s = c.session
        if c.status == pb.CONNECTOR_STATUS_FAULTED:
            if sim_t >= c.repair_at:
                c.error_code = "NoError"
                self._set(c, pb.CONNECTOR_STATUS_AVAILABLE, wall, sim_t)
            return
        if s is None:
            if self._chance(ARRIVALS_PER_HOUR[int(hour) % 24], dt):
                self._arrive(c, sim_t, wall)
            elif self._chance(FAULTS_PER_HOUR, dt):
                c.error_code = self.rng.choice(FAULT_CODES)
                c.repair_at = sim_t + self.rng.uniform(60, 300)
                self._set(c, pb.CONNECTOR_STATUS_FAULTED, wall, sim_t)
            return
        if c.status in (pb.CONNECTOR_STATUS_PREPARING, pb.CONNECTOR_STATUS_OCCUPIED):
            if sim_t >= s.charge_at:
                self._charge(c, sim_t, wall)
            return
        if c.status in (pb.CONNECTOR_STATUS_CHARGING, pb.CONNECTOR_STATUS_SUSPENDED_EV):
            if c.status == pb.CONNECTOR_STATUS_CHARGING:
                s.meter_wh += s.kw * 1000 * dt / 3600
                s.soc = min(100.0, s.soc + s.kw * dt / 3600 / 0.6)  # a 60 kWh battery
            if sim_t >= s.end_at:
                self._send("stop", c, wall)
                self._set(c, pb.CONNECTOR_STATUS_FINISHING, wall, sim_t, send=self.v16)
                return
            if s.suspend_at is not None and sim_t >= s.suspend_at and c.status == pb.CONNECTOR_STATUS_CHARGING:
                s.suspend_at = None
                self._set(c, pb.CONNECTOR_STATUS_SUSPENDED_EV, wall, sim_t)
            elif s.resume_at is not None and s.suspend_at is None and sim_t >= s.resume_at \
                    and c.status == pb.CONNECTOR_STATUS_SUSPENDED_EV:
                s.resume_at = None
                self._set(c, pb.CONNECTOR_STATUS_CHARGING, wall, sim_t)
            if sim_t >= s.next_meter_at:
                s.next_meter_at += METER_EVERY_S
                self._send("meter", c, wall)
            return
        if c.status == pb.CONNECTOR_STATUS_FINISHING and sim_t >= s.leave_at:
            c.session = None
            self._set(c, pb.CONNECTOR_STATUS_AVAILABLE, wall, sim_t)

    # ----- the connection ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Until cancelled: connect, boot, send; after a drop or a failure, wait and connect again."""
        backoff = 1.0
        while True:
            if self.down_until is not None:
                await asyncio.sleep(max(0.0, (self.down_until - datetime.now(UTC)).total_seconds()))
                self.down_until = None
            try:
                await self._connection()
            except _Dropped:
                self.drops += 1
                backoff = 1.0
                continue
            except (OSError, WebSocketException, TimeoutError, ConnectionError) as exc:
                self.failures += 1
                if isinstance(exc, InvalidStatus):
                    log.warning("charge point %s refused: HTTP %s", self.spec.cp_id, exc.response.status_code)
                else:
                    log.info("charge point %s: connection lost (%r); reconnecting", self.spec.cp_id, exc)
            finally:
                self.online = False
            await asyncio.sleep(backoff * self.rng.uniform(0.5, 1.5))
            backoff = min(backoff * 2, 30.0)

    async def _connection(self) -> None:
        auth = base64.b64encode(f"{self.spec.cp_id}:{self.password}".encode()).decode()
        ws: ClientConnection = await connect(
            self.url, subprotocols=["ocpp1.6" if self.v16 else "ocpp2.0.1"],  # type: ignore[list-item]
            additional_headers={"Authorization": f"Basic {auth}"}, open_timeout=10, compression=None)
        client = (_Cp16 if self.v16 else _Cp201)(self.spec.cp_id, ws, response_timeout=RESPONSE_TIMEOUT_S)
        receiving = asyncio.create_task(client.start())
        loop = asyncio.get_running_loop()
        try:
            self.connects += 1
            await self._boot(client)
            self.online = True
            if self.connects > 1:
                self._resend(datetime.now(UTC))
            last = loop.time()
            while True:
                if self.down_until is not None:
                    ws.transport.abort()  # no close handshake: the charger just went away
                    raise _Dropped
                if receiving.done():
                    raise ConnectionError("the central system closed the connection")
                if self.outbox:
                    await self._call(client, self.outbox[0])
                    self.outbox.popleft()
                    last = loop.time()
                    continue
                idle = self.heartbeat_s - (loop.time() - last)
                if idle <= 0:
                    await self._answered(client, call16.Heartbeat() if self.v16 else call201.Heartbeat())
                    last = loop.time()
                    continue
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), min(idle, 1.0))
        finally:
            receiving.cancel()
            with contextlib.suppress(BaseException):
                await receiving
            with contextlib.suppress(BaseException):
                await ws.close()

    def _resend(self, now: datetime) -> None:
        """After a reconnect, once what was queued is sent: every connector as it is now (2.0.1 has no status for
        Finishing: an Ended transaction said it, and a repeated Occupied would undo it)."""
        for c in self.connectors:
            if self.v16 or c.status in (pb.CONNECTOR_STATUS_AVAILABLE, pb.CONNECTOR_STATUS_FAULTED):
                self.outbox.append(Outgoing("status", c.n, now, c.status, c.session, c.error_code))
            elif c.status in _STATE201:
                self.outbox.append(Outgoing("status", c.n, now, pb.CONNECTOR_STATUS_OCCUPIED, c.session))
                self.outbox.append(Outgoing("state", c.n, now, c.status, c.session))

    async def _answered(self, client: Any, message: Any) -> Any:
        try:
            reply = await client.call(message, suppress=False)
        except OCPPError as exc:
            self.refused += 1
            log.warning("charge point %s: %s refused: %s", self.spec.cp_id, type(message).__name__, exc)
            return None
        self.answered += 1
        return reply

    async def _boot(self, client: Any) -> None:
        if self.v16:
            msg: Any = call16.BootNotification(charge_point_model="KS-60DC", charge_point_vendor="v2x-sim",
                                               firmware_version="1.4.2")
        else:
            msg = call201.BootNotification(charging_station={"model": "KS-60DC", "vendor_name": "v2x-sim",
                                                             "firmware_version": "2.1.0"}, reason="PowerUp")
        reply = await self._answered(client, msg)
        if reply is None or str(reply.status) != "Accepted":
            raise ConnectionError(f"BootNotification answered {getattr(reply, 'status', None)}")
        self.heartbeat_s = float(reply.interval or 60)

    async def _call(self, client: Any, o: Outgoing) -> None:
        s, at = o.session, ocpp_time(o.at)
        if o.kind == "status":
            if self.v16:
                await self._answered(client, call16.StatusNotification(
                    connector_id=o.n, status=_STATUS16[o.status], timestamp=at,
                    error_code=o.error_code if o.status == pb.CONNECTOR_STATUS_FAULTED else "NoError"))
            else:
                text = _STATUS201.get(o.status, "Occupied")
                await self._answered(client, call201.StatusNotification(
                    timestamp=at, connector_status=text, evse_id=o.n, connector_id=1))
            return
        if s is None:
            return
        if self.v16:
            if o.kind == "start":
                reply = await self._answered(client, call16.StartTransaction(
                    connector_id=o.n, id_tag=f"RFID{self.rng.randint(1000, 9999)}", meter_start=int(s.meter_wh),
                    timestamp=at))
                if reply is not None:
                    s.tx16 = int(reply.transaction_id)
            elif o.kind == "meter" and s.tx16 is not None:
                await self._answered(client, call16.MeterValues(connector_id=o.n, transaction_id=s.tx16,
                                                                meter_value=[_meter16(s, o.at)]))
            elif o.kind == "stop" and s.tx16 is not None:
                await self._answered(client, call16.StopTransaction(
                    meter_stop=int(s.meter_wh), timestamp=at, transaction_id=s.tx16, reason="Local",
                    transaction_data=[_meter16(s, o.at)]))
            return
        seq = s.seq
        s.seq += 1
        if o.kind == "start":
            msg: Any = call201.TransactionEvent(
                event_type="Started", timestamp=at, trigger_reason="CablePluggedIn", seq_no=seq,
                transaction_info={"transaction_id": s.tx, "charging_state": "EVConnected"},
                evse={"id": o.n, "connector_id": 1}, meter_value=[_meter201(s, o.at)])
        elif o.kind == "state":
            msg = call201.TransactionEvent(
                event_type="Updated", timestamp=at, trigger_reason="ChargingStateChanged", seq_no=seq,
                transaction_info={"transaction_id": s.tx, "charging_state": _STATE201[o.status]},
                evse={"id": o.n, "connector_id": 1})
        elif o.kind == "meter":
            msg = call201.TransactionEvent(
                event_type="Updated", timestamp=at, trigger_reason="MeterValuePeriodic", seq_no=seq,
                transaction_info={"transaction_id": s.tx}, evse={"id": o.n, "connector_id": 1},
                meter_value=[_meter201(s, o.at)])
        else:
            msg = call201.TransactionEvent(
                event_type="Ended", timestamp=at, trigger_reason="StopAuthorized", seq_no=seq,
                transaction_info={"transaction_id": s.tx, "stopped_reason": "Local"},
                evse={"id": o.n, "connector_id": 1}, meter_value=[_meter201(s, o.at)])
        await self._answered(client, msg)


def _meter16(s: Session, at: datetime) -> dict[str, Any]:
    return {"timestamp": ocpp_time(at), "sampled_value": [
        {"value": f"{s.meter_wh:.0f}", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
        {"value": f"{s.kw * 1000:.0f}", "measurand": "Power.Active.Import", "unit": "W"},
        {"value": f"{s.soc:.0f}", "measurand": "SoC", "unit": "Percent"}]}


def _meter201(s: Session, at: datetime) -> dict[str, Any]:
    return {"timestamp": ocpp_time(at), "sampled_value": [
        {"value": round(s.meter_wh), "measurand": "Energy.Active.Import.Register", "unit_of_measure": {"unit": "Wh"}},
        {"value": round(s.kw * 1000), "measurand": "Power.Active.Import", "unit_of_measure": {"unit": "W"}},
        {"value": round(s.soc), "measurand": "SoC", "unit_of_measure": {"unit": "Percent"}}]}


@dataclass
class Chargers:
    """The district's simulated charge points: registered, connected, stepped with the simulator's clock."""

    points: list[ChargePointSim]
    truth: ChargerTruth
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    last_sim_t: float | None = None

    @classmethod
    async def start(cls, stub: ChargingStub, key: str, specs: list[ChargerSpec], out: Path | None, *,
                    seed: int = 13, drops_per_hour: float = DROPS_PER_HOUR) -> Chargers:
        access = await register(stub, key, specs)
        truth = ChargerTruth(out)
        rng = random.Random(seed)
        points = [ChargePointSim(spec, *access[spec.cp_id], random.Random(rng.random()), truth,
                                 drops_per_hour=drops_per_hour) for spec in specs]
        fleet = cls(points, truth)
        fleet.tasks = [asyncio.create_task(p.run(), name=f"charge point {p.spec.cp_id}") for p in points]
        return fleet

    def step(self, sim_t: float, wall: datetime) -> None:
        if self.last_sim_t is None:
            share = 0.4 * ARRIVALS_PER_HOUR[int(sim_t / 3600) % 24] / max(ARRIVALS_PER_HOUR)
            for p in self.points:
                p.begin(sim_t, wall, share)
        else:
            dt = sim_t - self.last_sim_t
            for p in self.points:
                p.step(sim_t, dt, wall)
        self.last_sim_t = sim_t

    async def stop(self, grace_s: float = 5.0) -> None:
        """Sends what is queued (within `grace_s`), then disconnects every charge point."""
        for _ in range(round(grace_s * 10)):
            if not any(p.outbox and p.online for p in self.points):
                break
            await asyncio.sleep(0.1)
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.truth.close()

    def summary(self) -> dict[str, Any]:
        return {"charge_points": len(self.points), "connectors": sum(len(p.connectors) for p in self.points),
                "sessions": sum(p.sessions for p in self.points), "connects": sum(p.connects for p in self.points),
                "drops": sum(p.drops for p in self.points), "calls_answered": sum(p.answered for p in self.points),
                "calls_refused": sum(p.refused for p in self.points),
                "connection_failures": sum(p.failures for p in self.points)}
