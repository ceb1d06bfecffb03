"""The fast paths of parking (and the common ones it uses) give exactly what their plain paths give: TIMESTAMPS here;
DRIVER_READS and SPLICED_ANSWERS on a set of lots in the database (tests/parking/test_find_available.py,
test_the_fast_paths_answer_what_the_plain_paths_answer).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common import fast_paths
from services.common.fast_paths import FastPath
from services.common.timestamps import set_ts


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
