"""OCPP handlers: what the central system answers a charge point, for OCPP 1.6J and 2.0.1.

Built on the `ocpp` package (message framing, JSON-schema validation of every request and response,
CALLERROR generation). A handler translates the message into the suite's vocabulary (mapping.py) and
hands status to the same writer as operator pushes; the reply goes out after the commit. Messages of
one charge point are handled one at a time, in order (the `ocpp` receive loop awaits each handler).

Choices where OCPP leaves room:
- every authenticated charge point is served, booted on this connection or not (chargers do not boot
  again after a mere reconnect); BootNotification is answered Rejected, and the connection closed,
  when the registration was removed or its password reset since the connection opened;
- id tokens are accepted (this suite keeps no authorisation lists) and stored only as a SHA-256 digest;
- a StatusNotification for connector 0 (the whole charge point, OCPP 1.6) changes no connector;
- a status for a connector the station does not declare is answered PropertyConstraintViolation;
- OCPP 2.0.1 TransactionEvent's chargingState refines an Occupied connector (Charging, SuspendedEV,
  SuspendedEVSE, EVConnected); an Ended event leaves it FINISHING until the charger reports the next
  status, unless the EV already left (then the charger's own StatusNotification says what follows).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ocpp.exceptions import FormationViolationError, InternalError, PropertyConstraintViolationError
from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16Base
from ocpp.v16 import call_result as result16
from ocpp.v16 import datatypes as types16
from ocpp.v16.enums import Action as Action16
from ocpp.v16.enums import AuthorizationStatus, Measurand, RegistrationStatus
from ocpp.v201 import ChargePoint as ChargePoint201Base
from ocpp.v201 import call_result as result201
from ocpp.v201 import datatypes as types201
from ocpp.v201.enums import Action as Action201
from ocpp.v201.enums import AuthorizationStatusEnumType, RegistrationStatusEnumType

from services.charging import mapping
from services.charging.model import MeterSample, OcppConnector, Report
from services.charging.status import clamp_ocpp_time, ocpp_ttl_s
from services.charging.vocab import ConnectorErrorCode, ConnectorStatus, OcppProtocol, StatusSource

if TYPE_CHECKING:
    from services.charging.group_commit import StatusWriter
    from services.charging.store import ChargePointAuth, ChargingStore

log = logging.getLogger("v2x.charging.ocpp")
F = TypeVar("F", bound=Callable[..., Any])
S = ConnectorStatus
# The measurands read from meter values (1.6 and 2.0.1 spell them the same; their enums are str enums).
ENERGY = Measurand.energy_active_import_register.value
POWER = Measurand.power_active_import.value
SOC = Measurand.soc.value
# TransactionEvent triggers and stop reasons that say the vehicle has already gone.
_EV_GONE_TRIGGERS = frozenset({"EVDeparted", "EVCommunicationLost"})
_EV_GONE_REASONS = frozenset({"EVDisconnected"})


def handles(action: str) -> Callable[[F], F]:
    """`ocpp.routing.on`, typed."""
    return cast(Callable[[F], F], on(action))


def ocpp_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_time(value: str | None, field: str) -> datetime | None:
    """An OCPP date-time (RFC 3339; a naive value is taken as UTC)."""
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise FormationViolationError(description=f"{field} {value[:40]!r} is not an RFC 3339 date-time") from None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)


def token_digest(token: str | None) -> str:
    return hashlib.sha256(token.encode()).hexdigest() if token else ""


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def meter_sample(values: list[dict[str, Any]] | None, default_at: datetime) -> MeterSample | None:
    """The newest energy register, power and SoC among OCPP meter values (1.6: unit on the sample,
    value a string; 2.0.1: unitOfMeasure with a power-of-ten multiplier, value a number)."""
    if not values:
        return None
    energy = power = soc = None
    at = default_at
    for mv in values:
        at = parse_time(mv.get("timestamp"), "meterValue.timestamp") or at
        for sv in mv.get("sampled_value", []):
            value = _number(sv.get("value"))
            if value is None:
                continue
            measurand = sv.get("measurand", ENERGY)
            uom = sv.get("unit_of_measure") or {}
            unit = str(sv.get("unit") or uom.get("unit") or "")
            value *= 10 ** int(uom.get("multiplier", 0))
            if measurand == ENERGY and sv.get("phase") is None:
                energy = value * 1000 if unit.lower() == "kwh" else value
            elif measurand == POWER and sv.get("phase") is None:
                power = value * 1000 if unit.lower() == "kw" else value
            elif measurand == SOC:
                soc = value
    if energy is None and power is None and soc is None:
        return None
    return MeterSample(at, energy, power, soc)


@dataclass(frozen=True)
class SessionContext:
    """What a charge point's session may use of the gateway that accepted it, and nothing more."""

    store: ChargingStore
    writer: StatusWriter
    clock: Callable[[], datetime]
    heartbeat_s: int
    heard: Callable[[str], None]  # a message from this charge point arrived
    seen: Callable[[dict[str, datetime]], Awaitable[None]]  # record when charge points were last heard from
    close_soon: Callable[[str, str], None]  # close this charge point's connection (id, reason)


