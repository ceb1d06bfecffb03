"""The report path's statements keep their shape under PostgreSQL's generic plans (which prepared statements
switch to after five executions) and on tables without statistics (a fresh deployment): the candidate
incidents of a batch are one index probe per report, never every open incident against every report."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import asyncpg

from services.idps import store


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


async def _generic_plan(database_url: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute("PREPARE candidates (smallint[], text[], text[], float8[], float8[], timestamptz[], "
                           "timestamptz[], float8, timestamptz) AS " + store._PG_DUPS_AND_CANDIDATES)
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        # EXPLAIN takes no bind parameters: the batch of three reports is written out.
        raw = await conn.fetchval(
            "EXPLAIN (FORMAT JSON) EXECUTE candidates('{4,4,2}', '{cam-1,cam-2,officer-1}', '{k1,k2,k3}', "
            "'{31.30,31.31,31.32}', '{121.50,121.51,121.52}', "
            "'{2026-01-01T00:00:00Z,2026-01-01T00:00:00Z,2026-01-01T00:00:00Z}', "
            "'{2026-01-01T00:04:00Z,2026-01-01T00:04:00Z,2026-01-01T00:04:00Z}', 101, '2026-01-01T00:00:00Z')")
    finally:
        await conn.close()
    return list(_nodes(json.loads(raw)[0]["Plan"]))


async def test_candidates_are_an_index_probe_per_report_under_a_generic_plan(database_url: str) -> None:
    nodes = await _generic_plan(database_url)
    incidents = [n for n in nodes if n.get("Relation Name") == "idps_incidents"]
    assert incidents, nodes
    assert not [n for n in incidents if n["Node Type"] in ("Seq Scan", "Bitmap Heap Scan")], incidents
    # The spatial probe is parameterised by the report (q.lat / q.lon), so it runs once per report.
    probes = [n for n in incidents if "_st_expand" in n.get("Index Cond", "")]
    assert probes and all("q.lon" in n["Index Cond"] and "q.lat" in n["Index Cond"] for n in probes), incidents


async def test_duplicate_lookup_uses_the_idempotency_index_under_a_generic_plan(database_url: str) -> None:
    nodes = await _generic_plan(database_url)
    reports = [n for n in nodes if n.get("Relation Name") == "idps_reports"]
    assert reports and all(n["Node Type"] == "Index Scan" for n in reports), reports
