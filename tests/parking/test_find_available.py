"""FindAvailable against a brute-force answer: distance on the PostGIS sphere, then the filters."""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING

import pytest
from grpc import aio
from sqlalchemy import text
from v2x.common.v1 import common_pb2 as cpb
from v2x.parking.v1 import parking_pb2 as pb
from v2x.parking.v1.parking_pb2_grpc import ParkingServiceStub

from services.common import fast_paths
from services.common.fast_paths import FastPath
from services.common.geo import haversine_m
from services.common.runtime import Resources
from services.parking import convert
from services.parking.index import LotIndex
from services.parking.model import FindQuery
from services.parking.store import ParkingStore
from services.parking.vocab import SpaceClass
from tests.conftest import Keys, open_channel, serve_parking
from tests.parking.conftest import NewLot
from tests.parking.helpers import lot, report

if TYPE_CHECKING:
    # The async flavour of the stub exists only in the generated .pyi.
    from v2x.parking.v1.parking_pb2_grpc import ParkingServiceAsyncStub as Stub

# A boundary this close to a lot may fall either way (float noise of two implementations).
BOUNDARY_EPS_M = 1e-6
SHANGHAI = timezone(timedelta(hours=8))

# ----- the 10,000-lot field around (10, 10), loaded with SQL -------------------------------------

FIELD_LAT, FIELD_LON, FIELD_HALF_DEG = 10.0, 10.0, 0.05
FIELD_LOTS = 10_000
QUERIES = 60


@dataclass(frozen=True)
class FieldLot:
    id: str
    lat: float
    lon: float


@pytest.fixture(scope="module")
async def field(resources: Resources) -> AsyncIterator[list[FieldLot]]:
    """10,000 lots at random places in a ~11 km square nobody else uses; removed afterwards."""
    rng = random.Random(10_000)
    tag = uuid.uuid4().hex[:6]
    lots = [FieldLot(f"FA-{tag}-{i:05d}", FIELD_LAT + rng.uniform(-FIELD_HALF_DEG, FIELD_HALF_DEG),
                     FIELD_LON + rng.uniform(-FIELD_HALF_DEG, FIELD_HALF_DEG)) for i in range(FIELD_LOTS)]
    ids = [f.id for f in lots]
    async with resources.engine.begin() as conn:
        await conn.execute(text(
            "INSERT INTO parking_lots (id, operator_id, name, kind, location, cap_general, cap_ev, cap_disabled, "
            "cap_reserved, price, hourly_price_fen, opening, always_open, open_minutes, entrances, detection_type, "
            "ttl_s) "
            "SELECT t.id, 'OPA', 'Field ' || t.id, 1, ST_MakePoint(t.lon, t.lat)::geography, 100, 0, 0, 0, "
            "CAST('{\"free_minutes\": 0, \"first_hour_fen\": 800, \"per_hour_fen\": 800, \"daily_cap_fen\": 0, "
            "\"description\": \"\"}' AS jsonb), 800, CAST('[]' AS jsonb), true, "
            "CAST('{[0,10080)}' AS int4multirange), CAST('[]' AS jsonb), 2, 600 "
            "FROM unnest(CAST(:ids AS text[]), CAST(:lats AS float8[]), CAST(:lons AS float8[])) AS t(id, lat, lon)"),
            {"ids": ids, "lats": [f.lat for f in lots], "lons": [f.lon for f in lots]})
        await conn.execute(text("INSERT INTO parking_lot_state (lot_id) SELECT unnest(CAST(:ids AS text[]))"),
                           {"ids": ids})
    yield lots
    async with resources.engine.begin() as conn:
        await conn.execute(text("DELETE FROM parking_lots WHERE id = ANY(:ids)"), {"ids": ids})


