"""Builders for charging requests and OCPP clients in tests."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from ocpp.v16 import ChargePoint as Client16Base
from ocpp.v201 import ChargePoint as Client201Base
from v2x.charging.v1 import charging_pb2 as pb
from v2x.common.v1 import common_pb2 as cpb
from websockets.asyncio.client import ClientConnection, connect

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


# ----- OCPP clients (the `ocpp` package's charge point side) ---------------------------------


class Client16(Client16Base):  # type: ignore[misc]
    """An OCPP 1.6J charge point that only sends (no handlers for central system requests)."""


class Client201(Client201Base):  # type: ignore[misc]
    """An OCPP 2.0.1 charging station that only sends."""


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def ocpp_now(seconds_ago: float = 0) -> str:
    at = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    return at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def open_ws(url: str, cp_id: str, password: str | None, subprotocol: str) -> ClientConnection:
    headers = {"Authorization": basic(cp_id, password)} if password is not None else {}
    return await connect(f"{url}/{cp_id}", subprotocols=[subprotocol], additional_headers=headers,  # type: ignore[list-item]
                         open_timeout=10, compression=None)


@contextlib.asynccontextmanager
async def ocpp_client(url: str, cp_id: str, password: str, version: str = "1.6") -> AsyncIterator[Any]:
    """A connected charge point; its receive loop runs until the block ends."""
    ws = await open_ws(url, cp_id, password, "ocpp1.6" if version == "1.6" else "ocpp2.0.1")
    cp = (Client16 if version == "1.6" else Client201)(cp_id, ws, response_timeout=10)
    task = asyncio.create_task(cp.start())
    try:
        yield cp
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await ws.close()
