"""Roadside persistence: the camera registry and per-minute counts (SQLAlchemy Core on the shared engine)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.errors import Aborted, NotFound
from services.roadside import convert
from services.roadside.model import (
    CameraRecord,
    CameraSpec,
    Congestion,
    LaneMinute,
    LineMinute,
    MinuteCounts,
)

_COLUMNS = "id, config::text AS config, version, created_at, updated_at"

_UPSERT = text(
    "INSERT INTO roadside_cameras (id, name, location, config) "
    "VALUES (:id, :name, ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)::geography, CAST(:config AS jsonb)) "
    "ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, location = EXCLUDED.location, config = EXCLUDED.config, "
    "version = roadside_cameras.version + 1, updated_at = now() "
    f"RETURNING {_COLUMNS}"
)
_UPDATE = text(
    "UPDATE roadside_cameras SET name = :name, location = ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)::geography, "
    "config = CAST(:config AS jsonb), version = version + 1, updated_at = now() "
    f"WHERE id = :id AND version = :expected RETURNING {_COLUMNS}"
)
_GET = text(f"SELECT {_COLUMNS} FROM roadside_cameras WHERE id = :id")
_VERSION = text("SELECT version FROM roadside_cameras WHERE id = :id")
_LIST = text(f"SELECT {_COLUMNS} FROM roadside_cameras WHERE id > :after ORDER BY id LIMIT :n")
_SAVE_COUNTS = text(
    "INSERT INTO roadside_counts (camera_id, minute_start, frames, lanes, lines) "
    "VALUES (:camera_id, :minute_start, :frames, CAST(:lanes AS jsonb), CAST(:lines AS jsonb)) "
    "ON CONFLICT (camera_id, minute_start) DO UPDATE SET frames = EXCLUDED.frames, lanes = EXCLUDED.lanes, "
    "lines = EXCLUDED.lines"
)
_COUNTS = text(
    "SELECT minute_start, frames, lanes::text AS lanes, lines::text AS lines FROM roadside_counts "
    "WHERE camera_id = :camera_id AND minute_start >= :start AND minute_start < :end ORDER BY minute_start"
)


def _record(row: Row[Any]) -> CameraRecord:
    _, spec = convert.camera_from_json(row.config)
    return CameraRecord(spec, row.version, row.created_at, row.updated_at, row.config)


def _lanes_json(m: MinuteCounts) -> str:
    return json.dumps({lane.lane_id: {"vehicles": lane.vehicles, "wrong_way": lane.wrong_way,
                                      "max_queue_m": lane.max_queue_m, "mean_speed_mps": lane.mean_speed_mps,
                                      "congestion": int(lane.congestion)} for lane in m.lanes})


def _lines_json(m: MinuteCounts) -> str:
    return json.dumps({line.line_id: [line.positive, line.negative] for line in m.lines})


class CameraStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def configure(self, spec: CameraSpec, config_json: str, expected_version: int) -> CameraRecord:
        params = {"id": spec.id, "name": spec.name, "lat": spec.lat, "lon": spec.lon, "config": config_json}
        async with self.engine.begin() as conn:
            if expected_version:
                row = (await conn.execute(_UPDATE, {**params, "expected": expected_version})).first()
                if row is None:
                    current = (await conn.execute(_VERSION, {"id": spec.id})).scalar_one_or_none()
                    if current is None:
                        raise NotFound(f"camera {spec.id} does not exist (expected_version {expected_version})")
                    raise Aborted(f"camera {spec.id} is at version {current}, not {expected_version}; re-read it")
            else:
                row = (await conn.execute(_UPSERT, params)).one()
        return _record(row)

    async def get(self, camera_id: str) -> CameraRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(_GET, {"id": camera_id})).first()
        return None if row is None else _record(row)

    async def version(self, camera_id: str) -> int | None:
        async with self.engine.connect() as conn:
            value = (await conn.execute(_VERSION, {"id": camera_id})).scalar_one_or_none()
        return None if value is None else int(value)

    async def list_cameras(self, after: str, limit: int) -> list[CameraRecord]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(_LIST, {"after": after, "n": limit})).all()
        return [_record(r) for r in rows]

    async def save_counts(self, camera_id: str, minutes: Sequence[MinuteCounts]) -> None:
        if not minutes:
            return
        async with self.engine.begin() as conn:
            await conn.execute(_SAVE_COUNTS, [
                {"camera_id": camera_id, "minute_start": m.minute_start, "frames": m.frames, "lanes": _lanes_json(m),
                 "lines": _lines_json(m)} for m in minutes])

    async def counts(self, camera_id: str, start: datetime, end: datetime) -> list[MinuteCounts]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(_COUNTS, {"camera_id": camera_id, "start": start, "end": end})).all()
        out = []
        for r in rows:
            lanes = json.loads(r.lanes)
            lines = json.loads(r.lines)
            out.append(MinuteCounts(
                r.minute_start.astimezone(UTC), r.frames,
                tuple(LaneMinute(k, v["vehicles"], v["wrong_way"], v["max_queue_m"], v["mean_speed_mps"],
                                 Congestion(v["congestion"])) for k, v in lanes.items()),
                tuple(LineMinute(k, v[0], v[1]) for k, v in lines.items()),
            ))
        return out
