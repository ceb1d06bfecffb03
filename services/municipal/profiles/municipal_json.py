"""The city platform's JSON profile (public-parking information networking, GB/T 29745 family).

One POST carries a batch: {"version": "1.0", "source": "v2x-suite", "records": [record, ...]}; each
record is {"idempotencyKey", "recordType", "sequence", "aggregateId", "changedAt", "data"}. Field
mapping of `data` per record type (the full table with code lists is in services/municipal/PROFILES.md):

lot_static   parkCode, parkName, address, regionCode (6 digits), streetCode (9/12 digits or ""),
             coordinateSystem ("WGS84" | "GCJ02", per destination), longitude, latitude (6 decimals),
             parkType, operatorCode, entrances[{code, longitude, latitude, type 1 in / 2 out / 3 both}],
             totalBerths, evBerths, disabledBerths, reservableBerths, openAllDay,
             openingHours[{weekday 1-7, open "HH:MM", close "HH:MM"}], feeRule{freeMinutes, firstHourFen,
             perHourFen, dailyCapFen, description}, detectionType, phone
lot_dynamic  parkCode, totalBerths, freeBerths (null when no class is known), berthClasses[{berthClass,
             total, free}], parkStatus, observedTime, uploadTime, sequence
spot_status  parkCode, berthCode, berthClass, berthStatus, observedTime
passage      parkCode, recordId, direction (1 in, 2 out), plateNo + plateNoPolicy (per destination:
             full / masked / hashed / none), plateColor, laneCode, berthClass, passTime
charger_status stationCode, connectorCode, connectorStatus, errorCode, observedTime

Times are local (UTC+8) ISO-8601 with offset. The platform's rules checked here: a lot needs a
6/9/12-digit region code and a name of at most 100 characters; an entry/exit record needs a plate colour,
and a full plate must be a mainland plate number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from services.municipal import plates, vocab
from services.municipal.checks import EARLIEST, ID, MAX_FUTURE, Checker
from services.municipal.coords import wgs84_to_gcj02
from services.municipal.model import KINDS, OutboxRecord
from services.municipal.profiles.base import (
    FastRender,
    FastWire,
    Profile,
    RenderContext,
    changed_at,
    local_time,
    parsed_time,
)

# The fast paths below accept exactly these values (the vocabularies the checks allow), each with its code.
_PARK_STATUS = {s: vocab.MUNICIPAL_PARK_STATUS[s] for s in vocab.SITE_STATUSES}
_BERTH_STATUS = {s: vocab.MUNICIPAL_BERTH_STATUS[s] for s in vocab.SPOT_STATUSES}
_BERTH_CLASS = {c: vocab.MUNICIPAL_BERTH_CLASS[c] for c in vocab.SPACE_CLASSES}
_MAX_SEQUENCE = 2**63 - 1
_MAX_COUNT = 100_000


_CACHE_LIMIT = 65536
_IDENTS: set[str] = set()  # identifiers known to pass checks.ID
# payload time -> (microseconds since the epoch, local form); None if it is not ISO-8601 with an offset
_TIMES: dict[str, tuple[int, str] | None] = {}
_last_changed: list[Any] = [None, ""]  # the last created_at seen and its changedAt
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_EARLIEST_US = (EARLIEST - _EPOCH) // _US
_latest: list[Any] = [None, 0]  # the last `now` seen and the latest time it allows, in epoch microseconds


def _ident(value: str) -> bool:
    if value in _IDENTS:
        return True
    if ID.fullmatch(value) is None:
        return False
    if len(_IDENTS) >= _CACHE_LIMIT:
        _IDENTS.clear()
    _IDENTS.add(value)
    return True


def _latest_us(now: datetime) -> int:
    """now + MAX_FUTURE in epoch microseconds (the renderers get one `now` per slice of records)."""
    if _latest[0] is not now:
        _latest[0], _latest[1] = now, (now + MAX_FUTURE - _EPOCH) // _US
    return int(_latest[1])


def _time(value: Any, latest_us: int) -> str | None:
    """The local form of a valid payload time (ISO-8601 with offset, from 2000 on, not in the future). Aware times
    compare as their instants, which epoch microseconds are exactly."""
    if type(value) is not str:
        return None
    try:
        parsed = _TIMES[value]
    except KeyError:
        if len(_TIMES) >= _CACHE_LIMIT:
            _TIMES.clear()
        at = parsed_time(value)
        parsed = _TIMES[value] = None if at is None else ((at[0] - _EPOCH) // _US, at[1])
    if parsed is None or not _EARLIEST_US <= parsed[0] <= latest_us:
        return None
    return parsed[1]


def _changed_at(at: datetime) -> str:
    # Rows come in id order, so a transaction's rows (one created_at) mostly follow each other. Aware times with
    # the same tzinfo compare field by field, without the utcoffset() a hash needs.
    if at == _last_changed[0]:
        return str(_last_changed[1])
    text = changed_at(at)
    _last_changed[0], _last_changed[1] = at, text
    return text


def _wire_lot_dynamic(record: OutboxRecord, key: str, now: datetime) -> bytes | None:
    p = record.payload
    if type(p) is not dict:
        return None
    lot = p.get("lot_id")
    if type(lot) is not str or lot != record.aggregate_id or not _ident(lot):
        return None
    sequence = p.get("sequence", 0)
    if type(sequence) is not int or not 0 <= sequence <= _MAX_SEQUENCE:
        return None
    status = p.get("status")
    park_status = _PARK_STATUS.get(status) if type(status) is str else None
    if park_status is None:
        return None
    latest = _latest_us(now)
    observed = _time(p.get("observed_at"), latest)
    received = _time(p.get("received_at"), latest)
    if observed is None or received is None:
        return None
    cap = p.get("capacity")
    free = p.get("free")
    if type(cap) is not dict or type(free) is not dict:
        return None
    total = 0
    for name, count in cap.items():
        if name not in _BERTH_CLASS or type(count) is not int or not 0 <= count <= _MAX_COUNT:
            return None
        total += count
    if total <= 0:
        return None
    free_total = 0
    known = False
    for name, value in free.items():
        count = cap.get(name)
        if count is None:
            return None
        if value is not None:
            if type(value) is not int or not 0 <= value <= count:
                return None
            free_total += value
            known = True
    berths = ",".join([f'{{"berthClass":{_BERTH_CLASS[name]},"total":{count},'
                       f'"free":{"null" if (f := free.get(name)) is None else f}}}'
                       for name, count in cap.items() if count > 0])
    return (f'{{"idempotencyKey":"{key}","recordType":"lot_dynamic","sequence":{record.id},"aggregateId":"{lot}",'
            f'"changedAt":"{_changed_at(record.created_at)}","data":{{"parkCode":"{lot}","totalBerths":{total},'
            f'"freeBerths":{free_total if known else "null"},"berthClasses":[{berths}],'
            f'"parkStatus":{park_status},"observedTime":"{observed}","uploadTime":"{received}",'
            f'"sequence":{sequence}}}}}').encode()


def _wire_spot_status(record: OutboxRecord, key: str, now: datetime) -> bytes | None:
    p = record.payload
    if type(p) is not dict:
        return None
    lot, spot = p.get("lot_id"), p.get("spot_id")
    if (type(lot) is not str or lot != record.aggregate_id or not _ident(lot) or type(spot) is not str
            or not _ident(spot)):
        return None
    space_class, status = p.get("space_class"), p.get("status")
    berth_class = _BERTH_CLASS.get(space_class) if type(space_class) is str else None
    berth_status = _BERTH_STATUS.get(status) if type(status) is str else None
    observed = _time(p.get("observed_at"), _latest_us(now))
    if berth_class is None or berth_status is None or observed is None:
        return None
    return (f'{{"idempotencyKey":"{key}","recordType":"spot_status","sequence":{record.id},"aggregateId":"{lot}",'
            f'"changedAt":"{_changed_at(record.created_at)}","data":{{"parkCode":"{lot}","berthCode":"{spot}",'
            f'"berthClass":{berth_class},"berthStatus":{berth_status},"observedTime":"{observed}"}}}}').encode()


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


class MunicipalJson(Profile):
    name = "municipal_json"
    carries = frozenset(KINDS)
    content_type = "application/json; charset=utf-8"
    offers_counts = True

    def _point(self, lat: float, lon: float) -> tuple[float, float]:
        if self.destination.coordinate_system == "GCJ02":
            lat, lon = wgs84_to_gcj02(lat, lon)
        return round(lat, 6), round(lon, 6)

    def _map(self, c: Checker, record: OutboxRecord, key: str, ctx: RenderContext) -> Any:
        p = record.payload
        data = getattr(self, f"_{record.kind}")(c, p)
        return {**self.envelope(record, key), "data": data}

    def _lot_static(self, c: Checker, p: dict[str, Any]) -> dict[str, Any]:
        region = p.get("region_code") or ""
        if not region:
            c.fail("region_code", "the platform needs the lot's administrative region code")
        if len(p["name"]) > 100:
            c.fail("name", "the platform takes at most 100 characters")
        lat, lon = self._point(p["lat"], p["lon"])
        cap = p["capacity"]
        entrances = []
        for e in p.get("entrances") or []:
            elat, elon = self._point(e["lat"], e["lon"])
            entrances.append({"code": e["id"], "latitude": elat, "longitude": elon,
                              "type": 3 if e.get("entry") and e.get("exit") else (1 if e.get("entry") else 2)})
        price = p["price"]
        return {
            "parkCode": p["lot_id"], "parkName": p["name"], "address": p.get("address", ""),
            "regionCode": region[:6], "streetCode": region if len(region) > 6 else "",
            "coordinateSystem": self.destination.coordinate_system, "latitude": lat, "longitude": lon,
            "parkType": vocab.MUNICIPAL_PARK_TYPE[p["lot_kind"]], "operatorCode": p["operator_id"],
            "entrances": entrances, "totalBerths": p["total_spaces"], "evBerths": cap.get("ev", 0),
            "disabledBerths": cap.get("disabled", 0), "reservableBerths": cap.get("reserved", 0),
            "openAllDay": p["always_open"],
            "openingHours": [{"weekday": o["weekday"], "open": _hhmm(o["open_minute"]),
                              "close": _hhmm(o["close_minute"] % 1440)} for o in p.get("opening_periods") or []],
            "feeRule": {"freeMinutes": price.get("free_minutes", 0), "firstHourFen": price.get("first_hour_fen", 0),
                        "perHourFen": price.get("per_hour_fen", 0), "dailyCapFen": price.get("daily_cap_fen", 0),
                        "description": price.get("description", "")},
            "detectionType": vocab.MUNICIPAL_DETECTION[p["detection_type"]], "phone": p.get("phone", ""),
        }

    def _lot_dynamic(self, c: Checker, p: dict[str, Any]) -> dict[str, Any]:
        cap: dict[str, int] = p["capacity"]
        free: dict[str, int | None] = p["free"]
        known = [v for v in free.values() if v is not None]
        return {
            "parkCode": p["lot_id"], "totalBerths": sum(cap.values()),
            "freeBerths": sum(known) if known else None,
            "berthClasses": [{"berthClass": vocab.MUNICIPAL_BERTH_CLASS[name], "total": total,
                              "free": free.get(name)} for name, total in cap.items() if total > 0],
            "parkStatus": vocab.MUNICIPAL_PARK_STATUS[p["status"]],
            "observedTime": local_time(p.get("observed_at")), "uploadTime": local_time(p.get("received_at")),
            "sequence": p.get("sequence", 0),
        }

    def _spot_status(self, c: Checker, p: dict[str, Any]) -> dict[str, Any]:
        return {"parkCode": p["lot_id"], "berthCode": p["spot_id"],
                "berthClass": vocab.MUNICIPAL_BERTH_CLASS[p["space_class"]],
                "berthStatus": vocab.MUNICIPAL_BERTH_STATUS[p["status"]], "observedTime": local_time(p["observed_at"])}

    def _passage(self, c: Checker, p: dict[str, Any]) -> dict[str, Any]:
        policy = self.destination.plate_policy
        colour = p.get("plate_colour")
        if colour not in vocab.MUNICIPAL_PLATE_COLOUR:
            c.fail("plate_colour", "the platform needs the plate colour of an entry/exit record")
        if policy == "full" and not plates.is_mainland_plate(p["plate"]):
            c.fail("plate", "is not a mainland plate number, which a full-plate record must carry")
        return {"parkCode": p["lot_id"], "recordId": p["passage_id"],
                "direction": vocab.MUNICIPAL_DIRECTION[p["direction"]],
                "plateNo": plates.apply(policy, p["plate"], self.destination.secret), "plateNoPolicy": policy,
                "plateColor": vocab.MUNICIPAL_PLATE_COLOUR.get(colour or "", 9), "laneCode": p.get("lane", ""),
                "berthClass": vocab.MUNICIPAL_BERTH_CLASS[p["space_class"]], "passTime": local_time(p["passed_at"])}

    def _charger_status(self, c: Checker, p: dict[str, Any]) -> dict[str, Any]:
        return {"stationCode": p["station_id"], "connectorCode": p["connector_id"],
                "connectorStatus": vocab.MUNICIPAL_CONNECTOR_STATUS[p["status"]],
                "errorCode": str(p.get("error_code") or "").removeprefix("CONNECTOR_ERROR_CODE_"),
                "observedTime": local_time(p.get("observed_at"))}

    # ----- fast paths: the checks of checks.py and the mappings above, straight-line, for the frequent kinds -----
    # Each writes the record's JSON text itself, or gives None when anything is off (the general path then says
    # what). Only identifiers that passed checks.ID (letters, digits, . _ : -), integers, codes and ISO times go
    # into the text, so nothing in it needs escaping; the documents of `fast_renderers` are that text parsed.

    def fast_wires(self) -> Mapping[str, FastWire]:
        return {"lot_dynamic": _wire_lot_dynamic, "spot_status": _wire_spot_status}

    def fast_renderers(self) -> Mapping[str, FastRender]:
        def parsed(to_wire: FastWire) -> FastRender:
            def render(record: OutboxRecord, key: str, now: datetime) -> Any:
                wire = to_wire(record, key, now)
                return None if wire is None else orjson.loads(wire)
            return render
        return {kind: parsed(to_wire) for kind, to_wire in self.fast_wires().items()}

    def _envelope_of_batch(self, records: list[Any]) -> dict[str, Any]:
        return {"version": "1.0", "source": "v2x-suite", "destination": self.destination.name, "records": records}

    def body(self, docs: Sequence[Any]) -> bytes:
        return orjson.dumps(self._envelope_of_batch(docs if isinstance(docs, list) else list(docs)))

    def wire(self, doc: Any) -> bytes:
        return orjson.dumps(doc)

    def body_of(self, wires: Sequence[bytes]) -> bytes:
        empty = orjson.dumps(self._envelope_of_batch([]))  # ...,"records":[]}
        return empty[:-2] + b",".join(wires) + empty[-2:]

    def counts_url(self) -> str | None:
        if self.destination.reconcile_url:
            return self.destination.reconcile_url
        # By convention the platform answers counts beside the records endpoint: .../records -> .../counts.
        parts = urlsplit(self.destination.url)
        path = parts.path.rsplit("/", 1)[0] + "/counts"
        return urlunsplit((parts.scheme, parts.netloc, path, "", ""))

