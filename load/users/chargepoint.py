"""An EV charge point speaking OCPP 1.6J or 2.0.1 (users alternate) over WebSocket with HTTP Basic to the charging
gateway: boot, heartbeats, status notifications, a charging transaction with meter values, then another; now and
then it loses its connection (no close handshake) and reconnects, booting again, as chargers do after a power or
network cut. It registers its station and itself at start (admin), so that it has a password of its own.

One event per OCPP call (request type "ocpp1.6" / "ocpp2.0.1", name the action), and one per connection.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import gevent
from locust import User, between, task
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201
from v2x.charging.v1 import charging_pb2 as cpb
from v2x.charging.v1.charging_pb2_grpc import ChargingServiceStub

from load.users.common import channel, fire, near, plan, running, setup_call, worker_index
from load.users.ocpp_sync import SyncChargePoint

CONNECTORS = 2
DROP_CHANCE = 0.25  # of a session ending with a lost connection rather than going on
_numbers = itertools.count()


def ocpp_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"


class ChargePoint(User):
    abstract = False
    wait_time = between(2, 5)  # between messages of a session

    def on_start(self) -> None:
        p = plan()
        n = next(_numbers)
        self.rng = random.Random()
        self.version = "1.6" if n % 2 == 0 else "2.0.1"
        w = worker_index(self.environment)
        short = self.version.replace(".", "")
        self.station_id = f"{p.tag}-CS-W{w}-{n:03d}"
        self.cp_id = f"{p.tag}-CP-W{w}-{n:03d}-{short}"
        self.request_type = f"ocpp{self.version}"
        stub = ChargingServiceStub(channel(p.targets["charging"]))
        evses = []
        for i in range(1, CONNECTORS + 1):
            connector = cpb.Connector(
                id=f"{self.station_id}-C{i}",
                standard=cpb.CONNECTOR_STANDARD_GBT_DC,
                max_power_kw=120,
                price_per_kwh_fen=120,
                service_fee_per_kwh_fen=60,
                ocpp_connector_id=i if self.version == "1.6" else 1,
            )
            evses.append(
                cpb.Evse(
                    id=f"E{i}",
                    charge_point_id=self.cp_id,
                    ocpp_evse_id=0 if self.version == "1.6" else i,
                    connectors=[connector],
                )
            )
        station = cpb.Station(
            id=self.station_id,
            operator_id=p.operator_id,
            name=f"load test station {n}",
            location=near(self.rng, p),
            address="宝山区友谊路1号",
            evses=evses,
        )
        setup_call(
            self,
            "charging.RegisterStation",
            stub.RegisterStation,
            cpb.RegisterStationRequest(station=station),
            p.keys["admin"],
        )
        protocol = cpb.OCPP_PROTOCOL_OCPP16J if self.version == "1.6" else cpb.OCPP_PROTOCOL_OCPP201
        reply = setup_call(
            self,
            "charging.RegisterChargePoint",
            stub.RegisterChargePoint,
            cpb.RegisterChargePointRequest(
                charge_point_id=self.cp_id, station_id=self.station_id, protocol=protocol, reset_password=True
            ),
            p.keys["admin"],
            exists_ok=False,
        )
        self.password = reply.password if reply is not None else ""
        self.cp: SyncChargePoint | None = None
        self.session: list[Callable[[], Any]] = []
        self.tx_id = 0

    def on_stop(self) -> None:
        if self.cp is not None:
            self.cp.close()

    @task
    def step(self) -> None:
        """The next message of the session (a fresh connection first when there is none)."""
        if not self.password:
            gevent.sleep(5)  # registration failed (in the report): nothing to connect with
            return
        try:
            if self.cp is None:
                self._connect()
            if not self.session:
                if self.rng.random() < DROP_CHANCE:
                    assert self.cp is not None
                    self.cp.drop()
                    self.cp = None
                    return
                self.session = self._session()
            self._send(self.session.pop(0)())
        except Exception as exc:
            if not running(self.environment):
                return
            fire(self.environment, self.request_type, "connection", 0, 0, exc)
            if self.cp is not None:
                self.cp.drop()
            self.cp, self.session = None, []
            gevent.sleep(1)

    def _connect(self) -> None:
        started = time.perf_counter()
        self.cp = SyncChargePoint.connect(plan().ocpp_url, self.cp_id, self.password, self.version)
        fire(
            self.environment,
            self.request_type,
            "connect (WebSocket + Basic auth)",
            (time.perf_counter() - started) * 1000,
        )
        self.session = [self._boot, *self._statuses("Available")]

    def _send(self, payload: Any) -> None:
        assert self.cp is not None
        action = type(payload).__name__
        started = time.perf_counter()
        try:
            answer = self.cp.call(payload)
        except Exception as exc:
            fire(self.environment, self.request_type, action, (time.perf_counter() - started) * 1000, 0, exc)
            raise
        fire(self.environment, self.request_type, action, (time.perf_counter() - started) * 1000)
        if "transaction_id" in answer:  # 1.6 StartTransaction: the central system numbers the transaction
            self.tx_id = int(answer["transaction_id"])

    # ----- the messages ---------------------------------------------------------------------------------------

    def _boot(self) -> Any:
        if self.version == "1.6":
            return call16.BootNotification(charge_point_model="DC120", charge_point_vendor="v2x-load")
        return call201.BootNotification(
            charging_station={"model": "DC120", "vendor_name": "v2x-load"}, reason="PowerUp"
        )

    def _heartbeat(self) -> Any:
        return call16.Heartbeat() if self.version == "1.6" else call201.Heartbeat()

    def _statuses(self, status: str) -> list[Callable[[], Any]]:
        return [partial(self._status, c, status) for c in range(1, CONNECTORS + 1)]

    def _status(self, connector: int, status: str) -> Any:
        if self.version == "1.6":
            return call16.StatusNotification(
                connector_id=connector, error_code="NoError", status=status, timestamp=ocpp_now()
            )
        return call201.StatusNotification(
            timestamp=ocpp_now(), connector_status=status, evse_id=connector, connector_id=1
        )

    def _session(self) -> list[Callable[[], Any]]:
        """Heartbeats, then a transaction on one connector: Occupied/Charging, start, meter values, stop."""
        c = self.rng.randint(1, CONNECTORS)
        out: list[Callable[[], Any]] = [self._heartbeat for _ in range(self.rng.randint(1, 3))]
        if self.version == "1.6":

            def start() -> Any:
                return call16.StartTransaction(
                    connector_id=c,
                    id_tag=f"RFID-{self.rng.randint(1, 9999):04d}",
                    meter_start=1000,
                    timestamp=ocpp_now(),
                )

            def meter() -> Any:
                return call16.MeterValues(
                    connector_id=c,
                    transaction_id=self.tx_id,
                    meter_value=[
                        {"timestamp": ocpp_now(), "sampled_value": [{"value": str(self.rng.randint(1000, 9000))}]}
                    ],
                )

            def stop() -> Any:
                return call16.StopTransaction(meter_stop=9000, timestamp=ocpp_now(), transaction_id=self.tx_id)

            out += [
                lambda: self._status(c, "Preparing"),
                start,
                lambda: self._status(c, "Charging"),
                meter,
                meter,
                stop,
                lambda: self._status(c, "Available"),
            ]
            return out
        txid = f"tx-{self.rng.getrandbits(48):012x}"
        seq = itertools.count()

        def event(kind: str, trigger: str, state: str) -> Any:
            return call201.TransactionEvent(
                event_type=kind,
                timestamp=ocpp_now(),
                trigger_reason=trigger,
                seq_no=next(seq),
                transaction_info={"transaction_id": txid, "charging_state": state},
                evse={"id": c, "connector_id": 1},
            )

        out += [
            lambda: self._status(c, "Occupied"),
            lambda: event("Started", "CablePluggedIn", "Charging"),
            lambda: event("Updated", "MeterValuePeriodic", "Charging"),
            lambda: event("Ended", "EVCommunicationLost", "Idle"),
            lambda: self._status(c, "Available"),
        ]
        return out
