"""`v2x sim score`: runs a scenario against a running suite and compares what the services reported with the truth.

* detections (StreamFrames results) against the rendered boxes: precision and recall at IoU >= 0.5 per class (a
  truth box less than half visible or under 16 pixels a side neither counts as missed nor makes a match a false
  positive);
* counts per lane per minute (GetCounts) against the vehicles that entered the camera's stretch of each lane: MAPE
  over the lane-minutes fully inside the run that had traffic;
* queue length per lane coming in (each result's lane state) against the E2 detectors': mean absolute error, m;
* speeds of matched detections against SUMO's: RMSE, km/h;
* events: each injected event against the incidents IDPS opened (Subscribe, police): a match is the same type
  within MATCH_RADIUS_M of the event, opened between its start and its end plus MATCH_AFTER_S; precision counts
  every incident of the type IDPS opened near the simulated cameras; latency from the event's start to the
  incident's creation (and after the rule's own hold, see roadside_sim/scenario.py);
* on-street spots: parking's spot states (ListSpots, polled every 2 s) against the truth 2 s before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grpc import aio
from v2x.charging.v1 import charging_pb2 as cpb_charging
from v2x.charging.v1.charging_pb2_grpc import ChargingServiceStub
from v2x.common.v1 import common_pb2 as cpb
from v2x.idps.v1 import idps_pb2 as ipb
from v2x.idps.v1.idps_pb2_grpc import IdpsServiceStub
from v2x.parking.v1 import parking_pb2 as ppb
from v2x.parking.v1.parking_pb2_grpc import ParkingServiceStub
from v2x.roadside.v1 import roadside_pb2 as rpb
from v2x.roadside.v1.roadside_pb2_grpc import RoadsideServiceStub

from roadside_sim.cameras import rigs as make_rigs
from roadside_sim.chargers import ChargerTruth, district_chargers, status_name
from roadside_sim.geometry import box_iou
from roadside_sim.network import District
from roadside_sim.run import SimConfig, SimRun, simulate, summary
from roadside_sim.scenario import HOLD_S, Kind

if TYPE_CHECKING:
    from v2x.charging.v1.charging_pb2_grpc import ChargingServiceAsyncStub as ChargingStub
    from v2x.idps.v1.idps_pb2_grpc import IdpsServiceAsyncStub as IdpsStub
    from v2x.parking.v1.parking_pb2_grpc import ParkingServiceAsyncStub as ParkingStub
    from v2x.roadside.v1.roadside_pb2_grpc import RoadsideServiceAsyncStub as RoadsideStub
else:
    ChargingStub, IdpsStub, ParkingStub, RoadsideStub = (ChargingServiceStub, IdpsServiceStub, ParkingServiceStub,
                                                         RoadsideServiceStub)

IOU = 0.5
MIN_VISIBLE = 0.5
MIN_SIDE_PX = 16
MATCH_RADIUS_M = 80.0
MATCH_AFTER_S = 90.0
CAMERA_RADIUS_M = 150.0
SPOT_LAG_S = 2.0
CHARGER_LAG_S = 2.0
LATE_INCIDENTS_S = 15.0
CLASS_NAMES = {rpb.OBJECT_CLASS_CAR: "car", rpb.OBJECT_CLASS_BUS: "bus", rpb.OBJECT_CLASS_TRUCK: "truck",
               rpb.OBJECT_CLASS_MOTORCYCLE: "motorcycle", rpb.OBJECT_CLASS_BICYCLE: "bicycle",
               rpb.OBJECT_CLASS_PERSON: "person"}


def _md(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    k = math.pi / 180 * 6_371_008.8
    return math.hypot((a[1] - b[1]) * k * math.cos(math.radians(a[0])), (a[0] - b[0]) * k)


@dataclass
class Watch:
    """What the suite said while the scenario ran."""

    # (incident id, type) -> when the incident came to have that type (opened with it, or a report of a more specific
    # type joined it: a crash reported where a stopped vehicle was), and the incident then
    typed: dict[tuple[str, int], tuple[datetime, ipb.Incident]] = field(default_factory=dict)
    spot_samples: list[tuple[datetime, str, str, str]] = field(default_factory=list)
    charger_samples: list[tuple[datetime, str, str]] = field(default_factory=list)
    snapshot_done: bool = False


async def watch_incidents(idps: IdpsStub, key: str, centre: tuple[float, float], watch: Watch) -> None:
    request = ipb.SubscribeRequest(filter=ipb.IncidentFilter(area=cpb.Area(circle=cpb.Circle(
        center=cpb.LatLon(lat=centre[0], lon=centre[1]), radius_m=1500))), heartbeat_interval_s=5)
    known: set[str] = set()
    async for response in idps.Subscribe(request, metadata=_md(key)):
        for m in response.messages:
            if m.kind == ipb.IncidentMessage.KIND_SNAPSHOT_END:
                watch.snapshot_done = True
            elif m.kind in (ipb.IncidentMessage.KIND_NEW, ipb.IncidentMessage.KIND_UPDATE):
                inc = m.incident
                if not watch.snapshot_done:
                    known.add(inc.id)  # opened before the run
                elif inc.id not in known and (inc.id, int(inc.type)) not in watch.typed:
                    at = inc.created_at if m.kind == ipb.IncidentMessage.KIND_NEW else inc.updated_at
                    watch.typed[(inc.id, int(inc.type))] = (at.ToDatetime(tzinfo=UTC), inc)


async def poll_spots(parking: ParkingStub, key: str, lots: list[str], watch: Watch, stop: asyncio.Event) -> None:
    while not stop.is_set():
        for lot in lots:
            with contextlib.suppress(aio.AioRpcError):
                reply = await parking.ListSpots(ppb.ListSpotsRequest(lot_id=lot), metadata=_md(key), timeout=5)
                now = datetime.now(UTC)
                for s in reply.spots:
                    watch.spot_samples.append((now, lot, s.id, ppb.SpotStatus.Name(s.status).removeprefix(
                        "SPOT_STATUS_")))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 2.0)


async def poll_chargers(charging: ChargingStub, key: str, stations: list[str], watch: Watch, stop: asyncio.Event
                        ) -> None:
    while not stop.is_set():
        for sid in stations:
            with contextlib.suppress(aio.AioRpcError):
                st = await charging.GetStation(cpb_charging.GetStationRequest(station_id=sid), metadata=_md(key),
                                               timeout=5)
                now = datetime.now(UTC)
                watch.charger_samples += [(now, c.id, status_name(c.state.status)) for e in st.evses
                                          for c in e.connectors]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 2.0)


def judged(visible: float, box: Sequence[float]) -> bool:
    """Whether a truth box counts in detection scores: at least half visible, and no side under MIN_SIDE_PX (a box
    that does not count is neither missed nor, when found, a false positive)."""
    return visible >= MIN_VISIBLE and box[2] - box[0] >= MIN_SIDE_PX and box[3] - box[1] >= MIN_SIDE_PX


def greedy_matches(truths: Sequence[tuple[float, float, float, float]],
                   found: Sequence[tuple[float, float, float, float]],
                   classes: tuple[Sequence[str], Sequence[str]] | None = None) -> list[tuple[int, int]]:
    """(truth, found) index pairs at IoU >= IOU, best IoU first, each box in one pair at most; with `classes` (the
    truth boxes', the found boxes'), only pairs of the same class."""
    pairs = []
    for i, g in enumerate(truths):
        for j, box in enumerate(found):
            if classes is not None and classes[0][i] != classes[1][j]:
                continue
            iou = box_iou(g, box)
            if iou >= IOU:
                pairs.append((iou, i, j))
    used_g: set[int] = set()
    used_d: set[int] = set()
    out = []
    for _, i, j in sorted(pairs, reverse=True):
        if i in used_g or j in used_d:
            continue
        used_g.add(i)
        used_d.add(j)
        out.append((i, j))
    return out


def detection_scores(run: SimRun) -> dict[str, Any]:
    tp: dict[str, int] = defaultdict(int)
    fp: dict[str, int] = defaultdict(int)
    fn: dict[str, int] = defaultdict(int)
    agnostic = [0, 0, 0]
    speed_err: list[float] = []
    truth = run.truth
    for key, result in truth.results.items():
        t = truth.frames.get(key)
        if t is None or result.HasField("error"):
            continue
        gts = [(b, judged(b.visible, b.box)) for b in t.boxes]
        dets = [(d, CLASS_NAMES.get(d.object_class, "other"),
                 (d.box.x_min, d.box.y_min, d.box.x_max, d.box.y_max)) for d in result.detections]
        classes = ([str(g.object_class) for g, _ in gts], [cls for _, cls, _ in dets])
        # Class-aware greedy matching, best IoU first, then class-agnostic.
        for agnostic_pass in (False, True):
            matches = greedy_matches([g.box for g, _ in gts], [box for _, _, box in dets],
                                     None if agnostic_pass else classes)
            used_g, used_d = {i for i, _ in matches}, {j for _, j in matches}
            for i, j in matches:
                g, counts = gts[i]
                d, cls, _ = dets[j]
                # A detection of a truth box that does not count (mostly hidden, tiny) is neither right nor wrong.
                if agnostic_pass:
                    if counts:
                        agnostic[0] += 1
                    if d.HasField("speed_mps") and counts and g.vid in t.speeds:
                        speed_err.append((d.speed_mps - t.speeds[g.vid]) * 3.6)
                elif counts:
                    tp[cls] += 1
            for i, (g, counts) in enumerate(gts):
                if i not in used_g and counts:
                    if agnostic_pass:
                        agnostic[2] += 1
                    else:
                        fn[str(g.object_class)] += 1
            for j, (_, cls, _) in enumerate(dets):
                if j not in used_d:
                    if agnostic_pass:
                        agnostic[1] += 1
                    else:
                        fp[cls] += 1
    per_class = {}
    for cls in sorted(set(tp) | set(fp) | set(fn)):
        p = tp[cls] / (tp[cls] + fp[cls]) if tp[cls] + fp[cls] else None
        r = tp[cls] / (tp[cls] + fn[cls]) if tp[cls] + fn[cls] else None
        per_class[cls] = {"tp": tp[cls], "fp": fp[cls], "fn": fn[cls], "precision": p, "recall": r}
    a_tp, a_fp, a_fn = agnostic
    rmse = math.sqrt(sum(e * e for e in speed_err) / len(speed_err)) if speed_err else None
    return {"per_class": per_class,
            "any_class": {"tp": a_tp, "fp": a_fp, "fn": a_fn,
                          "precision": a_tp / (a_tp + a_fp) if a_tp + a_fp else None,
                          "recall": a_tp / (a_tp + a_fn) if a_tp + a_fn else None},
            "speed": {"rmse_kmh": rmse, "samples": len(speed_err),
                      "mean_error_kmh": statistics.fmean(speed_err) if speed_err else None}}


def queue_scores(run: SimRun) -> dict[str, Any]:
    errors: list[float] = []
    busy: list[float] = []
    for key, result in run.truth.results.items():
        t = run.truth.frames.get(key)
        if t is None or result.HasField("error"):
            continue
        reported = {lane.lane_id: lane.queue_length_m for lane in result.lanes}
        for lane, true_m in t.queues.items():
            if lane not in reported:
                continue
            e = abs(reported[lane] - true_m)
            errors.append(e)
            if true_m > 0 or reported[lane] > 0:
                busy.append(e)
    return {"mae_m": statistics.fmean(errors) if errors else None, "samples": len(errors),
            "mae_when_queued_m": statistics.fmean(busy) if busy else None, "queued_samples": len(busy)}


async def count_scores(run: SimRun, roadside: RoadsideStub, key: str) -> dict[str, Any]:
    assert run.ended_wall is not None
    first = datetime.fromtimestamp((run.started_wall.timestamp() // 60 + 1) * 60, UTC)
    last = datetime.fromtimestamp((run.ended_wall.timestamp() // 60) * 60, UTC)  # exclusive: partial minute
    rows: list[dict[str, Any]] = []
    for camera_id in run.feeds:
        req = rpb.GetCountsRequest(camera_id=camera_id)
        req.start_time.FromDatetime(first)
        req.end_time.FromDatetime(max(last, first + timedelta(minutes=1)))
        reply = await roadside.GetCounts(req, metadata=_md(key), timeout=10)
        for m in reply.minutes:
            start = m.minute_start.ToDatetime(tzinfo=UTC)
            if start >= last:
                continue
            for lane in m.lanes:
                truth = run.truth.minutes.get((camera_id, lane.lane_id, int(start.timestamp())))
                true_n = truth.vehicles if truth else 0
                rows.append({"camera": camera_id, "lane": lane.lane_id, "minute": start.isoformat(),
                             "reported": lane.vehicles + lane.wrong_way_vehicles, "true": true_n})
    with_traffic = [r for r in rows if r["true"] > 0]
    mape = statistics.fmean(abs(r["reported"] - r["true"]) / r["true"] for r in with_traffic) if with_traffic \
        else None
    return {"mape": mape, "lane_minutes": len(with_traffic), "reported_total": sum(r["reported"] for r in rows),
            "true_total": sum(r["true"] for r in rows), "rows": rows}


@dataclass(frozen=True)
class SeenIncident:
    """An incident as the scorer saw it come to have a type: its id, that type, when, and where it was then."""

    id: str
    type: int
    at: datetime
    lat: float
    lon: float


def match_events(truths: list[dict[str, Any]], seen: list[SeenIncident], cameras: list[tuple[float, float]],
                 ended: datetime | None) -> tuple[dict[str, Any], list[dict[str, Any]], set[str]]:
    """The injected events (events.jsonl rows) against the incidents seen with their types, per event type: recall,
    precision and latency (see the module's docstring). Only incidents within CAMERA_RADIUS_M of a camera count. One
    rule for `v2x sim score` and the offline replay (load/replay_analytics.py). Returns the per-type scores, a row per
    event, and the ids of the incidents that matched one."""
    ours = [s for s in seen if any(metres((s.lat, s.lon), c) <= CAMERA_RADIUS_M for c in cameras)]
    out: dict[str, Any] = {}
    matched_incidents: set[str] = set()
    details = []
    incidents_of: dict[str, dict[str, SeenIncident]] = {}
    for kind in Kind:
        kind_truths = [e for e in truths if e["type"] == int(kind) and e["start"] is not None]
        incidents = {s.id: s for s in ours if s.type == int(kind)}
        latencies, after_hold = [], []
        found = 0
        for e in kind_truths:
            start = datetime.fromisoformat(e["start"])
            end = datetime.fromisoformat(e["end"]) if e["end"] else ended or start
            best = None
            for i, inc in incidents.items():
                near = e["lat"] is None or metres((inc.lat, inc.lon), (e["lat"], e["lon"])) <= MATCH_RADIUS_M
                if near and start - timedelta(seconds=10) <= inc.at <= end + timedelta(seconds=MATCH_AFTER_S) \
                        and (best is None or inc.at < best[1]):
                    best = (i, inc.at)
            row = {"type": int(kind), "camera": e["camera"], "start": e["start"], "end": e["end"],
                   "incident": best[0] if best else None}
            if best is not None:
                found += 1
                matched_incidents.add(best[0])
                lat = (best[1] - start).total_seconds()
                latencies.append(lat)
                after_hold.append(lat - HOLD_S[kind])
                row["latency_s"] = round(lat, 2)
            details.append(row)
        incidents_of[str(int(kind))] = incidents
        out[str(int(kind))] = {
            "events": len(kind_truths), "detected": found,
            "recall": found / len(kind_truths) if kind_truths else None,
            "incidents": len(incidents), "false_incidents": 0, "precision": None,
            "median_latency_s": statistics.median(latencies) if latencies else None,
            "median_latency_after_hold_s": statistics.median(after_hold) if after_hold else None,
        }
    # An incident that matched an event is no false one of any type it had: a crash's incident first opened for one of
    # its standing cars (903), the crash joining it a second later, is the crash's (judged after every type is matched:
    # in Kind's order a 903 came before the 1001 that made it one).
    for key, incidents in incidents_of.items():
        false = sum(1 for i in incidents if i not in matched_incidents)
        out[key]["false_incidents"] = false
        out[key]["precision"] = (len(incidents) - false) / len(incidents) if incidents else None
    return out, details, matched_incidents


def event_scores(run: SimRun, watch: Watch) -> dict[str, Any]:
    cams = [r.location for r in run.rigs]
    ours = {k: v for k, v in watch.typed.items()
            if any(metres((v[1].position.lat, v[1].position.lon), c) <= CAMERA_RADIUS_M for c in cams)
            and ipb.SOURCE_KIND_ROADSIDE_DETECTION in v[1].source_kinds}
    out, details, matched_incidents = match_events(
        run.truth.event_truth, [SeenIncident(i, t, at, inc.position.lat, inc.position.lon)
                                for (i, t), (at, inc) in ours.items()], cams, run.ended_wall)
    roadside_events: dict[str, int] = defaultdict(int)
    for result in run.truth.results.values():
        for ev in result.events:
            roadside_events[str(int(ev.type))] += 1
    def nearest(inc: ipb.Incident) -> str:
        return min(run.rigs, key=lambda r: metres((inc.position.lat, inc.position.lon), r.location)).camera_id

    listed = [{"incident": i, "type": t, "at": at.isoformat(), "lat": inc.position.lat, "lon": inc.position.lon,
               "camera": nearest(inc), "matched": i in matched_incidents}
              for (i, t), (at, inc) in sorted(ours.items(), key=lambda kv: kv[1][0])]
    raised = [{"camera": r.camera_id, "type": int(ev.type), "at": ev.observed_at.ToDatetime(tzinfo=UTC).isoformat(),
               "lane": ev.lane_id, "zone": ev.zone_id, "track": ev.track_id}
              for r in run.rigs for res in run.feeds[r.camera_id].results for ev in res.events]
    return {"per_type": out, "events": details, "roadside_events": dict(roadside_events), "incidents": listed,
            "raised": raised, "other_incident_types": sorted({t for (_, t) in ours} - {int(k) for k in Kind})}


def spot_scores(run: SimRun, watch: Watch) -> dict[str, Any]:
    right = total = 0
    confusion: dict[str, int] = defaultdict(int)
    for at, lot, spot, status in watch.spot_samples:
        truth = run.truth.spot_state_at(lot, spot, at - timedelta(seconds=SPOT_LAG_S))
        if truth is None:
            continue
        total += 1
        right += status == truth
        confusion[f"true {truth}, reported {status}"] += 1
    return {"accuracy": right / total if total else None, "samples": total, "confusion": dict(confusion)}


def _fmt(v: Any, pct: bool = False, digits: int = 2) -> str:
    if v is None:
        return "-"
    if pct:
        return f"{100 * v:.0f} %"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def table(scores: dict[str, Any]) -> str:
    lines = [f"scenario: {scores['seconds']:.0f} s, {scores['run']['cameras']} cameras at {scores['fps']:g} fps, "
             f"{scores['run']['frames_answered']}/{scores['run']['frames_sent']} frames answered, "
             f"{scores['run'].get('frames_held_back', 0)} held back while the service was busy", ""]
    d = scores["detection"]
    lines.append("detection (IoU >= 0.5)   precision  recall   tp     fp     fn")
    for cls, s in [*d["per_class"].items(), ("any class", d["any_class"])]:
        lines.append(f"  {cls:<22} {_fmt(s['precision'], True):>9} {_fmt(s['recall'], True):>7} {s['tp']:>6} "
                     f"{s['fp']:>6} {s['fn']:>6}")
    c, q, sp, spots = scores["counts"], scores["queues"], d["speed"], scores["spots"]
    lines += ["", f"counts per lane per minute: MAPE {_fmt(c['mape'], True)} over {c['lane_minutes']} lane-minutes "
              f"(reported {c['reported_total']}, true {c['true_total']})",
              f"queue length: mean abs error {_fmt(q['mae_m'])} m ({q['samples']} lane-frames), "
              f"{_fmt(q['mae_when_queued_m'])} m when queued ({q['queued_samples']})",
              f"speed: RMSE {_fmt(sp['rmse_kmh'])} km/h over {sp['samples']} matched detections",
              f"on-street spots: {_fmt(spots['accuracy'], True)} of {spots['samples']} samples right", "",
              "events        events  found  recall  incidents  false  precision  latency (median)  after hold"]
    for kind, s in scores["events"]["per_type"].items():
        lines.append(f"  {kind:<10} {s['events']:>7} {s['detected']:>6} {_fmt(s['recall'], True):>7} "
                     f"{s['incidents']:>10} {s['false_incidents']:>6} {_fmt(s['precision'], True):>10} "
                     f"{_fmt(s['median_latency_s'], digits=1):>12} s "
                     f"{_fmt(s['median_latency_after_hold_s'], digits=1):>10} s")
    lines.append(f"  roadside events raised: {scores['events']['roadside_events']}")
    ch = scores.get("chargers")
    if ch:
        r = scores["run"].get("chargers", {})
        lines.append(f"charger connectors (OCPP, GetStation every 2 s): {_fmt(ch['accuracy'], True)} of "
                     f"{ch['samples']} samples right; {r.get('sessions', 0)} sessions, {r.get('drops', 0)} dropped "
                     f"connections, {r.get('connects', 0)} connects, {r.get('calls_refused', 0)} calls refused")
    g = scores.get("gates")
    if g:
        lines.append(f"gate passages: {g['passages']} ({g['green_plates']} green), {g['recorded']} recorded in "
                     "parking; "
                     f"plates read exactly {_fmt(g['plates_read_exactly'], True)} (green "
                     f"{_fmt(g['green_read_exactly'], True)}), colour right {_fmt(g['colour_right'], True)}")
    return "\n".join(lines)


async def score(cfg: SimConfig, idps_target: str, police_key: str) -> dict[str, Any]:
    watch = Watch()
    stop_polling = asyncio.Event()
    async with aio.insecure_channel(idps_target) as ich, aio.insecure_channel(cfg.parking) as pch, \
            aio.insecure_channel(cfg.roadside) as rch, aio.insecure_channel(cfg.charging or cfg.roadside) as cch:
        idps: IdpsStub = IdpsServiceStub(ich)
        parking: ParkingStub = ParkingServiceStub(pch)
        roadside: RoadsideStub = RoadsideServiceStub(rch)
        watcher = asyncio.create_task(watch_incidents(idps, police_key, (31.40, 121.49), watch))
        for _ in range(100):
            if watch.snapshot_done or watcher.done():
                break
            await asyncio.sleep(0.1)
        if watcher.done():
            watcher.result()  # raises what went wrong (e.g. a bad police key)

        lots = sorted({r.lot_id for r in make_rigs(District(), cfg.intersections, cfg.cameras_per,
                                                    lot_prefix=cfg.lot_prefix)}) if cfg.spots else []
        poller = asyncio.create_task(poll_spots(parking, cfg.admin_key, lots, watch, stop_polling))
        stations = [c.station_id for c in district_chargers(District(), cfg.intersections, cfg.lot_prefix)] \
            if cfg.charging else []
        charger_poller = asyncio.create_task(poll_chargers(ChargingServiceStub(cch), cfg.admin_key, stations, watch,
                                                           stop_polling))
        try:
            run = await simulate(cfg)
            await asyncio.sleep(LATE_INCIDENTS_S)
        finally:
            stop_polling.set()
            watcher.cancel()
            with contextlib.suppress(BaseException):
                await poller
            with contextlib.suppress(BaseException):
                await charger_poller
            with contextlib.suppress(BaseException):
                await watcher
        counts = await count_scores(run, roadside, cfg.admin_key)
    return {"seconds": cfg.seconds, "fps": cfg.fps, "run": summary(run), "out": str(run.truth.out),
            "detection": detection_scores(run), "counts": counts, "queues": queue_scores(run),
            "events": event_scores(run, watch), "spots": spot_scores(run, watch),
            "gates": run.gates.scores() if run.gates else None,
            "chargers": charger_scores(run.chargers.truth, watch.charger_samples) if run.chargers else None}


async def score_command(cfg: SimConfig, idps_target: str, police_key: str, json_path: str, min_recall: str) -> int:
    if not police_key:
        raise SystemExit("v2x sim score: no police key: give --police-key (no running `v2x run` found)")
    scores = await score(cfg, idps_target, police_key)
    print(table(scores), flush=True)
    if json_path:
        await asyncio.to_thread(Path(json_path).write_text, json.dumps(scores, indent=1, default=str))
    failed = []
    for item in filter(None, min_recall.split(",")):
        kind, _, floor = item.partition("=")
        recall = scores["events"]["per_type"].get(kind.strip(), {}).get("recall")
        if recall is None or recall < float(floor):
            failed.append(f"{kind}: recall {recall} < {floor}")
    if failed:
        print("below the recall floor: " + "; ".join(failed), flush=True)
        return 1
    return 0


def charger_scores(truth: ChargerTruth, samples: list[tuple[datetime, str, str]], lag_s: float = CHARGER_LAG_S
                   ) -> dict[str, Any]:
    """The charging service's connector states (sampled: when, connector, status) against the chargers' truth: right
    when the reported status is what the connector truly was at the sample or up to `lag_s` before it."""
    right = total = 0
    confusion: dict[str, int] = defaultdict(int)
    for at, connector, status in samples:
        now = truth.state_at(connector, at)
        if now is None:
            continue
        before = truth.state_at(connector, at - timedelta(seconds=lag_s))
        total += 1
        ok = status in (status_name(now), status_name(before) if before is not None else "")
        right += ok
        if not ok:
            confusion[f"true {status_name(now)}, reported {status}"] += 1
    return {"accuracy": right / total if total else None, "samples": total, "wrong": dict(confusion)}
