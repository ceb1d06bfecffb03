"""The busiest reads (the FindAvailable / FindChargers PostGIS queries, the nearby indexes' loads), on SQLAlchemy or,
as a fast path (FastPath.DRIVER_READS), straight on the connection's asyncpg driver without SQLAlchemy's result
processing. Either way the rows read as asyncpg records do: by position, by column name, and unpacked."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, TextClause
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common.fast_paths import FastPath, on


@dataclass(frozen=True)
class Query:
    """A text() statement, and the same as asyncpg takes it ($1, $2, ...) with its parameter names in order."""

    clause: TextClause
    sql: str
    names: tuple[str, ...]

    @classmethod
    def of(cls, clause: TextClause) -> Query:
        compiled = clause.compile(dialect=asyncpg_dialect())  # type: ignore[no-untyped-call]
        return cls(clause, str(compiled), tuple(compiled.positiontup or ()))


class _Record:
    """A SQLAlchemy row read as an asyncpg record is."""

    __slots__ = ("_row",)

    def __init__(self, row: Row[Any]) -> None:
        self._row = row

    def __getitem__(self, key: int | str) -> Any:
        return self._row._mapping[key] if isinstance(key, str) else self._row[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._row)

    def __len__(self) -> int:
        return len(self._row)


async def fetch(conn: AsyncConnection, query: Query, params: Mapping[str, Any]) -> Sequence[Any]:
    """The rows of `query` (records: `r[0]`, `r["name"]`, unpacking)."""
    if not on(FastPath.DRIVER_READS):
        return [_Record(row) for row in await conn.execute(query.clause, params)]
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None
    try:
        return list(await driver.fetch(query.sql, *[params[n] for n in query.names]))
    except BaseException:
        if driver.is_closed():  # SQLAlchemy did not see the failure: keep a dead connection out of the pool
            await conn.invalidate()
        raise
