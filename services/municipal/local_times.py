"""Times as the platform reads them: local (UTC+8, China keeps no daylight saving) ISO-8601 with offset."""

from __future__ import annotations

import functools
from datetime import datetime

from services.municipal.model import LOCAL_TZ


@functools.lru_cache(maxsize=4096)
def changed_at(at: datetime) -> str:
    """When a record was written, to the millisecond. Rows of one transaction share created_at: formatted once."""
    return at.astimezone(LOCAL_TZ).isoformat(timespec="milliseconds")


def local_time(value: str | None) -> str | None:
    """An ISO-8601 time from a payload as the platform's local time (UTC+8), to the second."""
    if value is None:
        return None
    return _local_time(value)


@functools.lru_cache(maxsize=8192)
def _local_time(value: str) -> str:
    return datetime.fromisoformat(value).astimezone(LOCAL_TZ).isoformat(timespec="seconds")


def parsed_time(value: str) -> tuple[datetime, str] | None:
    """A payload time and its local (UTC+8) form to the second; None when it is not ISO-8601 with an offset."""
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    if at.tzinfo is None:
        return None
    return at, at.astimezone(LOCAL_TZ).isoformat(timespec="seconds")
