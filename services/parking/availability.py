"""Pure rules of availability: opening hours, freshness, DATEX II status and occupancy trend.

No I/O here; the store and the servicer both call these so that a lot reads the same everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from services.parking.vocab import CLASSES, OccupancyTrend, SiteStatus, SpaceClass

# China has kept UTC+8 without daylight saving since 1991; opening hours are local wall-clock time.
LOCAL_TZ = timezone(timedelta(hours=8), "Asia/Shanghai")
MINUTES_PER_WEEK = 7 * 1440
TREND_WINDOW_S = 15 * 60
TREND_MIN_SPAN_S = 120
TREND_THRESHOLD = 0.03
SAMPLE_SPACING_S = 30
MAX_SAMPLES = 40

CLASS_NAMES: dict[int, str] = {c: c.name.lower() for c in CLASSES}


@dataclass(frozen=True)
class Period:
    weekday: int  # ISO 1..7
    open_minute: int
    close_minute: int


def week_ranges(always_open: bool, periods: Sequence[Period]) -> list[tuple[int, int]]:
    """Opening hours as half-open minute-of-week ranges (Monday 00:00 = 0), overnight periods split."""
    if always_open:
        return [(0, MINUTES_PER_WEEK)]
    ranges: list[tuple[int, int]] = []
    for p in periods:
        start = (p.weekday - 1) * 1440 + p.open_minute
        end = (p.weekday - 1) * 1440 + p.close_minute + (1440 if p.close_minute <= p.open_minute else 0)
        if end > MINUTES_PER_WEEK:
            ranges += [(start, MINUTES_PER_WEEK), (0, end - MINUTES_PER_WEEK)]
        else:
            ranges.append((start, end))
    return sorted(ranges)


def multirange_literal(ranges: Sequence[tuple[int, int]]) -> str:
    return "{" + ",".join(f"[{a},{b})" for a, b in ranges) + "}"


def minute_of_week(at: datetime) -> int:
    local = at.astimezone(LOCAL_TZ)
    return (local.isoweekday() - 1) * 1440 + local.hour * 60 + local.minute


def is_open(ranges: Sequence[tuple[int, int]], at: datetime) -> bool:
    m = minute_of_week(at)
    return any(a <= m < b for a, b in ranges)


@dataclass(frozen=True)
class LotState:
    """The live part of a lot, as stored."""

    sequence: int
    observed_at: datetime | None
    received_at: datetime | None
    free: dict[int, int | None]
    closed: bool
    full_at_entrance: bool
    trend: int
    samples: list[list[float]]


def expires_at(state: LotState, ttl_s: int) -> datetime | None:
    return state.observed_at + timedelta(seconds=ttl_s) if state.observed_at else None


def is_fresh(state: LotState, ttl_s: int, now: datetime) -> bool:
    exp = expires_at(state, ttl_s)
    return exp is not None and now < exp


def almost_full_threshold(capacity: int) -> int:
    return max(2, math.ceil(capacity * 0.1))


def site_status(state: LotState, capacity: dict[int, int], ttl_s: int, open_now: bool, now: datetime) -> SiteStatus:
    """DATEX II status. General spaces decide full / almost full; a lot without general spaces
    is judged on all its spaces."""
    if not is_fresh(state, ttl_s, now):
        return SiteStatus.UNKNOWN
    if state.closed or not open_now:
        return SiteStatus.CLOSED
    if state.full_at_entrance:
        return SiteStatus.FULL_AT_ENTRANCE
    # Plain loops: this runs for every report (outbox payload) and every availability answer.
    cap = free = 0
    for c in _JUDGED if capacity.get(SpaceClass.GENERAL, 0) > 0 else CLASSES:
        class_cap = capacity.get(c, 0)
        if class_cap > 0:
            class_free = state.free.get(c)
            if class_free is None:
                return SiteStatus.UNKNOWN
            cap += class_cap
            free += class_free
    if cap <= 0:
        return SiteStatus.UNKNOWN
    if free <= 0:
        return SiteStatus.FULL
    if free <= almost_full_threshold(cap):
        return SiteStatus.ALMOST_FULL
    return SiteStatus.SPACES_AVAILABLE


_JUDGED = (SpaceClass.GENERAL,)


def occupied(free: dict[int, int | None], capacity: dict[int, int]) -> int | None:
    total = 0
    for c in CLASSES:
        if capacity.get(c, 0) == 0:
            continue
        f = free.get(c)
        if f is None:
            return None
        total += capacity[c] - f
    return total


def next_samples(samples: list[list[float]], at: datetime, occupied_now: int | None) -> list[list[float]]:
    """Recent (epoch seconds, occupied) samples, at most one per 30 s, within the trend window."""
    if occupied_now is None:
        return samples
    # Tenths of a second and whole vehicles are plenty for a 15-minute trend, and the column (JSON,
    # read and written with every report) gets a third shorter and twice as fast to parse.
    t = round(at.timestamp(), 1)
    oldest = t - TREND_WINDOW_S
    kept = [s for s in samples if oldest <= s[0] <= t]
    sample: list[float] = [t, occupied_now]
    # Keep the newest value always, but thin the history to one sample per spacing interval.
    if len(kept) >= 2 and t - kept[-2][0] < SAMPLE_SPACING_S:
        kept[-1] = sample
    else:
        kept.append(sample)
    return kept[-MAX_SAMPLES:]


def trend(samples: list[list[float]], total_capacity: int) -> OccupancyTrend:
    """Least-squares slope of occupancy over the window, projected over the window's span, compared
    with 3 % of capacity. Fewer than two samples or under two minutes of history → UNKNOWN."""
    if len(samples) < 2 or samples[-1][0] - samples[0][0] < TREND_MIN_SPAN_S or total_capacity <= 0:
        return OccupancyTrend.UNKNOWN
    # One pass over the samples (this runs for every report). Times are taken relative to the first
    # sample: epoch seconds squared would lose the variance to rounding.
    n = len(samples)
    t0 = samples[0][0]
    st = so = stt = sto = 0.0
    for t, o in samples:
        t -= t0
        st += t
        so += o
        stt += t * t
        sto += t * o
    slope = (sto - st * so / n) / (stt - st * st / n)
    change = slope * (samples[-1][0] - t0)
    if change > TREND_THRESHOLD * total_capacity:
        return OccupancyTrend.INCREASING
    if change < -TREND_THRESHOLD * total_capacity:
        return OccupancyTrend.DECREASING
    return OccupancyTrend.STABLE
