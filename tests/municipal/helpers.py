"""Outbox rows in the shapes the parking and charging services write, and small waiting helpers."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.municipal.model import OutboxRecord
from tests.waiting import assert_eventually

SECRET = "test-secret-0123456789abcdef"
BASE = (31.40, 121.49)

Row = tuple[str, str, dict[str, Any]]  # kind, aggregate id, payload


def iso(at: datetime) -> str:
    return at.isoformat()


def lot_static(lot_id: str, *, region: str = "310113", kind: str = "LOT_KIND_GARAGE", name: str = "宝山万达广场停车场",
               lat: float = BASE[0], lon: float = BASE[1]) -> dict[str, Any]:
    return {
        "lot_id": lot_id, "name": name, "address": "一二八纪念路988号", "region_code": region,
        "coordinate_system": "WGS-84", "lat": lat, "lon": lon, "line": None, "lot_kind": kind,
        "operator_id": "WANDA",
        "entrances": [{"id": "E1", "lat": lat + 0.0003, "lon": lon, "entry": True, "exit": False},
                      {"id": "X1", "lat": lat - 0.0003, "lon": lon, "entry": False, "exit": True}],
        "capacity": {"general": 300, "ev": 40, "disabled": 6, "reserved": 0}, "total_spaces": 346,
        "always_open": False,
        "opening_periods": [{"weekday": d, "open_minute": 420, "close_minute": 1380} for d in range(1, 8)],
        "price": {"free_minutes": 15, "first_hour_fen": 1000, "per_hour_fen": 500, "daily_cap_fen": 6000,
                  "description": "首小时10元"},
        "detection_type": "DETECTION_TYPE_BALANCING", "phone": "021-12345678",
    }


def lot_dynamic(lot_id: str, sequence: int, free_general: int = 120, *, observed: datetime | None = None,
                status: str = "SITE_STATUS_SPACES_AVAILABLE") -> dict[str, Any]:
    at = observed or datetime.now(UTC)
    return {
        "lot_id": lot_id, "sequence": sequence, "observed_at": iso(at), "received_at": iso(at + timedelta(seconds=1)),
        "capacity": {"general": 300, "ev": 40, "disabled": 6, "reserved": 0},
        "free": {"general": free_general, "ev": 10, "disabled": 2}, "status": status, "ttl_s": 600,
    }


def spot_status(lot_id: str, spot_id: str, status: str = "SPOT_STATUS_OCCUPIED") -> dict[str, Any]:
    return {"lot_id": lot_id, "spot_id": spot_id, "space_class": "general", "status": status,
            "observed_at": iso(datetime.now(UTC))}


def passage(lot_id: str, passage_id: str, plate: str = "沪A12345",
            colour: str = "PLATE_COLOUR_BLUE") -> dict[str, Any]:
    now = datetime.now(UTC)
    return {"lot_id": lot_id, "passage_id": passage_id, "direction": "PASSAGE_DIRECTION_ENTRY", "plate": plate,
            "plate_colour": colour, "lane": "E1", "passed_at": iso(now), "received_at": iso(now),
            "space_class": "general"}


def charger_status(station_id: str, connector_id: str, status: str = "CONNECTOR_STATUS_CHARGING") -> dict[str, Any]:
    return {"station_id": station_id, "evse_id": "1", "connector_id": connector_id, "status": status,
            "error_code": "CONNECTOR_ERROR_CODE_NO_ERROR", "observed_at": iso(datetime.now(UTC)),
            "lat": BASE[0], "lon": BASE[1], "parking_lot_id": ""}


def charger_static(station_id: str, *, lot_id: str | None = None, version: int = 1) -> dict[str, Any]:
    """A station as services/charging/payloads.py writes it: a DC EVSE with a GB/T and a CCS2 connector, an AC one
    with a Type 2 connector (on a parking spot when the station is in a lot)."""
    def connector(evse: str, cid: str, standard: str, kw: float, spot: str | None = None) -> dict[str, Any]:
        return {"evse_id": evse, "connector_id": cid, "standard": standard, "max_power_kw": kw,
                "price_per_kwh_fen": 120, "service_fee_per_kwh_fen": 40, "parking_spot_id": spot}

    return {"station_id": station_id, "operator_id": "STATEGRID", "name": "宝山充电站 & <1>",
            "address": "一二八纪念路988号", "coordinate_system": "WGS-84", "lat": BASE[0], "lon": BASE[1],
            "parking_lot_id": lot_id, "version": version, "updated_at": iso(datetime.now(UTC)),
            "connectors": [connector("E1", "1", "CONNECTOR_STANDARD_GBT_DC", 120.0),
                           connector("E1", "2", "CONNECTOR_STANDARD_CCS2", 120.0),
                           connector("E2", "3", "CONNECTOR_STANDARD_TYPE2", 7.0, "S1" if lot_id else None)]}


def record(kind: str, aggregate: str, payload: dict[str, Any], id_: int = 1,
           created_at: datetime | None = None) -> OutboxRecord:
    return OutboxRecord(id_, 1000 + id_, created_at or datetime.now(UTC), kind, aggregate, payload)


_INSERT = text("INSERT INTO outbox (kind, aggregate_id, payload) SELECT k, a, p::json "
               "FROM unnest(CAST(:k AS text[]), CAST(:a AS text[]), CAST(:p AS text[])) AS t(k, a, p) RETURNING id")


async def insert(engine: AsyncEngine, rows: Sequence[Row]) -> list[int]:
    """One transaction, rows in order; returns their outbox ids."""
    async with engine.begin() as conn:
        return await insert_on(conn, rows)


async def insert_on(conn: AsyncConnection, rows: Sequence[Row]) -> list[int]:
    """Rows in order on an open connection (its transaction decides when they commit)."""
    res = await conn.execute(_INSERT, {"k": [r[0] for r in rows], "a": [r[1] for r in rows],
                                       "p": [json.dumps(r[2], ensure_ascii=False) for r in rows]})
    return [r[0] for r in res]


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float = 20.0, every: float = 0.05,
                     what: str = "condition") -> None:
    await assert_eventually(check, what, within_s, every)


def _counted(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def polled_idle(destination: str, times: int = 2) -> None:
    """Returns once the lane has read the outbox `times` more times and found nothing to send: from the second on,
    each of those reads began after this call, so whatever was committed before it has been looked at."""
    labels = {"destination": destination}
    start = _counted("v2x_municipal_idle_polls_total", labels)
    await assert_eventually(lambda: _counted("v2x_municipal_idle_polls_total", labels) >= start + times,
                            f"{times} more idle polls of {destination}")


async def answered(destination: str, status: int, times: int = 2) -> None:
    """Returns once the destination has answered `times` more requests with `status`."""
    labels = {"destination": destination, "status": str(status)}
    start = _counted("v2x_municipal_requests_total", labels)
    await assert_eventually(lambda: _counted("v2x_municipal_requests_total", labels) >= start + times,
                            f"{times} more HTTP {status} answers from {destination}")