def _brute_force(lots: list[FieldLot], lat: float, lon: float, radius: float) -> tuple[list[str], set[str],
                                                                                         dict[str, float]]:
    """(ids surely inside, ordered by distance then id; ids within BOUNDARY_EPS_M of the radius;
    every distance)."""
    dist = {f.id: haversine_m(lat, lon, f.lat, f.lon) for f in lots}
    inside = sorted((d, i) for i, d in dist.items() if d <= radius - BOUNDARY_EPS_M)
    boundary = {i for i, d in dist.items() if abs(d - radius) <= BOUNDARY_EPS_M}
    return [i for _, i in inside], boundary, dist


async def test_haversine_is_the_postgis_sphere(resources: Resources) -> None:
    rng = random.Random(7)
    starts = [(rng.uniform(-60, 60), rng.uniform(-170, 170)) for _ in range(200)]
    pairs = [(a, b, a + rng.uniform(-0.05, 0.05), b + rng.uniform(-0.05, 0.05)) for a, b in starts]
    async with resources.engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT ST_Distance(ST_MakePoint(t.lon1, t.lat1)::geography, ST_MakePoint(t.lon2, t.lat2)::geography, "
            "false) AS d FROM unnest(CAST(:a AS float8[]), CAST(:b AS float8[]), CAST(:c AS float8[]), "
            "CAST(:d AS float8[])) WITH ORDINALITY AS t(lat1, lon1, lat2, lon2, n) ORDER BY t.n"),
            {"a": [p[0] for p in pairs], "b": [p[1] for p in pairs], "c": [p[2] for p in pairs],
             "d": [p[3] for p in pairs]})).all()
    for (lat1, lon1, lat2, lon2), row in zip(pairs, rows, strict=True):
        assert haversine_m(lat1, lon1, lat2, lon2) == pytest.approx(row.d, abs=BOUNDARY_EPS_M)


@pytest.fixture(scope="module")
async def field_channel(resources: Resources, field: list[FieldLot]) -> AsyncIterator[aio.Channel]:
    """A parking server started after the field was loaded with SQL behind the services' backs: it reads
    the lots at start-up (a server running before would not know of them)."""
    async for running in serve_parking(resources):
        async for channel in open_channel(running):
            yield channel


async def test_nearest_lots_match_brute_force_on_10000_lots(field_channel: aio.Channel, keys: Keys,
                                                           resources: Resources, field: list[FieldLot]) -> None:
    stub: Stub = ParkingServiceStub(field_channel)
    async with resources.engine.connect() as conn:
        in_field = (await conn.execute(text(
            "SELECT count(*) FROM parking_lots WHERE location && ST_MakeEnvelope(:w, :s, :e, :n, 4326)::geography"),
            {"w": FIELD_LON - 0.2, "s": FIELD_LAT - 0.2, "e": FIELD_LON + 0.2, "n": FIELD_LAT + 0.2})).scalar_one()
    assert in_field == FIELD_LOTS, "another test put lots into this test's field"
    rng = random.Random(50)
    listed = limited = 0
    for _ in range(QUERIES):
        lat = FIELD_LAT + rng.uniform(-FIELD_HALF_DEG, FIELD_HALF_DEG)
        lon = FIELD_LON + rng.uniform(-FIELD_HALF_DEG, FIELD_HALF_DEG)
        radius = rng.uniform(100, 5000)
        limit = rng.randint(1, 200)
        answer = await stub.FindAvailable(pb.FindAvailableRequest(
            location=cpb.LatLon(lat=lat, lon=lon), radius_m=radius, limit=limit), metadata=keys.md(keys.driver))
        got = [r.lot_id for r in answer.lots]
        inside, boundary, dist = _brute_force(field, lat, lon, radius)
        where = f"query ({lat}, {lon}) r={radius} limit={limit}"
        sure = inside[:limit]
        assert got[:len(sure)] == sure, where
        rest = got[len(sure):]
        assert set(rest) <= boundary and len(set(rest)) == len(rest), where
        assert len(got) <= limit, where
        for r in answer.lots:
            assert r.distance_m == pytest.approx(dist[r.lot_id], abs=0.006), where
        listed += len(got)
        limited += len(inside) > limit
    # The queries exercised both the radius and the limit.
    assert listed > QUERIES * 20 and QUERIES // 4 < limited < QUERIES


