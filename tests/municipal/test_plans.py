"""The drain's chunk read keeps its shape under PostgreSQL's generic plans (prepared statements switch to them
after five executions) and whatever the table's statistics: the per-lot order check is one range of the
(aggregate_id, txid, id) index per lot of the chunk, never a scan of the outbox."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import asyncpg

from services.municipal import store


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


async def test_the_per_lot_order_check_is_an_index_range_per_lot_under_a_generic_plan(database_url: str) -> None:
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute("PREPARE chunk (text, bigint, text[], bigint[], bigint) AS " + store._CHUNK)
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        raw = await conn.fetchval(
            "EXPLAIN (FORMAT JSON) EXECUTE chunk('0', 0, '{lot_dynamic,spot_status}', '{}', 4000)")
    finally:
        await conn.close()
    nodes = list(_nodes(json.loads(raw)[0]["Plan"]))
    outbox = [n for n in nodes if n.get("Relation Name") == "outbox" or n.get("Index Name", "").startswith("outbox")]
    assert not [n for n in outbox if n["Node Type"] == "Seq Scan"], outbox
    probes = [n for n in outbox if n.get("Index Name") == "outbox_aggregate_txid_id"]
    # Parameterised by the chunk's lot and its last row: it runs once per lot, as a range of the index.
    assert probes and all("aggregate_id" in n["Index Cond"] and "txid" in n["Index Cond"] for n in probes), outbox