class _Common:
    """What both protocol versions share: the session's identity, its connectors, and status writes."""

    protocol: int
    source: int
    id: str

    def __init__(self, cp_id: str, connection: Any, gateway: SessionContext, auth: ChargePointAuth,
                 connectors: list[OcppConnector]) -> None:
        super().__init__(cp_id, connection, response_timeout=30)  # type: ignore[call-arg]
        self.gateway = gateway
        self.auth = auth
        self._set_connectors(connectors)
        self._transactions: dict[str, OcppConnector] = {}

    def _set_connectors(self, connectors: list[OcppConnector]) -> None:
        self.connectors = {(c.ocpp_evse_id, c.ocpp_connector_id): c for c in connectors}
        self.by_connector_id = {c.ocpp_connector_id: c for c in connectors}

    async def route_message(self, raw_msg: str) -> None:
        self.gateway.heard(self.id)
        await super().route_message(raw_msg)  # type: ignore[misc]

    @property
    def now(self) -> datetime:
        return self.gateway.clock()

    async def _reload(self) -> None:
        self._set_connectors(await self.gateway.store.ocpp_connectors(self.id))

    async def _target(self, evse_id: int | None, connector_id: int | None) -> OcppConnector:
        """The suite's connector for an OCPP address; the station may have changed since the connect."""
        for attempt in range(2):
            found = self._lookup(evse_id, connector_id)
            if found is not None:
                return found
            if attempt == 0:
                await self._reload()
        where = f"evse {evse_id} connector {connector_id}" if evse_id is not None else f"connector {connector_id}"
        raise PropertyConstraintViolationError(
            description=f"{where} is not declared for charge point {self.id} in its station")

    def _lookup(self, evse_id: int | None, connector_id: int | None) -> OcppConnector | None:
        if evse_id is None:
            return self.by_connector_id.get(connector_id or 0)
        if connector_id is not None:
            return self.connectors.get((evse_id, connector_id))
        on_evse = [c for (e, _), c in self.connectors.items() if e == evse_id]
        return on_evse[0] if len(on_evse) == 1 else None

    async def _report(self, target: OcppConnector, status: int, error_code: int, info: str,
                      at: datetime | None) -> None:
        now = self.now
        report = Report(target.connector_id, status, error_code, info[:500], clamp_ocpp_time(at, now), self.source,
                        self.id, ocpp_ttl_s(self.gateway.heartbeat_s))
        outcome = (await self.gateway.writer.submit([report]))[0]
        if outcome.error is not None:
            log.warning("status refused", extra={"charge_point": self.id, "connector": target.connector_id,
                                                 "error": outcome.error.message})
            raise InternalError(description=outcome.error.message)

    async def _boot(self, vendor: str, model: str, firmware: str) -> bool:
        now = self.now
        current = await self.gateway.store.charge_point_auth(self.id)
        if current is None or current.password_hash != self.auth.password_hash:
            log.warning("boot of a charge point no longer registered", extra={"charge_point": self.id})
            self.gateway.close_soon(self.id, "registration removed or password reset")
            return False
        if await self.gateway.store.charge_point_booted(self.id, vendor, model, firmware, self.gateway.heartbeat_s,
                                                        now):
            await self.gateway.seen({self.id: now})
        await self._reload()
        log.info("charge point booted", extra={"charge_point": self.id, "vendor": vendor, "model": model})
        return True

    async def _start(self, target: OcppConnector, transaction_id: str | None, token: str | None,
                     at: datetime | None, meter_wh: float | None) -> int:
        started = at or self.now
        return await self.gateway.store.start_session(self.id, target.connector_id, transaction_id,
                                                      token_digest(token), started, meter_wh)