# ----- filters on a small, varied set -------------------------------------------------------------

KINDS = (pb.LOT_KIND_GARAGE, pb.LOT_KIND_SURFACE_LOT, pb.LOT_KIND_ON_STREET_SEGMENT)
# (first hour, further hours): the hourly price is the larger of the two.
PRICES = ((500, 500), (1200, 400), (300, 900), (800, 800), (0, 0))
# How the lot reads now: a fresh count, stale, closed by the operator, or never reported.
FRESH_FREE = ("free:60", "free:5", "full", "stale", "closed", "never", "free:20")
OPENING = ("always", "open_now", "always", "closed_now")
GENERAL_CAP, EV_CAP = 60, 6


@dataclass(frozen=True)
class SmallLot:
    id: str
    lat: float
    lon: float
    kind: int
    first_hour: int
    per_hour: int
    reading: str
    opening: str
    free_general: int | None
    free_ev: int | None

    @property
    def hourly(self) -> int:
        return max(self.first_hour, self.per_hour)

    @property
    def fresh(self) -> bool:
        return self.reading not in ("stale", "never")

    @property
    def open_now(self) -> bool:
        return self.opening != "closed_now"

    def usable_free(self, space_class: int) -> int | None:
        """Free spaces a driver can count on now (None when not known, closed or out of hours)."""
        if not self.fresh or self.reading == "closed" or not self.open_now:
            return None
        return self.free_general if space_class == pb.SPACE_CLASS_GENERAL else self.free_ev

    @property
    def status(self) -> int:
        if not self.fresh:
            return pb.SITE_STATUS_UNKNOWN
        if self.reading == "closed" or not self.open_now:
            return pb.SITE_STATUS_CLOSED
        assert self.free_general is not None
        if self.free_general == 0:
            return pb.SITE_STATUS_FULL
        if self.free_general <= max(2, math.ceil(GENERAL_CAP * 0.1)):
            return pb.SITE_STATUS_ALMOST_FULL
        return pb.SITE_STATUS_SPACES_AVAILABLE


@dataclass(frozen=True)
class SmallSet:
    lat: float
    lon: float
    lots: list[SmallLot]


def _periods(opening: str) -> list[tuple[int, int, int]]:
    """One period around now (from an hour ago to in an hour) or one that starts in an hour, in
    Shanghai time; periods may run past midnight."""
    local = datetime.now(SHANGHAI)
    start = local - timedelta(minutes=60) if opening == "open_now" else local + timedelta(minutes=60)
    open_minute = start.hour * 60 + start.minute
    close_minute = (open_minute + 120) % 1440 or 1440
    return [(start.isoweekday(), open_minute, close_minute)]


def _general_free(reading: str) -> int | None:
    if reading.startswith("free:"):
        return int(reading.removeprefix("free:"))
    return {"full": 0, "never": None}.get(reading, 30)


@pytest.fixture(scope="module")
async def small(parking_channel: aio.Channel, keys: Keys) -> SmallSet:
    """35 lots within 2 km of a random place, cycling through kinds, tariffs, readings and hours."""
    stub: Stub = ParkingServiceStub(parking_channel)
    rng = random.Random()
    clat, clon = rng.uniform(-45, -25), rng.uniform(-160, -40)
    tag = uuid.uuid4().hex[:6]
    lots = []
    for i in range(35):
        bearing, d = rng.uniform(0, 2 * math.pi), rng.uniform(20, 2000)
        lat = clat + d * math.cos(bearing) / 111_195
        lon = clon + d * math.sin(bearing) / (111_195 * math.cos(math.radians(clat)))
        first, per = PRICES[i % len(PRICES)]
        reading, opening = FRESH_FREE[i % len(FRESH_FREE)], OPENING[i % len(OPENING)]
        free_general = _general_free(reading)
        free_ev = None if reading == "never" else i % (EV_CAP + 1)
        s = SmallLot(f"FS-{tag}-{i:02d}", lat, lon, KINDS[i % len(KINDS)], first, per, reading, opening,
                     free_general, free_ev)
        spec = lot(s.id, lat=lat, lon=lon, general=GENERAL_CAP, ev=EV_CAP, disabled=0, kind=s.kind,
                   ttl_s=10 if reading == "stale" else 0, always_open=opening == "always",
                   periods=None if opening == "always" else _periods(opening))
        spec.price.first_hour_fen, spec.price.per_hour_fen = first, per
        await stub.RegisterLot(pb.RegisterLotRequest(lot=spec), metadata=keys.md(keys.admin))
        if reading != "never":
            ack = await stub.PushOccupancy(report(s.id, 1, general=free_general, ev=free_ev, closed=reading == "closed",
                                                  seconds_ago=30 if reading == "stale" else 0),
                                           metadata=keys.md(keys.op_a))
            assert ack.result == pb.ACK_RESULT_ACCEPTED
        lots.append(s)
    return SmallSet(clat, clon, lots)


