"""The hot path of draining gives exactly what the general path gives: the fast renderers (straight-line checks
and JSON written directly) accept only records the general checks accept, with byte-for-byte the same wire form,
and a body assembled from wire forms is the body of the documents. Also the split of a chunk into batches."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.municipal import fastpath as fastpath_source
from services.municipal import native
from services.municipal.delivery import split_streams
from services.municipal.model import InvalidRecord, OutboxRecord, idempotency_key, key_maker
from services.municipal.profiles import make_profile
from services.municipal.profiles.base import Profile
from services.municipal.settings import MunicipalDestination, MunicipalSettings
from tests.municipal.helpers import (
    SECRET,
    charger_static,
    charger_status,
    lot_dynamic,
    lot_static,
    passage,
    record,
    spot_status,
)

NOW = datetime(2026, 11, 24, 4, 0, tzinfo=UTC)


def municipal() -> Profile:
    return make_profile(MunicipalDestination(name="city", url="http://x/records", profile="municipal_json",
                                             secret=SECRET))


def both(p: Profile, rec: OutboxRecord) -> tuple[bytes | None, bytes | None]:
    """(fast wire form or None, general path's wire form or None when it refuses the record)."""
    key = idempotency_key("city", rec.id)
    try:
        slow: bytes | None = p.wire(p.render(rec, key, None, NOW).doc)
    except InvalidRecord:
        slow = None
    return p.fast_wire[rec.kind](rec, key, NOW), slow


# The interpreted fast path: what runs where services/municipal/fastpath.py is not compiled (`make native`).
SOURCE_WIRES = {"lot_dynamic": fastpath_source.wire_lot_dynamic, "spot_status": fastpath_source.wire_spot_status}


def assert_same(p: Profile, rec: OutboxRecord) -> None:
    fast, slow = both(p, rec)
    assert SOURCE_WIRES[rec.kind](rec, idempotency_key("city", rec.id), NOW) == fast  # compiled == interpreted
    if fast is not None:
        assert fast == slow, rec.payload
        assert orjson.loads(fast) == p.render(rec, idempotency_key("city", rec.id), None, NOW).doc


# Values a field may be changed to: other types, edge numbers, odd strings and times (NOW + 10 min is the limit).
ODD_VALUES: list[Any] = [
    None, True, False, 0, 1, -1, 1.0, 2.5, 10**6, 2**63, "", "x", "1", [], {}, [1], {"a": 1},
    "2026-11-24T03:00:00", "2026-11-24T03:00:00Z", "2026-11-24T03:00:00+08:00", "2026-02-30T03:00:00+00:00",
    "1999-12-31T23:59:59+00:00", "2026-11-24T04:09:59+00:00", "2026-11-24T04:10:01+00:00", "SITE_STATUS_FULL",
    "SITE_STATUS_UNKNOWN", "general", "ev", "B-1", "B 1", "L1", "SPOT_STATUS_FREE", "reserved"]
ODD = st.sampled_from(ODD_VALUES)


def mutate(payload: dict[str, Any], path: list[str], value: Any, delete: bool) -> dict[str, Any]:
    out = copy.deepcopy(payload)
    target: Any = out
    for part in path[:-1]:
        if not isinstance(target, dict):
            return out
        target = target.setdefault(part, {})
    if isinstance(target, dict):
        if delete:
            target.pop(path[-1], None)
        else:
            target[path[-1]] = value
    return out


LOT_DYNAMIC_PATHS = [["lot_id"], ["sequence"], ["status"], ["observed_at"], ["received_at"], ["capacity"],
                     ["free"], ["capacity", "general"], ["capacity", "ev"], ["capacity", "reserved"],
                     ["capacity", "bikes"], ["free", "general"], ["free", "ev"], ["free", "disabled"],
                     ["free", "reserved"], ["free", "bikes"], ["ttl_s"]]


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(LOT_DYNAMIC_PATHS), ODD, st.booleans()), max_size=4),
       st.integers(0, 300), st.sampled_from(["SITE_STATUS_SPACES_AVAILABLE", "SITE_STATUS_UNKNOWN"]))
