"""A municipal platform emulator (`v2x platform-emulator`) for tests and the demo.

It receives the three profiles' batches, verifies each request's HMAC signature and timestamp, dedupes
records by idempotency key, answers per record, and keeps what it received in memory (optionally also
appended to a JSON-lines file that is read back on start, so dedupe survives a restart).

    POST /municipal/v1/records                 municipal JSON batches
    POST /datex2/v3/parking                    one DATEX II v3 d2:payload per request, checked against the
                                               published XSD (../shared/standards; --standards): 400 + the
                                               validation errors when invalid
    POST /ngsi-ld/v1/entityOperations/upsert   NGSI-LD batch upserts, as a broker: without ?options=update an
                                               entity replaces the one held (its other attributes are gone),
                                               with it the attributes are merged in; 201 [ids], or 207
                                               {"success": [ids], "errors": [{"entityId", "error"}]}
    GET  /municipal/v1/counts?day=YYYY-MM-DD[&kind=K&keys=1]   per-day counts of the sender (signed;
                                               X-V2X-Destination names the sender, as on its POSTs)
    GET  /_admin/state                         counters, faults, per-lot order violations
    PUT  /_admin/faults                        change failure modes at run time (JSON, any subset)
    GET  /_admin/lots                          {source: {aggregate: [sequence, ...]}} in arrival order
    GET  /_admin/entities[?source=S]           NGSI-LD entities as the broker holds them: {source: {id: entity}}
    POST /_admin/reset                         forget everything received
    GET  /healthz

Failure modes (flags, or PUT /_admin/faults): `fail_rate` of requests answered 500 (a share
`fail_after_store` of them after the records were stored, as a platform whose answer got lost),
`latency_ms` (+ `latency_jitter_ms`) added after storing, `drop_rate` of connections closed without an
answer, an outage window (`outage_s` from now, or --outage-at/--outage-for from start) answered 503 or
with dropped connections (`outage_mode`), `reject_aggregates` whose records get a per-record 422 (an NGSI-LD
entity error 400), and `transient_aggregates` whose NGSI-LD entities fail once with a 207 error of status 503.
The admin endpoints need `Authorization: Bearer <admin token>` when one is set.

With a certificate and its key (--tls-cert/--tls-key) it serves https instead of http, so that the adapter's
TLS (a destination's `ca_file` for a private CA) is exercised as a real platform would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import random
import ssl
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from lxml import etree

from services.municipal import signing
from services.municipal.model import KINDS, LOCAL_TZ
from services.municipal.standards import MissingStandards, datex2_errors, datex2_schema, standards_dir

log = logging.getLogger("v2x.emulator")
V2X_NS = "urn:v2x-suite:delivery:1"
MAX_BODY = 64 * 1024 * 1024


@dataclass
class Faults:
    fail_rate: float = 0.0
    fail_after_store: float = 0.5
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    drop_rate: float = 0.0
    outage_mode: str = "503"  # or "drop"
    outage_until: float = 0.0  # monotonic
    outage_from: float = 0.0  # monotonic
    reject_aggregates: list[str] = field(default_factory=list)
    transient_aggregates: list[str] = field(default_factory=list)  # NGSI-LD: their entities fail once, with 503

    def in_outage(self, now: float) -> bool:
        return self.outage_from <= now < self.outage_until


@dataclass(frozen=True, slots=True)
class Incoming:
    """One record of a batch as the platform sees it."""

    key: str
    kind: str
    aggregate: str
    sequence: int
    changed_at: str
    problems: tuple[str, ...] = ()
    source: str = ""  # the sender's destination name (X-V2X-Destination): counts are kept per source
    entity: str = ""  # NGSI-LD: the id of the entity that carried the record


@dataclass
class Stats:
    requests: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    bad_signature: int = 0
    stale_timestamp: int = 0
    injected_500: int = 0
    injected_503: int = 0
    dropped: int = 0
    in_flight: int = 0
    order_violations: int = 0
    invalid_bodies: int = 0  # answered 400: not valid against the standard's schema


class Platform:
    """What the emulator has received, and how it is told to misbehave."""

    def __init__(self, secrets: list[str], tolerance_s: float, faults: Faults, store: Path | None = None,
                 seed: int | None = None, admin_token: str = "", standards: Path | bool | None = True) -> None:
        self.secrets = secrets
        # DATEX II bodies are checked against the published XSD of the standards folder (True: the default folder,
        # ../shared/standards; False or None: not checked). A folder that is not there raises MissingStandards.
        folder = standards_dir() if standards is True else standards or None
        self.datex2: etree.XMLSchema | None = datex2_schema(folder) if isinstance(folder, Path) else None
        # Every signed body received, with its path, when asked for (conformance tests read them).
        self.bodies: list[tuple[str, bytes]] | None = None
        self.tolerance_s = tolerance_s
        self.faults = faults
        self.store = store
        self.rng = random.Random(seed)
        self.admin_token = admin_token
        self.stats = Stats()
        self.seen: dict[str, Incoming] = {}
        self.lots: dict[tuple[str, str], list[int]] = {}  # (source, aggregate) -> sequences in arrival order
        self.counts: dict[tuple[str, str, str], int] = {}  # (source, day, kind) -> records
        self.keys: dict[tuple[str, str, str], list[str]] = {}
        # NGSI-LD: the entities as a broker holds them, per sender: (source, entity id) -> entity.
        self.entities: dict[tuple[str, str], dict[str, Any]] = {}
        self._file: Any = None
        if store is not None:
            self._load(store)
            self._file = store.open("a", encoding="utf-8")

    def _load(self, path: Path) -> None:
        if not path.exists():
            return
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError, TypeError, KeyError):
                d = json.loads(line)
                self._keep(Incoming(d["key"], d["kind"], d["aggregate"], int(d["sequence"]), d["changed_at"],
                                    source=d.get("source", "")), persist=False)

    def reset(self) -> None:
        self.stats = Stats(in_flight=self.stats.in_flight)
        if self.bodies is not None:
            self.bodies.clear()
        self.seen.clear()
        self.lots.clear()
        self.counts.clear()
        self.keys.clear()
        self.entities.clear()

    def _keep(self, rec: Incoming, persist: bool = True) -> None:
        self.seen[rec.key] = rec
        order = self.lots.setdefault((rec.source, rec.aggregate), [])
        if order and rec.sequence < order[-1]:
            self.stats.order_violations += 1
        order.append(rec.sequence)
        at = (rec.source, _day(rec.changed_at), rec.kind)
        self.counts[at] = self.counts.get(at, 0) + 1
        self.keys.setdefault(at, []).append(rec.key)
        if persist and self._file is not None:
            self._file.write(json.dumps(asdict(rec) | {"problems": None}, ensure_ascii=False) + "\n")

    def accept(self, records: list[Incoming], source: str = "") -> list[dict[str, Any]]:
        """Stores new records (in order), answers each: 201 new, 200 duplicate, 422 refused."""
        results: list[dict[str, Any]] = []
        reject = set(self.faults.reject_aggregates)
        for rec in records:
            if rec.problems or rec.aggregate in reject:
                self.stats.rejected += 1
                why = "; ".join(rec.problems) or f"the platform refuses records of {rec.aggregate}"
                results.append({"idempotencyKey": rec.key, "status": 422, "error": why})
            elif rec.key in self.seen:
                self.stats.duplicates += 1
                results.append({"idempotencyKey": rec.key, "status": 200})
            else:
                self.stats.accepted += 1
                self._keep(dataclasses.replace(rec, source=source) if source and rec.source != source else rec)
                results.append({"idempotencyKey": rec.key, "status": 201})
        if self._file is not None:
            self._file.flush()
        return results

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


@functools.lru_cache(maxsize=4096)
def _day(changed_at: str) -> str:
    try:
        return datetime.fromisoformat(changed_at).astimezone(LOCAL_TZ).date().isoformat()
    except ValueError:
        return "invalid"


# ----- reading each profile's batches ---------------------------------------------------------------------


def _envelope(env: Any, problems: list[str], source: str = "") -> Incoming:
    if not isinstance(env, dict):
        return Incoming("", "", "", 0, "", ("record has no delivery envelope",))
    key, kind, agg = env.get("idempotencyKey"), env.get("recordType"), env.get("aggregateId")
    seq, changed = env.get("sequence"), env.get("changedAt")
    if not isinstance(key, str) or not key:
        problems.append("idempotencyKey is missing")
    if kind not in KINDS:
        problems.append(f"recordType {kind!r} is unknown")
    if not isinstance(agg, str) or not agg:
        problems.append("aggregateId is missing")
    try:
        sequence = int(seq)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        sequence = 0
        problems.append("sequence is not an integer")
    if not isinstance(changed, str) or _day(changed) == "invalid":
        problems.append("changedAt is not an ISO-8601 time")
    return Incoming(str(key or ""), str(kind or ""), str(agg or ""), sequence, str(changed or ""), tuple(problems),
                    source)


_MUNICIPAL_REQUIRED = {
    "lot_static": ("parkCode", "parkName", "regionCode", "coordinateSystem", "latitude", "longitude", "totalBerths",
                   "publicBerths", "feeRule"),
    "lot_dynamic": ("parkCode", "totalBerths", "parkStatus"),
    "spot_status": ("parkCode", "berthCode", "berthStatus"),
    "passage": ("parkCode", "recordId", "direction", "plateColor", "passTime"),
    "charger_status": ("stationCode", "connectorCode", "connectorStatus"),
    "charger_static": ("stationCode", "stationName", "operatorCode", "coordinateSystem", "latitude", "longitude",
                       "connectors"),
}


def read_municipal_json(body: bytes, source: str = "") -> list[Incoming]:
    doc = orjson.loads(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("records"), list):
        raise ValueError("body must be an object with a records list")
    out = []
    for rec in doc["records"]:
        problems: list[str] = []
        data = rec.get("data") if isinstance(rec, dict) else None
        kind = rec.get("recordType") if isinstance(rec, dict) else None
        if not isinstance(data, dict):
            problems.append("data is missing")
        else:
            problems += [f"data.{f} is missing" for f in _MUNICIPAL_REQUIRED.get(str(kind), ()) if data.get(f) is None]
            if kind == "lot_dynamic" and isinstance(data.get("freeBerths"), int) and isinstance(
                    data.get("totalBerths"), int) and not 0 <= data["freeBerths"] <= data["totalBerths"]:
                problems.append("data.freeBerths is outside 0..totalBerths")
        out.append(_envelope(rec, problems, source))
    return out


D2_NS = "http://datex2.eu/schema/3/d2Payload"
# The elements that are one record each in the profile's publications.
_DATEX2_RECORDS = ("{http://datex2.eu/schema/3/parking}hierarchyElementGeneral",
                   "{http://datex2.eu/schema/3/parking}parkingStatusInformation",
                   "{http://datex2.eu/schema/3/energyInfrastructure}energyInfrastructureSite",
                   "{http://datex2.eu/schema/3/energyInfrastructure}energyInfrastructureSiteStatus")


def read_datex2(body: bytes, source: str = "") -> list[Incoming]:
    """The records of one DATEX II v3 `d2:payload` (checked against the XSD before, when the emulator has it), each
    with the delivery facts of its `v2x:delivery` extension element."""
    root = ET.fromstring(body)
    if root.tag != f"{{{D2_NS}}}payload":
        raise ValueError("root element must be d2:payload (one DATEX II payload per request)")
    out = []
    for tag in _DATEX2_RECORDS:
        for rec in root.iter(tag):
            delivery = rec.find(f".//{{{V2X_NS}}}delivery")
            if delivery is None:
                out.append(Incoming("", "", "", 0, "", (f"{tag.rsplit('}', 1)[1]} has no v2x:delivery facts",)))
                continue
            out.append(_envelope(dict(delivery.attrib), [], source))
    if not out:
        raise ValueError("the payload holds no record")
    out.sort(key=lambda r: r.sequence)
    return out


def read_ngsi_ld(body: bytes, source: str = "") -> list[Incoming]:
    """The records of an NGSI-LD batch upsert: each entity's `v2xDelivery` facts (a list: the records merged into the
    entity), each record knowing its entity. An entity id that comes twice in a batch is refused, as brokers do."""
    doc = orjson.loads(body)
    if not isinstance(doc, list):
        raise ValueError("an NGSI-LD batch upsert is a JSON array of entities")
    out = []
    ids: set[str] = set()
    for entity in doc:
        problems: list[str] = []
        if not isinstance(entity, dict):
            out.append(Incoming("", "", "", 0, "", ("entity is not an object",)))
            continue
        eid = str(entity.get("id", ""))
        if not eid.startswith("urn:ngsi-ld:") or not entity.get("type"):
            problems.append("entity needs an urn:ngsi-ld: id and a type")
        if eid in ids:
            problems.append(f"entity {eid} comes twice in the batch")
        ids.add(eid)
        delivery = entity.get("v2xDelivery")
        facts = delivery.get("value") if isinstance(delivery, dict) else None
        for env in facts if isinstance(facts, list) and facts else [facts]:
            out.append(dataclasses.replace(_envelope(env, list(problems), source), entity=eid))
    return out


def upsert(entities: dict[tuple[str, str], dict[str, Any]], source: str, entity: dict[str, Any], update: bool) -> bool:
    """An entity into the broker's store: merged into the one it has (`options=update`: its other attributes stay)
    or replacing it whole (the default). True when it was created."""
    key = (source, str(entity["id"]))
    had = entities.get(key)
    if had is None or not update:
        entities[key] = dict(entity)
        return had is None
    had.update({k: v for k, v in entity.items() if k not in ("id", "type")})
    return False


def ngsi_answer(p: Platform, body: bytes, source: str, update: bool, results: list[dict[str, Any]],
                records: list[Incoming], transient: set[str]) -> web.Response:
    """A broker's answer to a batch upsert: 201 with the ids when every entity went in, else 207 with
    {"success": [ids], "errors": [{"entityId", "error": ProblemDetails}]}; accepted entities are stored."""
    refused: dict[str, str] = {}
    for rec, res in zip(records, results, strict=True):
        if res["status"] >= 400:
            refused.setdefault(rec.entity, res.get("error", "refused"))
    success, errors = [], []
    for entity in orjson.loads(body):
        eid = str(entity.get("id", "")) if isinstance(entity, dict) else ""
        if eid in transient:
            errors.append({"entityId": eid, "error": {"type": "https://uri.etsi.org/ngsi-ld/errors/InternalError",
                                                      "title": "injected transient failure", "status": 503}})
        elif eid in refused or not eid:
            errors.append({"entityId": eid, "error": {"type": "https://uri.etsi.org/ngsi-ld/errors/BadRequestData",
                                                      "title": refused.get(eid, "not an entity"), "status": 400}})
        elif eid not in success:
            upsert(p.entities, source, entity, update)
            success.append(eid)
    if errors:
        return web.Response(body=orjson.dumps({"success": success, "errors": errors}), status=207,
                            content_type="application/json")
    return web.Response(body=orjson.dumps(success), status=201, content_type="application/json")


DATEX2_PATH = "/datex2/v3/parking"
NGSI_PATH = "/ngsi-ld/v1/entityOperations/upsert"
READERS: dict[str, Callable[[bytes, str], list[Incoming]]] = {
    "/municipal/v1/records": read_municipal_json,
    DATEX2_PATH: read_datex2,
    NGSI_PATH: read_ngsi_ld,
}


# ----- the web app ------------------------------------------------------------------------------------------

PLATFORM = web.AppKey("platform", Platform)


def _drop(request: web.Request) -> web.Response:
    """Closes the connection without an answer (the client sees a disconnect)."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=500)


