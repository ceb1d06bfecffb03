"""Charging domain types: validated station data, status reports, and what the store answers.

Enum-valued fields hold the numbers of the proto enums (ConnectorStandard, ConnectorStatus,
ConnectorErrorCode, StatusSource, OcppProtocol, BayFlagKind), as the parking service does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.common.errors import DomainError


@dataclass(frozen=True, slots=True)
class ConnectorSpec:
    id: str
    standard: int
    max_power_kw: float
    price_per_kwh_fen: int = 0
    service_fee_per_kwh_fen: int = 0
    parking_spot_id: str = ""
    ocpp_connector_id: int = 0


@dataclass(frozen=True)
class EvseSpec:
    id: str
    connectors: tuple[ConnectorSpec, ...]
    charge_point_id: str = ""
    ocpp_evse_id: int = 0


@dataclass(frozen=True)
class StationSpec:
    """A station's static data, validated."""

    id: str
    operator_id: str
    name: str
    lat: float
    lon: float
    status_ttl_s: int
    evses: tuple[EvseSpec, ...]
    address: str = ""
    parking_lot_id: str = ""

    def connectors(self) -> list[tuple[EvseSpec, ConnectorSpec]]:
        return [(e, c) for e in self.evses for c in e.connectors]


@dataclass(frozen=True, slots=True)
class ConnectorState:
    """A connector's stored state and when it expires (None: no reading yet)."""

    status: int
    error_code: int
    info: str
    source: int
    observed_at: datetime | None
    received_at: datetime | None
    status_since: datetime | None
    ttl_s: int
    expires_at: datetime | None

    def is_fresh(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at > now


@dataclass(frozen=True, slots=True)
class ConnectorView:
    """One connector with its place in the station and its state."""

    station_id: str
    evse_id: str
    spec: ConnectorSpec
    state: ConnectorState


@dataclass(frozen=True)
class StationRecord:
    spec: StationSpec
    states: dict[str, ConnectorState]  # by connector id
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Report:
    """One status report, validated. `actor` is the operator id (operator source) or the charge point
    id (OCPP sources): the store checks that the connector belongs to it."""

    connector_id: str
    status: int
    error_code: int
    info: str
    observed_at: datetime
    source: int
    actor: str
    ttl_s: int = 0  # 0 = the station's status_ttl_s (operator source)
    report_id: str = ""


@dataclass(frozen=True)
class Outcome:
    """The answer to one report: ACCEPTED / STALE / DUPLICATE / REJECTED (with `error`)."""

    result: int
    state: ConnectorState | None = None
    error: DomainError | None = None


@dataclass(frozen=True)
class FindQuery:
    lat: float
    lon: float
    radius_m: float
    standard: int  # 0 = any
    min_power_kw: float
    available_only: bool
    limit: int


@dataclass(frozen=True)
class StationMatch:
    station_id: str
    name: str
    operator_id: str
    lat: float
    lon: float
    address: str
    parking_lot_id: str
    distance_m: float
    connectors: list[ConnectorView]


@dataclass(frozen=True)
class ChargePointRecord:
    id: str
    station_id: str
    protocol: int
    heartbeat_s: int
    connected: bool
    last_seen_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class OcppConnector:
    """Where an OCPP (evse id, connector id) of a charge point lands in the suite."""

    connector_id: str
    station_id: str
    evse_id: str
    ocpp_evse_id: int
    ocpp_connector_id: int


@dataclass(frozen=True)
class BayFlag:
    id: int
    kind: int
    operator_id: str
    station_id: str
    connector_id: str
    parking_lot_id: str
    parking_spot_id: str
    connector_status: int
    since: datetime
    last_seen_at: datetime
    cleared_at: datetime | None


@dataclass(frozen=True)
class BayFlagCount:
    kind: int
    open: int
    total: int


@dataclass(frozen=True)
class BayFlagFilter:
    operator_id: str | None
    station_id: str | None
    parking_lot_id: str | None
    kinds: tuple[int, ...]
    open_only: bool


@dataclass(frozen=True)
class MeterSample:
    """What the suite keeps of an OCPP meter value: the latest energy register, power and SoC."""

    at: datetime
    energy_wh: float | None = None
    power_w: float | None = None
    soc_pct: float | None = None