def _expected(s: SmallSet, radius: float, *, kinds: tuple[int, ...] = (), max_price: int = 0,
              open_now: bool = False, min_free: int = 0, space_class: int = pb.SPACE_CLASS_GENERAL,
              only_available: bool = False, limit: int = 200) -> list[str]:
    if only_available:
        min_free = max(min_free, 1)
    keep = []
    for x in s.lots:
        d = haversine_m(s.lat, s.lon, x.lat, x.lon)
        if d > radius or (kinds and x.kind not in kinds) or (max_price and x.hourly > max_price):
            continue
        if open_now and (not x.open_now or x.reading == "closed"):  # a fresh "closed" reading is not open
            continue
        free = x.usable_free(space_class)
        if min_free and (free is None or free < min_free):
            continue
        keep.append((d, x.id))
    return [i for _, i in sorted(keep)][:limit]


async def _find(stub: Stub, keys: Keys, s: SmallSet, radius: float = 2500,
                **kw: object) -> pb.FindAvailableResponse:
    req = pb.FindAvailableRequest(location=cpb.LatLon(lat=s.lat, lon=s.lon), radius_m=radius, limit=200,
                                  **kw)  # type: ignore[arg-type]
    return await stub.FindAvailable(req, metadata=keys.md(keys.driver))


def _ids(resp: pb.FindAvailableResponse) -> list[str]:
    return [r.lot_id for r in resp.lots]


async def test_without_filters_every_lot_in_radius_is_listed_by_distance(stub: Stub, keys: Keys,
                                                                         small: SmallSet) -> None:
    assert _ids(await _find(stub, keys, small)) == _expected(small, 2500)
    assert _ids(await _find(stub, keys, small, radius=900)) == _expected(small, 900)


async def test_default_limit_is_20(stub: Stub, keys: Keys, small: SmallSet) -> None:
    resp = await stub.FindAvailable(pb.FindAvailableRequest(
        location=cpb.LatLon(lat=small.lat, lon=small.lon), radius_m=2500), metadata=keys.md(keys.driver))
    assert _ids(resp) == _expected(small, 2500, limit=20)


async def test_kinds_filter(stub: Stub, keys: Keys, small: SmallSet) -> None:
    for kinds in ((pb.LOT_KIND_GARAGE,), (pb.LOT_KIND_SURFACE_LOT, pb.LOT_KIND_ON_STREET_SEGMENT)):
        got = _ids(await _find(stub, keys, small, kinds=list(kinds)))
        assert got == _expected(small, 2500, kinds=kinds)
        assert got


async def test_max_price_compares_the_larger_hourly_price(stub: Stub, keys: Keys,
                                                          small: SmallSet) -> None:
    for max_price in (400, 500, 900, 1199, 1200):
        got = _ids(await _find(stub, keys, small, max_price_per_hour_fen=max_price))
        assert got == _expected(small, 2500, max_price=max_price), max_price
    # A (1200, 400) tariff costs 1200 an hour for the purpose of the filter.
    dear = {x.id for x in small.lots if (x.first_hour, x.per_hour) == (1200, 400)}
    assert not dear & set(_ids(await _find(stub, keys, small, max_price_per_hour_fen=1000)))