async def _ingest(request: web.Request) -> web.StreamResponse:
    p = request.app[PLATFORM]
    f = p.faults
    p.stats.requests += 1
    p.stats.in_flight += 1
    try:
        if f.in_outage(time.monotonic()):
            if f.outage_mode == "drop":
                p.stats.dropped += 1
                return _drop(request)
            p.stats.injected_503 += 1
            return web.json_response({"error": "platform outage"}, status=503, headers={"Retry-After": "1"})
        body = await request.read()
        why = signing.verify(p.secrets, request.headers.get(signing.TIMESTAMP_HEADER),
                             request.headers.get(signing.SIGNATURE_HEADER), body, time.time(), p.tolerance_s)
        if why is not None:
            if why.startswith("timestamp is ") and "from the receiver" in why:
                p.stats.stale_timestamp += 1
            else:
                p.stats.bad_signature += 1
            return web.json_response({"error": why}, status=401)
        if p.bodies is not None:
            p.bodies.append((request.path, body))
        if request.path == DATEX2_PATH and p.datex2 is not None:
            errors = datex2_errors(p.datex2, body)
            if errors:
                p.stats.invalid_bodies += 1
                return web.json_response({"error": "the payload is not valid DATEX II v3.5 (DATEXII_3_D2Payload.xsd)",
                                          "errors": errors}, status=400)
        try:
            # Each record is read with its sender (X-V2X-Destination) at once: no copy per record to add it later.
            source = request.headers.get("X-V2X-Destination", "")
            records = READERS[request.path](body, source)
        except (ValueError, ET.ParseError) as exc:
            return web.json_response({"error": f"unreadable batch: {exc}"}, status=400)
        fail = p.rng.random() < f.fail_rate
        after = fail and p.rng.random() < f.fail_after_store
        drop = p.rng.random() < f.drop_rate
        drop_after = drop and p.rng.random() < 0.5
        if fail and not after:
            p.stats.injected_500 += 1
            return web.json_response({"error": "injected failure"}, status=500)
        if drop and not drop_after:
            p.stats.dropped += 1
            return _drop(request)
        transient: set[str] = set()
        if request.path == NGSI_PATH and f.transient_aggregates:
            # Entities of these aggregates fail once, transiently (a 207 error with status 503), and are not stored.
            transient = {r.entity for r in records if r.aggregate in f.transient_aggregates}
            f.transient_aggregates = [a for a in f.transient_aggregates if a not in {r.aggregate for r in records}]
            records = [r for r in records if r.entity not in transient]
        results = p.accept(records, source)
        delay = f.latency_ms + (p.rng.uniform(0, f.latency_jitter_ms) if f.latency_jitter_ms else 0.0)
        if delay > 0:
            await asyncio.sleep(delay / 1000)
        if fail:
            p.stats.injected_500 += 1
            return web.json_response({"error": "injected failure after storing"}, status=500)
        if drop_after:
            p.stats.dropped += 1
            return _drop(request)
        if request.path == NGSI_PATH:
            return ngsi_answer(p, body, source, request.query.get("options") == "update", results, records,
                               transient)
        rejected = sum(1 for r in results if r["status"] >= 400)
        return web.Response(body=orjson.dumps({
            "results": results, "accepted": sum(1 for r in results if r["status"] == 201),
            "duplicates": sum(1 for r in results if r["status"] == 200), "rejected": rejected}),
            status=207 if rejected else 200, content_type="application/json")
    finally:
        p.stats.in_flight -= 1


