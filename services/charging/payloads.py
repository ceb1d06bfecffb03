"""Outbox payloads for charging changes (aggregate id = station id): `charger_status`, the suite's canonical
record of a connector's status as the city must see it, self-describing (station, place, plug, power) so the
municipal adapter needs no other read; and `charger_static`, a station's static data as registered or updated
(site, operator, location, every connector with its plug and power), the table that status refers to. Enum values
are the proto names (as in the parking payloads; the contract is documented in services/municipal/checks.py).
Coordinates are WGS-84 and say so.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from v2x.charging.v1 import charging_pb2 as pb

from services.charging.mapping import to_ocpi
from services.charging.model import StationRecord
from services.charging.vocab import ConnectorErrorCode, ConnectorStatus


def charger_status(*, station_id: str, operator_id: str, evse_id: str, connector_id: str, standard: int,
                   max_power_kw: float, lat: float, lon: float, parking_lot_id: str, parking_spot_id: str,
                   status: int, error_code: int, info: str, source: int, observed_at: datetime | None,
                   received_at: datetime, expired: bool = False) -> dict[str, Any]:
    unknown = status == ConnectorStatus.UNKNOWN
    return {
        "station_id": station_id, "operator_id": operator_id, "evse_id": evse_id, "connector_id": connector_id,
        "standard": pb.ConnectorStandard.Name(standard),  # type: ignore[arg-type]
        "max_power_kw": max_power_kw, "coordinate_system": "WGS-84", "lat": lat, "lon": lon,
        "parking_lot_id": parking_lot_id or None, "parking_spot_id": parking_spot_id or None,
        "status": pb.ConnectorStatus.Name(status),  # type: ignore[arg-type]
        "ocpi_status": to_ocpi(status),
        "error_code": None if unknown else pb.ConnectorErrorCode.Name(
            error_code or ConnectorErrorCode.NO_ERROR),  # type: ignore[arg-type]
        "info": "" if unknown else info,
        "source": pb.StatusSource.Name(source),  # type: ignore[arg-type]
        "observed_at": observed_at.isoformat() if observed_at else None, "received_at": received_at.isoformat(),
        # True when the reading expired (charger offline or TTL passed): the status is UNKNOWN.
        "expired": expired,
    }


def charger_static(record: StationRecord) -> dict[str, Any]:
    """A station as it stands after a create or update: the whole station (a receiver replaces what it held of it, so
    a connector that is gone is gone there too)."""
    spec = record.spec
    return {
        "station_id": spec.id, "operator_id": spec.operator_id, "name": spec.name, "address": spec.address,
        "coordinate_system": "WGS-84", "lat": spec.lat, "lon": spec.lon, "parking_lot_id": spec.parking_lot_id or None,
        "version": record.version, "updated_at": record.updated_at.isoformat(),
        "connectors": [
            {"evse_id": e.id, "connector_id": c.id,
             "standard": pb.ConnectorStandard.Name(c.standard),  # type: ignore[arg-type]
             "max_power_kw": c.max_power_kw, "price_per_kwh_fen": c.price_per_kwh_fen,
             "service_fee_per_kwh_fen": c.service_fee_per_kwh_fen, "parking_spot_id": c.parking_spot_id or None}
            for e, c in spec.connectors()],
    }