async def test_open_now_uses_shanghai_opening_hours(stub: Stub, keys: Keys, small: SmallSet) -> None:
    got = _ids(await _find(stub, keys, small, open_now=True))
    assert got == _expected(small, 2500, open_now=True)
    assert any(x.opening == "open_now" for x in small.lots if x.id in got)
    assert not any(x.opening == "closed_now" for x in small.lots if x.id in got)
    assert not any(x.reading == "closed" for x in small.lots if x.id in got)


async def test_open_now_follows_periods_past_midnight(stub: Stub, keys: Keys, new_lot: NewLot) -> None:
    """24-hour periods always run past midnight (a Sunday one past the end of the week): one that
    began 23 h ago is open, one that began 25 h ago is not."""
    lat, lon = random.uniform(-45, -25), random.uniform(20, 100)
    local = datetime.now(SHANGHAI)
    ids = {}
    for began_h, east_m in ((23, 100), (25, 200)):
        start = local - timedelta(hours=began_h)
        minute = start.hour * 60 + start.minute
        period = (start.isoweekday(), minute, minute or 1440)
        ids[began_h] = await new_lot(lat=lat, lon=lon + east_m / 111_195, always_open=False, periods=[period])
    md = keys.md(keys.driver)
    req = pb.FindAvailableRequest(location=cpb.LatLon(lat=lat, lon=lon), radius_m=500, open_now=True)
    assert [r.lot_id for r in (await stub.FindAvailable(req, metadata=md)).lots] == [ids[23]]
    req.open_now = False
    assert [r.lot_id for r in (await stub.FindAvailable(req, metadata=md)).lots] == [ids[23], ids[25]]


async def test_min_free_counts_the_requested_class(stub: Stub, keys: Keys, small: SmallSet) -> None:
    for space_class, min_free in ((pb.SPACE_CLASS_GENERAL, 6), (pb.SPACE_CLASS_GENERAL, 21),
                                  (pb.SPACE_CLASS_EV, 3), (pb.SPACE_CLASS_EV, 6)):
        got = _ids(await _find(stub, keys, small, min_free=min_free, space_class=space_class))
        assert got == _expected(small, 2500, min_free=min_free, space_class=space_class), (space_class, min_free)
        assert got


async def test_only_available_excludes_stale_closed_and_full_lots(stub: Stub, keys: Keys,
                                                                  small: SmallSet) -> None:
    got = _ids(await _find(stub, keys, small, only_available=True))
    assert got == _expected(small, 2500, only_available=True)
    by_id = {x.id: x for x in small.lots}
    for excluded in ("stale", "closed", "full", "never"):
        assert any(x.reading == excluded for x in small.lots)
        assert not any(by_id[i].reading == excluded for i in got), excluded
    assert not any(by_id[i].opening == "closed_now" for i in got)


async def test_only_available_with_ev_and_other_filters(stub: Stub, keys: Keys,
                                                        small: SmallSet) -> None:
    got = _ids(await _find(stub, keys, small, only_available=True, space_class=pb.SPACE_CLASS_EV,
                           max_price_per_hour_fen=900, kinds=[pb.LOT_KIND_GARAGE, pb.LOT_KIND_SURFACE_LOT]))
    assert got == _expected(small, 2500, only_available=True, space_class=pb.SPACE_CLASS_EV, max_price=900,
                            kinds=(pb.LOT_KIND_GARAGE, pb.LOT_KIND_SURFACE_LOT))