async def _counts(request: web.Request) -> web.Response:
    p = request.app[PLATFORM]
    why = signing.verify(p.secrets, request.headers.get(signing.TIMESTAMP_HEADER),
                         request.headers.get(signing.SIGNATURE_HEADER), b"", time.time(), p.tolerance_s)
    if why is not None:
        return web.json_response({"error": why}, status=401)
    day = request.query.get("day", "")
    kind = request.query.get("kind")
    source = request.headers.get("X-V2X-Destination", "")
    if kind is not None and request.query.get("keys"):
        return web.json_response({"day": day, "kind": kind, "keys": p.keys.get((source, day, kind), [])})
    return web.json_response({"day": day, "counts": {k: n for (src, d, k), n in p.counts.items()
                                                     if d == day and src == source}})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _admin_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[PLATFORM].admin_token
    if request.path.startswith("/_admin/") and token and request.headers.get("Authorization") != f"Bearer {token}":
        return web.json_response({"error": "admin token required"}, status=401)
    return await handler(request)


def _state(p: Platform) -> dict[str, Any]:
    now = time.monotonic()
    faults = asdict(p.faults)
    faults["outage_remaining_s"] = max(0.0, p.faults.outage_until - now) if p.faults.in_outage(now) else 0.0
    del faults["outage_until"], faults["outage_from"]
    return {"stats": asdict(p.stats), "unique_records": len(p.seen), "lots": len(p.lots), "faults": faults}


