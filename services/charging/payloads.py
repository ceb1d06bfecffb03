"""Outbox payloads for charging changes (kind `charger_status`, aggregate id = station id): the suite's
canonical record of a connector's status as the city must see it, self-describing (station, place,
plug, power) so the municipal adapter needs no other read. Enum values are the proto names (as in the
parking payloads; the contract is documented in services/municipal/checks.py). Coordinates are WGS-84
and say so.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from v2x.charging.v1 import charging_pb2 as pb

from services.charging.mapping import to_ocpi
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