async def test_results_carry_distance_status_and_freshness(stub: Stub, keys: Keys,
                                                           small: SmallSet) -> None:
    resp = await _find(stub, keys, small)
    by_id = {x.id: x for x in small.lots}
    now = datetime.now(UTC)
    assert len(resp.lots) == len(small.lots)
    for r in resp.lots:
        x = by_id[r.lot_id]
        assert r.distance_m == pytest.approx(haversine_m(small.lat, small.lon, x.lat, x.lon), abs=0.006)
        assert r.location.lat == x.lat and r.location.lon == x.lon
        assert r.kind == x.kind and r.operator_id == "OPA" and r.name == f"Lot {x.id}"
        assert (r.price.first_hour_fen, r.price.per_hour_fen) == (x.first_hour, x.per_hour)
        a = r.availability
        assert a.status == x.status, x
        f = a.freshness
        assert f.stale == (not x.fresh)
        assert f.ttl_s == (10 if x.reading == "stale" else 600)
        if x.reading == "never":
            assert not f.HasField("observed_at") and a.sequence == 0
        else:
            observed = f.observed_at.ToDatetime(tzinfo=UTC)
            assert now - timedelta(seconds=120) < observed <= now
            assert f.expires_at.ToDatetime(tzinfo=UTC) == observed + timedelta(seconds=f.ttl_s)
            assert a.sequence == 1
        general = next(c for c in a.classes if c.space_class == pb.SPACE_CLASS_GENERAL)
        if x.fresh:
            assert general.free == x.free_general
        else:
            assert not general.HasField("free") and not a.HasField("total_free")


async def test_the_index_answers_exactly_what_postgis_answers(resources: Resources, small: SmallSet) -> None:
    store = ParkingStore(resources.engine)
    index = LotIndex(store)
    await index.load()
    rng = random.Random(5)
    answered = 0
    for _ in range(40):
        q = FindQuery(small.lat + rng.uniform(-0.01, 0.01), small.lon + rng.uniform(-0.01, 0.01),
                      rng.choice([300.0, 900.0, 2500.0]), rng.choice([1, 5, 20, 200]),
                      rng.choice([SpaceClass.GENERAL, SpaceClass.EV]), rng.choice([0, 0, 1, 5, 30]),
                      sorted(set(rng.sample(KINDS, rng.randint(0, 2)))), rng.random() < 0.5,
                      rng.choice([0, 0, 500, 900]))
        now = datetime.now(UTC)
        from_postgis = pb.FindAvailableResponse(
            lots=[convert.lot_availability_proto(v, now) for v in await store.find_available(q, now)])
        from_index = index.find(q, now)
        assert from_index is not None
        assert pb.FindAvailableResponse.FromString(from_index) == from_postgis, q
        answered += bool(from_postgis.lots)
    # The comparison means something only if many answers list lots (how many depends on the random set and on the
    # hour, which opens and closes lots).
    assert answered >= 10


async def test_the_fast_paths_answer_what_the_plain_paths_answer(resources: Resources, small: SmallSet) -> None:
    """FastPath.DRIVER_READS and SPLICED_ANSWERS: PostGIS answers read through the driver or through
    SQLAlchemy, and index answers spliced or built (from an index loaded either way), are the same."""
    store = ParkingStore(resources.engine)
    fast_index, plain_index = LotIndex(store), LotIndex(store)
    await fast_index.load()
    with fast_paths.plain(*FastPath):
        await plain_index.load()
    rng = random.Random(6)
    answered = 0
    for _ in range(30):
        q = FindQuery(small.lat + rng.uniform(-0.01, 0.01), small.lon + rng.uniform(-0.01, 0.01),
                      rng.choice([300.0, 900.0, 2500.0]), rng.choice([1, 5, 20, 200]),
                      rng.choice([SpaceClass.GENERAL, SpaceClass.EV]), rng.choice([0, 0, 1, 5, 30]),
                      sorted(set(rng.sample(KINDS, rng.randint(0, 2)))), rng.random() < 0.5,
                      rng.choice([0, 0, 500, 900]))
        now = datetime.now(UTC)
        fast_views = await store.find_available(q, now)
        fast_answer = fast_index.find(q, now)
        with fast_paths.plain(*FastPath):
            plain_views = await store.find_available(q, now)
            plain_answer = plain_index.find(q, now)
        assert plain_views == fast_views, q
        assert fast_answer is not None and plain_answer is not None
        assert pb.FindAvailableResponse.FromString(fast_answer) == pb.FindAvailableResponse.FromString(plain_answer)
        answered += bool(fast_views)
    assert answered >= 10
