"""The busiest reads straight to the driver: one statement, no SQLAlchemy result processing.

A driver query through SQLAlchemy costs about twice the CPU of the same query through asyncpg: the
statement is compiled once here (`positional`), then `fetch` runs it on the connection's asyncpg
connection and returns asyncpg records (positional and by-name access).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncConnection

Compiled = tuple[str, list[str]]


def positional(statement: Any) -> Compiled:
    """A text() statement as asyncpg takes it ($1, $2, ...) and its parameter names in that order."""
    compiled = statement.compile(dialect=asyncpg_dialect())  # type: ignore[no-untyped-call]
    return str(compiled), list(compiled.positiontup or ())


async def fetch(conn: AsyncConnection, statement: Compiled, params: Mapping[str, Any]) -> list[Any]:
    sql, names = statement
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None
    try:
        return list(await driver.fetch(sql, *[params[n] for n in names]))
    except BaseException:
        if driver.is_closed():  # SQLAlchemy did not see the failure: keep a dead connection out of the pool
            await conn.invalidate()
        raise