class ChargePoint16(_Common, ChargePoint16Base):  # type: ignore[misc]
    protocol = OcppProtocol.OCPP16J
    source = StatusSource.OCPP16

    @handles(Action16.boot_notification)
    async def on_boot_notification(self, charge_point_vendor: str, charge_point_model: str,
                                   firmware_version: str = "", **_: Any) -> Any:
        ok = await self._boot(charge_point_vendor, charge_point_model, firmware_version)
        return result16.BootNotification(current_time=ocpp_time(self.now), interval=self.gateway.heartbeat_s,
                                         status=RegistrationStatus.accepted if ok else RegistrationStatus.rejected)

    @handles(Action16.heartbeat)
    async def on_heartbeat(self, **_: Any) -> Any:
        return result16.Heartbeat(current_time=ocpp_time(self.now))

    @handles(Action16.status_notification)
    async def on_status_notification(self, connector_id: int, error_code: str, status: str,
                                     timestamp: str | None = None, info: str | None = None,
                                     vendor_error_code: str | None = None, **_: Any) -> Any:
        at = parse_time(timestamp, "timestamp")
        if connector_id == 0:
            log.debug("main controller status", extra={"charge_point": self.id, "status": status})
            return result16.StatusNotification()
        target = await self._target(None, connector_id)
        canonical, error = mapping.ocpp16_status(status, error_code)
        text = " ".join(t for t in (info, f"vendor error {vendor_error_code}" if vendor_error_code else None) if t)
        await self._report(target, canonical, error, text, at)
        return result16.StatusNotification()

    @handles(Action16.authorize)
    async def on_authorize(self, id_tag: str, **_: Any) -> Any:
        return result16.Authorize(id_tag_info=types16.IdTagInfo(status=AuthorizationStatus.accepted))

    @handles(Action16.start_transaction)
    async def on_start_transaction(self, connector_id: int, id_tag: str, meter_start: int, timestamp: str,
                                   **_: Any) -> Any:
        target = await self._target(None, connector_id)
        session = await self._start(target, None, id_tag, parse_time(timestamp, "timestamp"), float(meter_start))
        return result16.StartTransaction(transaction_id=session,
                                         id_tag_info=types16.IdTagInfo(status=AuthorizationStatus.accepted))

    @handles(Action16.stop_transaction)
    async def on_stop_transaction(self, meter_stop: int, timestamp: str, transaction_id: int,
                                  reason: str | None = None, id_tag: str | None = None,
                                  transaction_data: list[dict[str, Any]] | None = None, **_: Any) -> Any:
        stopped = parse_time(timestamp, "timestamp") or self.now
        found = await self.gateway.store.update_session(
            self.id, session_id=transaction_id, meter=meter_sample(transaction_data, stopped), stopped_at=stopped,
            meter_stop_wh=float(meter_stop), stop_reason=reason or "Local")
        if not found:
            log.warning("stop of an unknown transaction",
                        extra={"charge_point": self.id, "transaction": transaction_id})
        info = types16.IdTagInfo(status=AuthorizationStatus.accepted) if id_tag else None
        return result16.StopTransaction(id_tag_info=info)

    @handles(Action16.meter_values)
    async def on_meter_values(self, connector_id: int, meter_value: list[dict[str, Any]],
                              transaction_id: int | None = None, **_: Any) -> Any:
        sample = meter_sample(meter_value, self.now)
        if transaction_id is not None and sample is not None:
            await self.gateway.store.update_session(self.id, session_id=transaction_id, meter=sample)
        return result16.MeterValues()