async def _get_state(request: web.Request) -> web.Response:
    return web.json_response(_state(request.app[PLATFORM]))


async def _put_faults(request: web.Request) -> web.Response:
    p = request.app[PLATFORM]
    try:
        change = await request.json()
        if not isinstance(change, dict):
            raise ValueError("send a JSON object")
        apply_faults(p.faults, change)
    except (ValueError, TypeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    log.info("faults changed", extra={"change": change})
    return web.json_response(_state(p))


def apply_faults(f: Faults, change: dict[str, Any]) -> None:
    for name in ("fail_rate", "fail_after_store", "drop_rate"):
        if name in change:
            v = float(change[name])
            if not 0 <= v <= 1:
                raise ValueError(f"{name} must be 0..1")
            setattr(f, name, v)
    for name in ("latency_ms", "latency_jitter_ms"):
        if name in change:
            v = float(change[name])
            if not 0 <= v <= 600_000:
                raise ValueError(f"{name} must be 0..600000")
            setattr(f, name, v)
    if "outage_mode" in change:
        if change["outage_mode"] not in ("503", "drop"):
            raise ValueError("outage_mode must be 503 or drop")
        f.outage_mode = change["outage_mode"]
    if "outage_s" in change:
        v = float(change["outage_s"])
        start = time.monotonic() + float(change.get("outage_in_s", 0))
        f.outage_from, f.outage_until = start, start + max(v, 0.0)
    if "transient_aggregates" in change:
        if not isinstance(change["transient_aggregates"], list):
            raise ValueError("transient_aggregates must be a list")
        f.transient_aggregates = [str(a) for a in change["transient_aggregates"]]
    if "reject_aggregates" in change:
        if not isinstance(change["reject_aggregates"], list):
            raise ValueError("reject_aggregates must be a list")
        f.reject_aggregates = [str(a) for a in change["reject_aggregates"]]


async def _lots(request: web.Request) -> web.Response:
    out: dict[str, dict[str, list[int]]] = {}
    for (source, aggregate), seqs in request.app[PLATFORM].lots.items():
        out.setdefault(source, {})[aggregate] = seqs
    return web.json_response(out)


async def _entities(request: web.Request) -> web.Response:
    """The NGSI-LD entities as the broker holds them: {source: {entity id: entity}} (`?source=` one sender's)."""
    only = request.query.get("source")
    out: dict[str, dict[str, Any]] = {}
    for (source, eid), entity in request.app[PLATFORM].entities.items():
        if only is None or source == only:
            out.setdefault(source, {})[eid] = entity
    return web.json_response(out)


async def _reset(request: web.Request) -> web.Response:
    request.app[PLATFORM].reset()
    return web.json_response({"reset": True})


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def build_app(platform: Platform) -> web.Application:
    app = web.Application(middlewares=[_admin_auth], client_max_size=MAX_BODY)
    app[PLATFORM] = platform
    for path in READERS:
        app.router.add_post(path, _ingest)
    app.router.add_get("/municipal/v1/counts", _counts)
    app.router.add_get("/_admin/state", _get_state)
    app.router.add_put("/_admin/faults", _put_faults)
    app.router.add_get("/_admin/lots", _lots)
    app.router.add_get("/_admin/entities", _entities)
    app.router.add_post("/_admin/reset", _reset)
    app.router.add_get("/healthz", _health)
    return app


@dataclass
class RunningEmulator:
    runner: web.AppRunner
    platform: Platform
    port: int
    scheme: str = "http"  # https when started with a certificate

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        await self.runner.cleanup()
        self.platform.close()


def server_tls(cert: Path, key: Path) -> ssl.SSLContext:
    """The server side of TLS: `cert` is the PEM chain (leaf first), `key` its private key. No client
    certificates are asked for: the platform authenticates senders by their HMAC signature."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


async def start_emulator(platform: Platform, host: str = "127.0.0.1", port: int = 0, tls_cert: Path | None = None,
                         tls_key: Path | None = None) -> RunningEmulator:
    """Serves `platform` on host:port (0 = a free port); https when given a certificate and its key."""
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("tls_cert and tls_key go together")
    # Load the certificate before binding, so that a bad one fails without leaving a listener behind.
    tls = server_tls(tls_cert, tls_key) if tls_cert is not None and tls_key is not None else None
    runner = web.AppRunner(build_app(platform), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=tls)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    return RunningEmulator(runner, platform, int(bound), "https" if tls is not None else "http")


def _tls_files(ns: argparse.Namespace) -> tuple[Path | None, Path | None]:
    """--tls-cert and --tls-key, tried once here so that a bad pair ends the command with a message rather than
    a traceback."""
    if ns.tls_cert is None and ns.tls_key is None:
        return None, None
    if ns.tls_cert is None or ns.tls_key is None:
        raise SystemExit("platform-emulator: --tls-cert and --tls-key go together")
    try:
        server_tls(ns.tls_cert, ns.tls_key)
    except OSError as exc:  # ssl.SSLError is one: not PEM, or a key that is not the certificate's
        raise SystemExit(f"platform-emulator: cannot use --tls-cert/--tls-key: {exc}") from None
    return ns.tls_cert, ns.tls_key


async def run(ns: argparse.Namespace, env: dict[str, str]) -> None:
    secrets = list(ns.secret) + ([env["V2X_EMULATOR_SECRET"]] if env.get("V2X_EMULATOR_SECRET") else [])
    if not secrets:
        raise SystemExit("platform-emulator: give at least one --secret (or V2X_EMULATOR_SECRET)")
    tls_cert, tls_key = _tls_files(ns)
    faults = Faults()
    apply_faults(faults, {"fail_rate": ns.fail_rate, "fail_after_store": ns.fail_after_store,
                          "latency_ms": ns.latency_ms, "latency_jitter_ms": ns.latency_jitter_ms,
                          "drop_rate": ns.drop_rate, "outage_mode": ns.outage_mode})
    if ns.outage_for > 0:
        apply_faults(faults, {"outage_s": ns.outage_for, "outage_in_s": ns.outage_at})
    admin_token = ns.admin_token or env.get("V2X_EMULATOR_ADMIN_TOKEN", "")
    standards = None if ns.no_schema_check else (ns.standards or standards_dir(env))
    try:
        platform = Platform(secrets, ns.max_skew_s, faults, ns.store, ns.seed, admin_token, standards)
    except MissingStandards as exc:
        print(f"platform-emulator: DATEX II bodies are not checked against the XSD: {exc}", flush=True)
        platform = Platform(secrets, ns.max_skew_s, faults, ns.store, ns.seed, admin_token, None)
    running = await start_emulator(platform, ns.host, ns.port, tls_cert, tls_key)
    print(f"municipal platform emulator on {running.scheme}://{ns.host}:{running.port} "
          f"(records: /municipal/v1/records, /datex2/v3/parking, /ngsi-ld/v1/entityOperations/upsert; "
          f"admin: /_admin/state)", flush=True)
    from services.common.server import wait_for_stop_signal

    try:
        await wait_for_stop_signal()
    finally:
        await running.stop()
