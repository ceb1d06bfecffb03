"""The transactional outbox: state changes the municipal platform must receive.

Rows are written on the caller's connection, inside the transaction of the change itself, so a
change and its outbox row commit or vanish together. The municipal adapter drains them.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


class OutboxKind(enum.StrEnum):
    LOT_STATIC = "lot_static"
    LOT_DYNAMIC = "lot_dynamic"
    SPOT_STATUS = "spot_status"
    PASSAGE = "passage"
    CHARGER_STATUS = "charger_status"
    CHARGER_STATIC = "charger_static"


@dataclass(frozen=True)
class OutboxRow:
    kind: OutboxKind
    aggregate_id: str
    payload: Mapping[str, Any]


_INSERT = text(
    "INSERT INTO outbox (kind, aggregate_id, payload) VALUES (:kind, :aggregate_id, CAST(:payload AS json))"
)


async def write_outbox(conn: AsyncConnection, rows: Sequence[OutboxRow]) -> None:
    if not rows:
        return
    await conn.execute(
        _INSERT,
        [{"kind": r.kind.value, "aggregate_id": r.aggregate_id,
          "payload": json.dumps(r.payload, ensure_ascii=False, separators=(",", ":"), default=str)}
         for r in rows],
    )
