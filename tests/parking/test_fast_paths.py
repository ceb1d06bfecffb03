"""The fast paths of parking (and the common ones it uses) give exactly what their plain paths give:
FastPath.PARKING_REPORT_CHECKS (reports), TIMESTAMPS. DRIVER_READS and SPLICED_ANSWERS are compared on a set of
lots in the database: tests/parking/test_find_available.py, test_the_fast_paths_answer_what_the_plain_paths_answer.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st
from v2x.parking.v1 import parking_pb2 as pb

from services.common import fast_paths
from services.common.config import Settings
from services.common.errors import DomainError
from services.common.fast_paths import FastPath
from services.common.timestamps import set_ts
from services.parking import convert

_SETTINGS = Settings.from_env({"DATABASE_URL": "postgresql://u@localhost/db", "REDIS_URL": "redis://localhost"})
_NOW = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)

_reports = st.builds(
    lambda lot_id, seq, seconds, nanos, counts, closed, full, report_id, spots: _report(
        lot_id, seq, seconds, nanos, counts, closed, full, report_id, spots),
    st.sampled_from(["L1", "BENCH-G000001", "", "bad id", "x" * 65, "a\n"]),
    st.integers(-2, 3),
    st.sampled_from([0, 1, 946_684_799, 946_684_800, int(_NOW.timestamp()) - 5, int(_NOW.timestamp()) + 59,
                     int(_NOW.timestamp()) + 60, int(_NOW.timestamp()) + 61, 253_402_300_800]),
    st.sampled_from([0, 1, 999_999_999, 500_000_000]),
    st.lists(st.tuples(st.integers(-1, 5), st.integers(-2, 3)), max_size=5),
    st.booleans(), st.booleans(),
    st.sampled_from(["", "r1", "x" * 64, "x" * 65, "tab\tok", "nl\n", "é"]),
    st.lists(st.tuples(st.sampled_from(["S1", "S2", ""]), st.integers(0, 5)), max_size=2),
)


def _report(lot_id: str, seq: int, seconds: int, nanos: int, counts: list[tuple[int, int]], closed: bool,
            full: bool, report_id: str, spots: list[tuple[str, int]]) -> pb.OccupancyReport:
    r = pb.OccupancyReport(lot_id=lot_id, sequence=seq, closed=closed, full_at_entrance=full, report_id=report_id,
                           observed_at=Timestamp(seconds=seconds, nanos=nanos))
    for space_class, free in counts:
        r.counts.add(space_class=space_class, free=free)
    for spot_id, status in spots:
        r.spots.add(spot_id=spot_id, status=status)
    return r


@settings(max_examples=400, deadline=None)
@given(_reports)
def test_the_fast_report_check_accepts_only_what_the_validator_accepts_and_reads_it_the_same(
        r: pb.OccupancyReport) -> None:
    fast = convert.usual_report(r, _SETTINGS, _NOW)
    try:
        checked = convert.checked_report(r, _SETTINGS, _NOW)
    except DomainError:
        assert fast is None
        return
    assert fast is None or fast == checked
    # The one function both serve reads the report the same with the fast path on and off.
    assert convert.report(r, _SETTINGS, _NOW) == checked
    with fast_paths.plain(FastPath.PARKING_REPORT_CHECKS):
        assert convert.report(r, _SETTINGS, _NOW) == checked


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 12, 31, 23, 59, 59, 999999)),
       st.sampled_from([None, UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5, minutes=-30))]))
def test_a_fast_timestamp_is_from_datetimes(at: datetime, tz: timezone | None) -> None:
    at = at.replace(tzinfo=tz)
    expected = Timestamp()
    expected.FromDatetime(at)
    fast, plain = Timestamp(), Timestamp()
    set_ts(fast, at)
    with fast_paths.plain(FastPath.TIMESTAMPS):
        set_ts(plain, at)
    assert fast == plain == expected