def test_the_lot_dynamic_fast_path_agrees_with_the_checks_and_the_mapping(
        changes: list[tuple[list[str], Any, bool]], free: int, status: str) -> None:
    payload = lot_dynamic("L1", 7, free, observed=NOW - timedelta(minutes=5), status=status)
    for path, value, delete in changes:
        payload = mutate(payload, path, value, delete)
    assert_same(municipal(), record("lot_dynamic", "L1", payload, id_=42))


SPOT_PATHS = [["lot_id"], ["spot_id"], ["space_class"], ["status"], ["observed_at"]]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(SPOT_PATHS), ODD, st.booleans()), max_size=3))
def test_the_spot_status_fast_path_agrees_with_the_checks_and_the_mapping(
        changes: list[tuple[list[str], Any, bool]]) -> None:
    payload = {**spot_status("L1", "S-01"), "observed_at": (NOW - timedelta(minutes=1)).isoformat()}
    for path, value, delete in changes:
        payload = mutate(payload, path, value, delete)
    assert_same(municipal(), record("spot_status", "L1", payload, id_=43))


def test_every_single_field_change_is_judged_as_the_checks_judge_it() -> None:
    p = municipal()
    base = lot_dynamic("L1", 7, 120, observed=NOW - timedelta(minutes=5))
    spot = {**spot_status("L1", "S-01"), "observed_at": (NOW - timedelta(minutes=1)).isoformat()}
    for kind, payload, paths in (("lot_dynamic", base, LOT_DYNAMIC_PATHS), ("spot_status", spot, SPOT_PATHS)):
        for path in paths:
            assert_same(p, record(kind, "L1", mutate(payload, path, None, True), id_=5))
            for value in ODD_VALUES:
                assert_same(p, record(kind, "L1", mutate(payload, path, value, False), id_=5))


@pytest.mark.parametrize("payload", [
    lot_dynamic("L1", 7, 120, observed=NOW),
    {**lot_dynamic("L1", 0, 0, observed=NOW), "free": {"general": None, "ev": None}},
    {**lot_dynamic("L1", 3, 300, observed=NOW), "capacity": {"general": 300}, "free": {}},
    {**lot_dynamic("L1", 3, 1, observed=NOW), "capacity": {"general": 2000, "ev": 0}, "free": {"general": 1999}},
])
def test_valid_records_take_the_fast_path(payload: dict[str, Any]) -> None:
    p = municipal()
    fast, slow = both(p, record("lot_dynamic", "L1", payload, id_=9))
    assert fast is not None and fast == slow
    fast, slow = both(p, record("spot_status", "L1", {**spot_status("L1", "S1"), "observed_at": NOW.isoformat()}))
    assert fast is not None and fast == slow


@pytest.mark.parametrize("profile_name", ["municipal_json", "datex2_xml", "ngsi_ld"])
def test_a_body_built_from_wire_forms_is_the_body_of_the_documents(profile_name: str) -> None:
    p = make_profile(MunicipalDestination(name="city \"x\"", url="http://x/records", profile=profile_name,
                                          secret=SECRET))
    records = [record("lot_static", "L1", lot_static("L1"), id_=1),
               record("lot_dynamic", "L1", lot_dynamic("L1", 2), id_=2),
               record("spot_status", "L1", spot_status("L1", "S1"), id_=3)]
    if "passage" in p.kinds:
        records.append(record("passage", "L1", passage("L1", "P1"), id_=4))
    if profile_name == "datex2_xml":
        # A DATEX II payload holds one publication (the lane never mixes them); its publication time is the clock's.
        records = [r for r in records if r.kind != "lot_static"]
    docs = [p.render(r, idempotency_key("city", r.id)).doc for r in records]

    def timeless(body: bytes) -> bytes:
        return re.sub(rb"<com:publicationTime>[^<]*</com:publicationTime>", b"", body)

    assert timeless(p.body_of([p.wire(d) for d in docs])) == timeless(p.body(docs))
    if profile_name != "datex2_xml":  # a DATEX II payload needs a record
        assert p.body_of([]) == p.body([])
    # A station's static record (NGSI-LD: an entity per connector) with a status of one of its connectors, and one
    # without: DATEX II puts the statics in a table publication of their own.
    stations = [record("charger_static", "ST1", charger_static("ST1", lot_id="L1"), id_=5),
                record("charger_static", "ST2", charger_static("ST2"), id_=6)]
    statuses = [record("charger_status", "ST1", charger_status("ST1", "2"), id_=7)]
    for batch in ([stations] if profile_name == "datex2_xml" else [[*stations, *statuses]]):
        docs = [p.render(r, idempotency_key("city", r.id)).doc for r in batch]
        assert timeless(p.body_of([p.wire(d) for d in docs])) == timeless(p.body(docs))