class ChargePoint201(_Common, ChargePoint201Base):  # type: ignore[misc]
    protocol = OcppProtocol.OCPP201
    source = StatusSource.OCPP201

    @handles(Action201.boot_notification)
    async def on_boot_notification(self, charging_station: dict[str, Any], reason: str, **_: Any) -> Any:
        ok = await self._boot(charging_station.get("vendor_name", ""), charging_station.get("model", ""),
                              charging_station.get("firmware_version", ""))
        return result201.BootNotification(
            current_time=ocpp_time(self.now), interval=self.gateway.heartbeat_s,
            status=RegistrationStatusEnumType.accepted if ok else RegistrationStatusEnumType.rejected)

    @handles(Action201.heartbeat)
    async def on_heartbeat(self, **_: Any) -> Any:
        return result201.Heartbeat(current_time=ocpp_time(self.now))

    @handles(Action201.status_notification)
    async def on_status_notification(self, timestamp: str, connector_status: str, evse_id: int, connector_id: int,
                                     **_: Any) -> Any:
        at = parse_time(timestamp, "timestamp")
        target = await self._target(evse_id, connector_id)
        await self._report(target, mapping.ocpp201_status(connector_status), ConnectorErrorCode.NO_ERROR, "",
                           at)
        return result201.StatusNotification()

    @handles(Action201.authorize)
    async def on_authorize(self, id_token: dict[str, Any], **_: Any) -> Any:
        return result201.Authorize(id_token_info=types201.IdTokenInfoType(status=AuthorizationStatusEnumType.accepted))

    @handles(Action201.meter_values)
    async def on_meter_values(self, evse_id: int, meter_value: list[dict[str, Any]], **_: Any) -> Any:
        return result201.MeterValues()

    @handles(Action201.transaction_event)
    async def on_transaction_event(self, event_type: str, timestamp: str, trigger_reason: str, seq_no: int,
                                   transaction_info: dict[str, Any], meter_value: list[dict[str, Any]] | None = None,
                                   evse: dict[str, Any] | None = None, id_token: dict[str, Any] | None = None,
                                   **_: Any) -> Any:
        at = parse_time(timestamp, "timestamp") or self.now
        tx = str(transaction_info["transaction_id"])
        target = await self._transaction_connector(tx, evse)
        sample = meter_sample(meter_value, at)
        state = str(transaction_info.get("charging_state") or "")
        if event_type == "Started":
            await self._start(target, tx, (id_token or {}).get("id_token"), at,
                              sample.energy_wh if sample else None)
        ended = event_type == "Ended"
        await self.gateway.store.update_session(
            self.id, transaction_id=tx, meter=sample, charging_state=state, stopped_at=at if ended else None,
            meter_stop_wh=sample.energy_wh if ended and sample else None,
            stop_reason=str(transaction_info.get("stopped_reason") or ("Local" if ended else "")))
        if ended:
            self._transactions.pop(tx, None)
            ev_gone = (trigger_reason in _EV_GONE_TRIGGERS
                       or transaction_info.get("stopped_reason") in _EV_GONE_REASONS)
            if not ev_gone:
                await self._report(target, S.FINISHING, ConnectorErrorCode.NO_ERROR, "", at)
        elif state in mapping.OCPP201_CHARGING_STATE and state != "Idle":
            await self._report(target, mapping.OCPP201_CHARGING_STATE[state], ConnectorErrorCode.NO_ERROR, "",
                               at)
        if id_token:
            return result201.TransactionEvent(
                id_token_info=types201.IdTokenInfoType(status=AuthorizationStatusEnumType.accepted))
        return result201.TransactionEvent()

    async def _transaction_connector(self, tx: str, evse: dict[str, Any] | None) -> OcppConnector:
        if evse is not None:
            target = await self._target(int(evse["id"]), evse.get("connector_id"))
            self._transactions[tx] = target
            return target
        known = self._transactions.get(tx)
        if known is not None:
            return known
        connector_id = await self.gateway.store.session_connector(self.id, tx)
        for c in self.connectors.values():
            if c.connector_id == connector_id:
                self._transactions[tx] = c
                return c
        raise PropertyConstraintViolationError(
            description=f"transaction {tx} is unknown here and the event names no evse")
