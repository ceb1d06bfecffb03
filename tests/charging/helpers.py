"""Builders for charging requests and OCPP clients in tests."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from google.protobuf.timestamp_pb2 import Timestamp
from v2x.charging.v1 import charging_pb2 as pb
from v2x.common.v1 import common_pb2 as cpb

from load.chargepoints import Client16, Client201, basic, ocpp_client, ocpp_now, open_ws
from tests.waiting import assert_eventually

if TYPE_CHECKING:
    from services.charging.gateway import OcppGateway

GBT_DC, GBT_AC, CCS2 = pb.CONNECTOR_STANDARD_GBT_DC, pb.CONNECTOR_STANDARD_GBT_AC, pb.CONNECTOR_STANDARD_CCS2
TYPE2, CHADEMO = pb.CONNECTOR_STANDARD_TYPE2, pb.CONNECTOR_STANDARD_CHADEMO
AVAILABLE, CHARGING, UNKNOWN = pb.CONNECTOR_STATUS_AVAILABLE, pb.CONNECTOR_STATUS_CHARGING, pb.CONNECTOR_STATUS_UNKNOWN


def ts(at: datetime | None = None, *, seconds_ago: float = 0) -> Timestamp:
    t = Timestamp()
    t.FromDatetime((at or datetime.now(UTC)) - timedelta(seconds=seconds_ago))
    return t


def station(sid: str, operator: str = "OPA", *, lat: float = 31.40, lon: float = 121.49, ttl_s: int = 0,
            lot: str = "", plugs: Sequence[tuple[int, float]] = ((GBT_DC, 120.0),), charge_point: str = "",
            ocpp201: bool = False, spots: Sequence[str] = ()) -> pb.Station:
    """One EVSE per plug, each with one connector `<sid>-C<n>`; all driven by `charge_point` if given
    (OCPP 1.6: connector ids 1..n; 2.0.1: EVSE ids 1..n, connector 1 on each)."""
    evses = []
    for i, (standard, kw) in enumerate(plugs, start=1):
        c = pb.Connector(id=f"{sid}-C{i}", standard=standard, max_power_kw=kw,  # type: ignore[arg-type]
                         price_per_kwh_fen=120, service_fee_per_kwh_fen=60,
                         parking_spot_id=spots[i - 1] if i <= len(spots) else "")
        e = pb.Evse(id=f"E{i}", charge_point_id=charge_point)
        if charge_point:
            c.ocpp_connector_id = 1 if ocpp201 else i
            e.ocpp_evse_id = i if ocpp201 else 0
        e.connectors.append(c)
        evses.append(e)
    return pb.Station(id=sid, operator_id=operator, name=f"Station {sid}", location=cpb.LatLon(lat=lat, lon=lon),
                      address="宝山区友谊路1号", parking_lot_id=lot, status_ttl_s=ttl_s, evses=evses)


def report(connector_id: str, status: int, *, seconds_ago: float = 0, at: datetime | None = None, ttl_s: int = 0,
           error: int = 0, info: str = "", report_id: str = "") -> pb.StatusReport:
    return pb.StatusReport(connector_id=connector_id, status=status, error_code=error,  # type: ignore[arg-type]
                           info=info, observed_at=ts(at, seconds_ago=seconds_ago), ttl_s=ttl_s, report_id=report_id)


def connector_state(st: pb.Station, connector_id: str) -> pb.ConnectorState:
    for e in st.evses:
        for c in e.connectors:
            if c.id == connector_id:
                return c.state
    raise AssertionError(f"{connector_id} not in station {st.id}")


# ----- OCPP clients: the charge point side, shared with the soak and the simulator -------------------------

__all__ = ["Client16", "Client201", "basic", "ocpp_client", "ocpp_now", "open_ws"]


async def arrival_recorded(gateway: OcppGateway, cp_id: str, since: datetime) -> None:
    """Returns once the gateway has flushed an arrival of `cp_id` at `since` or later into its row and the index."""
    never = datetime.min.replace(tzinfo=UTC)
    await assert_eventually(lambda: gateway.recorded.get(cp_id, never) >= since, f"{cp_id}'s arrival recorded")