def test_the_fast_path_runs_compiled_and_from_the_current_source() -> None:
    # `make deps` compiles it (`make native`); the drain rate of load/bench_municipal.py depends on it.
    assert native.COMPILED, native.reason
    assert municipal().fast_wire["lot_dynamic"] is native.fastpath.wire_lot_dynamic
    assert native.source_sha256() == native.fastpath.SOURCE_SHA256


def test_a_compiled_fast_path_built_from_another_source_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "source_sha256", lambda: "0" * 64)  # as if fastpath.py changed since the build
    module, reason = native.load()
    assert module is fastpath_source and "stale" in reason


def test_keys_are_uuid5_of_destination_and_outbox_id() -> None:
    import uuid

    from services.municipal.model import KEY_NAMESPACE

    make = key_maker("城市/city")
    for i in (1, 42, 10**12, 2**62):
        assert make(i) == idempotency_key("城市/city", i) == str(uuid.uuid5(KEY_NAMESPACE, f"城市/city/{i}"))


# ----- splitting a chunk into batches ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 30), max_size=400), st.integers(1, 60))
def test_a_chunk_is_split_into_batches_that_never_share_a_lot_and_keep_id_order(lots: list[int], size: int) -> None:
    records = [record("lot_dynamic", f"L{lot}", {}, id_=i + 1) for i, lot in enumerate(lots)]
    keys = [str(r.id) for r in records]
    wires = [str(r.id).encode() for r in records]
    streams = split_streams(records, keys, wires, size)
    seen: list[int] = []
    stream_of: dict[str, int] = {}
    for n, stream in enumerate(streams):
        ids = [r.id for parcel in stream for r in parcel.records]
        assert ids == sorted(ids)
        for parcel in stream:
            assert 0 < len(parcel.records) <= size
            assert parcel.keys == [str(r.id) for r in parcel.records]
            assert parcel.wires == [str(r.id).encode() for r in parcel.records]
            for r in parcel.records:
                assert stream_of.setdefault(r.aggregate_id, n) == n  # a lot is in one stream only
        seen += ids
    assert sorted(seen) == [r.id for r in records]
    if len(records) <= size:
        assert len(streams) == (1 if records else 0)
    # Lots are packed whole: no more one-batch streams than twice the batches the records need.
    small = [s for s in streams if len(s) == 1]
    assert len(small) <= max(1, 2 * -(-len(records) // size))


# ----- reading the platform's answer ----------------------------------------------------------------------------


def test_the_answer_is_read_per_record_whatever_its_shape() -> None:
    from typing import cast

    from services.municipal.delivery import Lane, Parcel, Transient
    from services.municipal.store import MunicipalStore

    dest = MunicipalDestination(name="city", url="http://x/records", profile="municipal_json", secret=SECRET)
    lane = Lane(dest, cast(MunicipalStore, None), MunicipalSettings())
    records = [record("lot_dynamic", f"L{i}", lot_dynamic(f"L{i}", 1), id_=i) for i in range(1, 5)]
    keys = [idempotency_key("city", r.id) for r in records]
    parcel = Parcel(records, keys, [b"{}"] * 4)

    def outcome(answer: Any) -> tuple[list[int], list[tuple[int, int]]]:
        sent = lane._results(parcel, answer if isinstance(answer, bytes) else orjson.dumps(answer), 1)
        return [r.id for r in sent.delivered], [(o.record.id, o.http_status) for o in sent.dead]

    every = [1, 2, 3, 4]
    assert outcome(b"") == outcome(b"not json") == outcome({}) == outcome({"results": "x"}) == (every, [])
    assert outcome({"results": [{"idempotencyKey": k, "status": 201} for k in keys]}) == (every, [])
    assert outcome({"results": [{"idempotencyKey": k} for k in keys]}) == (every, [])  # no status: 200
    assert outcome({"results": [{"idempotencyKey": k, "status": 200} for k in reversed(keys)]}) == (every, [])
    refused = [{"idempotencyKey": k, "status": 422 if i == 1 else 201, "error": "no"} for i, k in enumerate(keys)]
    assert outcome({"results": refused}) == ([1, 3, 4], [(2, 422)])
    assert outcome({"results": [{"idempotencyKey": keys[2], "status": "409"}]}) == ([1, 2, 4], [(3, 409)])
    assert outcome({"results": [{"idempotencyKey": keys[0], "status": True}, *refused[1:]]}) == ([1, 3, 4],
                                                                                                 [(2, 422)])
    # The last result for a key counts; results for other keys are ignored.
    twice = [*refused, {"idempotencyKey": keys[1], "status": 201}, {"idempotencyKey": "other", "status": 500}]
    assert outcome({"results": twice}) == (every, [])
    with pytest.raises(Transient):
        outcome({"results": [{"idempotencyKey": k, "status": 503 if i == 3 else 201} for i, k in enumerate(keys)]})


def test_a_profile_with_publications_never_gets_two_in_one_request() -> None:
    from services.municipal.delivery import request_key, split_publications

    p = make_profile(MunicipalDestination(name="city", url="http://x/d", profile="datex2_xml", secret=SECRET))
    kinds = ["lot_static", "lot_dynamic", "spot_status", "lot_static", "lot_dynamic"]
    records = [record(k, "L1", {}, id_=i) for i, k in enumerate(kinds, 1)]
    keys = [idempotency_key("city", r.id) for r in records]
    streams = split_streams(records, keys, [b"w"] * len(records), 500)
    (parcels,) = split_publications(streams, p.publication)
    assert [[r.id for r in parcel.records] for parcel in parcels] == [[1], [2, 3], [4], [5]]
    assert request_key(keys[:1]) == keys[0] and request_key(keys) == request_key(list(keys)) != keys[0]


def test_the_one_render_function_gives_the_general_paths_wire_forms_and_names_refused_records() -> None:
    from services.municipal.profiles import RenderContext

    p = municipal()
    good = [record("lot_dynamic", "L1", lot_dynamic("L1", i, observed=NOW - timedelta(minutes=1)), id_=i)
            for i in range(1, 4)]
    bad = record("lot_dynamic", "L1", {**lot_dynamic("L1", 9, observed=NOW), "free": {"general": 999}}, id_=9)
    static = record("lot_static", "L1", lot_static("L1"), id_=10)
    refused: list[tuple[int, str]] = []
    sendable: list[OutboxRecord] = []
    keys: list[str] = []
    wires: list[bytes] = []
    make_key = key_maker("city")
    p.wires([*good, bad, static], make_key, NOW, RenderContext(), None,
            lambda r, _key, exc: refused.append((r.id, str(exc))), sendable, keys, wires)
    assert [r.id for r in sendable] == [1, 2, 3, 10] and keys == [make_key(i) for i in (1, 2, 3, 10)]
    assert wires == [p.wire(p.render(r, make_key(r.id), None, NOW).doc) for r in sendable]
    assert refused == [(9, "free.general: must be between 0 and 300, not 999")]


@pytest.mark.parametrize("profile_name", ["municipal_json", "datex2_xml", "ngsi_ld"])
def test_a_station_record_has_no_fast_path_and_renders_the_general_way_in_every_profile(profile_name: str) -> None:
    from services.municipal.profiles import RenderContext

    p = make_profile(MunicipalDestination(name="city", url="http://x/records", profile=profile_name, secret=SECRET))
    assert "charger_static" in p.kinds and "charger_static" not in p.fast_wire
    at = {"updated_at": NOW.isoformat()}
    good = record("charger_static", "ST1", {**charger_static("ST1", lot_id="L1"), **at}, id_=1)
    bad = record("charger_static", "ST2", {**charger_static("ST2"), **at, "connectors": []}, id_=2)
    refused: list[tuple[int, str]] = []
    sendable: list[OutboxRecord] = []
    keys: list[str] = []
    wires: list[bytes] = []
    make_key = key_maker("city")
    p.wires([good, bad], make_key, NOW, RenderContext(), None,
            lambda r, _key, exc: refused.append((r.id, str(exc))), sendable, keys, wires)
    assert sendable == [good] and wires == [p.wire(p.render(good, make_key(1), None, NOW).doc)]
    assert refused == [(2, "connectors: must be a list of at least one connector")]
