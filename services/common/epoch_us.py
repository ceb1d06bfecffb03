"""Times as integer microseconds since the Unix epoch: exact (a float would round them), and what the nearby
indexes keep in numpy columns and the change streams carry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import overload

import numpy as np

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
# An expiry before any `now`: what is never observed is never fresh.
NEVER = int(np.iinfo(np.int64).min)


def us(at: datetime) -> int:
    return (at - _EPOCH) // _US


@overload
def at_us(value: int) -> datetime: ...


@overload
def at_us(value: None) -> None: ...


def at_us(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + timedelta(microseconds=value)
