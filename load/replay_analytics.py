"""Replays a `v2x sim` run's frames through the service's tracker and analytics offline, and scores counts, queues,
speeds and events as `v2x sim score` does: the rules' error apart from the detector's, in seconds rather than a
10-minute run.

    .venv/bin/python load/replay_analytics.py RUN_DIR [--boxes truth|results|tracks|detector] [--min-visible 0.5]
        [--drop 0.0] [--input-size 416x320 --floor 0.3 --nms-iou 0.45 --camera-floor 0.3 --track-floor 0.3]

RUN_DIR is a scored run's ground truth folder (`v2x sim score --out DIR`, or the folder its table names). The
detections fed to the tracker are, per frame and camera:

* ``truth``: the rendered boxes (their visible pixels) at least ``--min-visible`` visible, as an exact detector
  would find them (score 0.9), less a random ``--drop`` fraction of them (seeded), a detector that misses some;
* ``results``: the detections the service answered in that run (tracked and untracked, their boxes, classes and
  confidences), as the detector found them, tracked again;
* ``tracks``: the same with the run's own track ids, as the service's tracker handed them to its analytics (tracks
  under the detection floor, which the analytics ignore, are not in the answers): the rules' part of the run, nearly
  exactly;
* ``detector``: the service's own Detector (services/roadside/detector.py, the default model or ``--model``) run on
  the run's kept JPEGs (``v2x sim score --keep-every 1``), with the settings given: its input size, a score floor for
  the vehicle classes, NMS IoU. The model runs once per input size at a low floor (DECODE_FLOOR); its decoded boxes
  are cached in RUN_DIR, so that floors and NMS are tried in seconds (``Detector.select``, the service's own step).

Frames are replayed at their capture times in capture order, only those the service answered. The cameras'
configuration is the simulator's own (roadside_sim/cameras.py, 4 intersections, one camera each unless the run had
other cameras).

Counts are also scored with the minutes beginning at each second of the minute (`phase_mapes`): a run's count MAPE
depends on where its minutes' boundaries fell (a count a second off its vehicle's minute costs two lane-minutes only
when a boundary falls in that second), which a live run leaves to the minute it started in. The mean over the 60
phases is the figure to compare rules by; the first phase is the run's own.

Events: the analytics' events go to IDPS's own correlation (the functions its store applies: a report joins the
nearest open incident of a compatible type, or opens one; a crash joining a stopped vehicle's incident makes it a
crash), in memory, each at its frame's capture time plus the service's answer time that run (`service_latency_ms`;
the real incident also waits for Redis and IDPS's batch, well under a second). The incidents are scored against the
run's events.jsonl by `v2x sim score`'s own rule (roadside_sim/score.py, match_events).
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import random
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository's packages


from roadside_sim.cameras import CameraRig, rigs
from roadside_sim.network import District
from roadside_sim.score import SeenIncident, greedy_matches, judged, match_events, metres
from services.common.config import Settings
from services.idps import aggregate, convert, correlate
from services.idps.model import Incident
from services.idps.roadside import to_request
from services.idps.settings import IdpsSettings
from services.roadside.analytics import CameraAnalytics, _Track
from services.roadside.convert import camera_spec, event_proto
from services.roadside.detector import (
    DEFAULT_MODEL_PATH,
    Detection,
    Detector,
    DetectorConfig,
    VehicleClass,
    parse_input_size,
    service_input_size,
)
from services.roadside.frames import decode, inspect_encoded
from services.roadside.model import CameraSpec
from services.roadside.tracker import Tracker, TrackerConfig
from services.roadside.yolo_decode import Candidates, Letterbox

_CLASSES = {f"OBJECT_CLASS_{c.name}": c for c in VehicleClass}
PHASES = 60  # minute boundaries tried for the phase-averaged count MAPE: every second
DECODE_FLOOR = 0.1  # the model's boxes are cached down to this score; floors tried must be at least this
_FLOORED = (VehicleClass.CAR, VehicleClass.BUS, VehicleClass.TRUCK, VehicleClass.MOTORCYCLE, VehicleClass.BICYCLE)


@dataclass(frozen=True)
class DetectorSettings:
    """What the ``detector`` replay runs: the model at an input size, a score floor for the vehicle classes (None:
    the model's own), NMS IoU (None: the service's), and the floors after it: the camera's minimum detection
    confidence (None: the model's camera floor) and the tracker's floor to start a track (None: the tracker's)."""

    model: Path = DEFAULT_MODEL_PATH
    input_size: tuple[int, int] | None = None
    floor: float | None = None
    nms_iou: float | None = None
    camera_floor: float | None = None
    track_floor: float | None = None


def _cached_candidates(run: Path, frames: list[dict[str, Any]], settings: DetectorSettings
                       ) -> dict[tuple[str, int], tuple[Candidates, Letterbox]]:
    size = settings.input_size or service_input_size(settings.model)
    cache = run / f"detector-{settings.model.stem}-{size[0]}x{size[1]}-{DECODE_FLOOR}.pkl"
    if cache.is_file():
        with cache.open("rb") as stored:
            cached: dict[tuple[str, int], tuple[Candidates, Letterbox]] = pickle.load(stored)
        return cached
    low = {c: DECODE_FLOOR for c in VehicleClass}
    detector = Detector(DetectorConfig(model_path=settings.model, input_size=size, score_thresholds=low))
    out: dict[tuple[str, int], tuple[Candidates, Letterbox]] = {}
    for n, f in enumerate(frames):
        path = run / "frames" / f"{f['camera']}-{f['frame_id']:06d}.jpg"
        if not path.is_file():
            raise SystemExit(f"{path} missing: record the run with `v2x sim score --keep-every 1`")
        image = decode(inspect_encoded(path.read_bytes()))  # as the service decodes the frame it was sent
        out[(f["camera"], f["frame_id"])] = detector.candidates_batch([image])[0]
        if n % 500 == 0:
            print(f"detector: {n}/{len(frames)} frames", file=sys.stderr, flush=True)
    with cache.open("wb") as written:
        pickle.dump(out, written)
    return out


def _load(path: Path) -> list[dict[str, Any]]:
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def _camera_rigs(cameras: set[str]) -> dict[str, CameraRig]:
    district = District()
    for cameras_per in range(1, 5):
        found = {r.camera_id: r for r in rigs(district, len(district.junctions), cameras_per)}
        if cameras <= set(found):
            return {c: found[c] for c in cameras}
    raise SystemExit(f"cameras not of the district: {sorted(cameras - set(found))}")


class OfflineIdps:
    """IDPS's handling of the roadside service's events, in memory: each event converted and validated as IDPS's
    roadside consumer does, and correlated by the functions its store applies (correlate.best, aggregate.open_incident
    and join). Records when each incident came to have each type, as `v2x sim score` watches them."""

    def __init__(self, settings: IdpsSettings | None = None) -> None:
        s = settings or IdpsSettings()
        self.windows = correlate.Windows(s.correlation_distance_m, timedelta(seconds=s.correlation_window_s),
                                         timedelta(seconds=s.reopen_window_s))
        self.max_future_s = Settings().max_future_skew_s
        self.pool: dict[str, Incident] = {}
        self.typed: dict[tuple[str, int], tuple[datetime, Incident]] = {}

    def report(self, event: Any, now: datetime) -> Incident:
        """One `v2x.roadside.v1.AnalyticsEvent` reaching IDPS at `now`: the incident it opened or joined."""
        r = convert.report(to_request(event), f"camera:{event.camera_id}", self.max_future_s, now)
        inc = correlate.best(self.pool.values(), r, now, self.windows)
        if inc is None:
            inc = aggregate.open_incident(f"I{len(self.pool) + 1}", r, now)
            self.pool[inc.id] = inc
        else:
            aggregate.join(inc, r, now)
        self.typed.setdefault((inc.id, inc.type), (now, inc.snapshot()))
        return inc

    def seen(self) -> list[SeenIncident]:
        return [SeenIncident(i, t, at, inc.lat, inc.lon) for (i, t), (at, inc) in self.typed.items()]


class _TimedAnalytics(CameraAnalytics):
    """The service's analytics, also keeping the time each count is placed at (the moment its minute is taken from),
    so that the counts can be put into minutes beginning at any second (``phase_mapes``)."""

    def __init__(self, spec: CameraSpec) -> None:
        super().__init__(spec)
        self.count_times: list[tuple[str, float]] = []  # (lane, when its vehicle came onto it)

    def _count_time(self, tr: _Track, lane_id: str) -> float:
        at = super()._count_time(tr, lane_id)
        self.count_times.append((lane_id, at))
        return at


def phase_mapes(counted: dict[str, list[tuple[str, float]]], entered: list[tuple[str, str, float]],
                lanes: dict[str, list[str]], start: float, end: float, phases: int) -> list[float]:
    """Count MAPE over the run's lane-minutes, as `v2x sim score` takes it, with the minutes beginning ``phases``
    evenly spread seconds later (0 first): the same counts and the same truth, only the minutes' boundaries moved. A
    count placed a second off its minute costs nothing unless a boundary falls in that second; a run's MAPE depends
    on where its boundaries fell (the same detections have scored 5.3..7.6 %), and the mean over phases does not.
    ``counted``: per camera, (lane, when the counted vehicle came onto it); ``entered``: the truth's (camera, lane,
    when each vehicle came onto it)."""
    out = []
    for k in range(phases):
        shift = 60.0 * k / phases
        first, last = ((start + shift) // 60 + 1) * 60, ((end + shift) // 60) * 60
        true: dict[tuple[str, str, float], int] = defaultdict(int)
        for camera, lane, t in entered:
            true[(camera, lane, ((t + shift) // 60) * 60)] += 1
        reported: dict[tuple[str, str, float], int] = defaultdict(int)
        for camera, times in counted.items():
            for lane, t in times:
                reported[(camera, lane, ((t + shift) // 60) * 60)] += 1
        errors = [abs(reported[key] - n) / n for key, n in true.items()
                  if first <= key[2] < last and key[1] in lanes.get(key[0], ())]
        out.append(statistics.fmean(errors) if errors else 0.0)
    return out


def replay(run: Path, boxes: str = "truth", min_visible: float = 0.5, drop: float = 0.0, seed: int = 1,
           settings: DetectorSettings | None = None,
           on_frame: Callable[[dict[str, Any], list[tuple[int, Detection]], CameraAnalytics], None] | None = None,
           all_frames: bool = False) -> dict[str, Any]:
    """The replay's scores; ``on_frame`` sees each frame's truth, its tracked detections and the camera's analytics
    after the frame (to trace where counts go wrong)."""
    frames = _load(run / "frames.jsonl")
    results = {(r["camera_id"], int(r["frame_id"])): r for r in _load(run / "results.jsonl")}
    lane_minutes = [m for m in _load(run / "minutes.jsonl") if "lane" in m]
    truth_minutes = {(m["camera"], m["lane"], m["minute"]): m["vehicles"] for m in lane_minutes}
    cameras = {f["camera"] for f in frames}
    rig_of = _camera_rigs(cameras)
    specs = {c: camera_spec(r.camera()) for c, r in rig_of.items()}
    settings = settings or DetectorSettings()
    answered = [f for f in frames if (all_frames and boxes == "truth") or ((f["camera"], f["frame_id"]) in results
                and "error" not in results[(f["camera"], f["frame_id"])])]
    answered.sort(key=lambda f: (f["captured_at"], f["camera"]))
    detector: Detector | None = None
    cached: dict[tuple[str, int], tuple[Candidates, Letterbox]] = {}
    if boxes == "detector":
        cached = _cached_candidates(run, answered, settings)
        floors = {c: settings.floor for c in _FLOORED} if settings.floor is not None else None
        config = DetectorConfig(model_path=settings.model, input_size=settings.input_size
                                or service_input_size(settings.model), verify_sha256=False)
        if floors is not None:
            config = replace(config, score_thresholds={**{c: 0.35 for c in VehicleClass}, **floors})
        if settings.nms_iou is not None:
            config = replace(config, nms_iou=settings.nms_iou)
        detector = Detector(config)
    # The model's camera floors (the default model's unless --model): the run's service had them too.
    model_floors = Detector(DetectorConfig(model_path=settings.model, verify_sha256=False)).camera_floors
    if settings.camera_floor is not None:
        model_floors = replace(model_floors, min_detection_confidence=settings.camera_floor)
    tracker_config = TrackerConfig() if settings.track_floor is None \
        else TrackerConfig(high_confidence=settings.track_floor)
    trackers = {c: Tracker(tracker_config) for c in cameras}
    analytics = {c: _TimedAnalytics(s.with_floors(model_floors)) for c, s in specs.items()}
    rng = random.Random(seed)
    idps = OfflineIdps()
    raised: list[dict[str, Any]] = []
    queue_err: list[float] = []
    queue_busy: list[float] = []
    speed_err: list[float] = []
    found = [0, 0, 0]  # detections answered, of them matching a counted truth box, counted truth boxes
    for f in answered:
        camera = f["camera"]
        spec = specs[camera]
        size = (spec.image_width, spec.image_height)
        at = datetime.fromisoformat(f["captured_at"])
        if boxes == "truth":
            dets = [Detection(VehicleClass(b["class"]), 0.9, float(b["box"][0]), float(b["box"][1]),
                              float(b["box"][2]), float(b["box"][3]), b["class"])
                    for b in f["boxes"] if b["visible"] >= min_visible and rng.random() >= drop]
        elif detector is not None:
            dets = detector.select(*cached[(camera, f["frame_id"])])
        else:  # the run's answers, tracked again or with their track ids
            dets = [Detection(_CLASSES[d.get("object_class", "OBJECT_CLASS_CAR")], float(d.get("confidence", 0.0)),
                              float(d["box"].get("x_min", 0.0)), float(d["box"].get("y_min", 0.0)),
                              float(d["box"].get("x_max", 0.0)), float(d["box"].get("y_max", 0.0)), "")
                    for d in results[(camera, f["frame_id"])].get("detections", [])]
        if boxes == "tracks":
            answered_dets = results[(camera, f["frame_id"])].get("detections", [])
            tracked = [(int(d["track_id"]), det) for d, det in zip(answered_dets, dets, strict=True)
                       if int(d.get("track_id", 0))]
            ids = {id(d) for _, d in tracked}
            untracked = [d for d in dets if id(d) not in ids]
        else:
            tracked = analytics[camera].track(trackers[camera], dets, int(at.timestamp() * 1e9), size)
            untracked = list(trackers[camera].untracked)
        out = analytics[camera].process(at, f["frame_id"], tracked, size, untracked)
        if on_frame is not None:
            on_frame(f, tracked, analytics[camera])
        answer = results.get((camera, f["frame_id"]), {})
        reached = at + timedelta(milliseconds=float(answer.get("service_latency_ms", 0.0)))
        for e in out.events:
            inc = idps.report(event_proto(e), reached)
            raised.append({"camera": camera, "type": int(e.type), "at": at.isoformat(), "lane": e.lane_id,
                           "track": e.track_id, "incident": inc.id})
        reported = {lane.lane_id: lane.queue_length_m for lane in out.lanes}
        for lane, true_m in f["queues_m"].items():
            if lane in reported:
                e = abs(reported[lane] - true_m)
                queue_err.append(e)
                if true_m > 0 or reported[lane] > 0:
                    queue_busy.append(e)
        # Detections and speeds as the scorer judges them: class-agnostic matches; a match of a box that does not count
        # (mostly hidden, tiny) is neither right nor wrong.
        truths, objs = f["boxes"], out.objects
        pairs = greedy_matches([tuple(g["box"]) for g in truths],
                               [(o.box.x1, o.box.y1, o.box.x2, o.box.y2) for o in objs])
        judged_of = [judged(g["visible"], g["box"]) for g in truths]
        found[0] += len(objs) - sum(1 for i, _ in pairs if not judged_of[i])
        found[1] += sum(1 for i, _ in pairs if judged_of[i])
        found[2] += sum(judged_of)
        for i, j in pairs:
            g = truths[i]
            if objs[j].speed_mps is not None and judged_of[i]:
                speed_err.append((objs[j].speed_mps - g["speed_mps"]) * 3.6)
    start = min(datetime.fromisoformat(f["captured_at"]) for f in frames).timestamp()
    end = max(datetime.fromisoformat(f["captured_at"]) for f in frames).timestamp()
    first, last = (start // 60 + 1) * 60, (end // 60) * 60
    rows = []
    per_lane: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for camera, a in analytics.items():
        for m in a.minutes():
            key = m.minute_start.astimezone(UTC).timestamp()
            if not first <= key < last:
                continue
            for lane in m.lanes:
                true_n = truth_minutes.get((camera, lane.lane_id, int(key)), 0)
                n = lane.vehicles + lane.wrong_way
                rows.append({"camera": camera, "lane": lane.lane_id, "minute": int(key), "reported": n,
                             "true": true_n})
                per_lane[(camera, lane.lane_id)][0] += n
                per_lane[(camera, lane.lane_id)][1] += true_n
    busy = [r for r in rows if r["true"] > 0]
    entered = [(m["camera"], m["lane"], float(t)) for m in lane_minutes for _, t in m.get("entered", [])]
    phases = phase_mapes({c: a.count_times for c, a in analytics.items()}, entered,
                         {c: [lane.id for lane in s.lanes] for c, s in specs.items()}, start, end, PHASES)
    truths = _load(run / "events.jsonl") if (run / "events.jsonl").exists() else []
    per_type, details, matched = match_events(truths, idps.seen(), [r.location for r in rig_of.values()],
                                              datetime.fromtimestamp(end, UTC))
    incidents = [{"incident": s.id, "type": s.type, "at": s.at.isoformat(), "matched": s.id in matched,
                  "camera": min(rig_of.values(), key=lambda r: metres((s.lat, s.lon), r.location)).camera_id}
                 for s in sorted(idps.seen(), key=lambda s: s.at)]
    return {
        "boxes": boxes, "frames": len(answered),
        "counts": {"mape": statistics.fmean(abs(r["reported"] - r["true"]) / r["true"] for r in busy) if busy
                   else None, "lane_minutes": len(busy), "reported": sum(r["reported"] for r in rows),
                   "true": sum(r["true"] for r in rows), "rows": rows,
                   "per_lane": {f"{c} {lane}": v for (c, lane), v in sorted(per_lane.items())},
                   "mape_by_phase": phases},
        "queues": {"mae_m": statistics.fmean(queue_err) if queue_err else None,
                   "mae_when_queued_m": statistics.fmean(queue_busy) if queue_busy else None,
                   "queued_samples": len(queue_busy)},
        "detection": {"precision": found[1] / found[0] if found[0] else None,
                      "recall": found[1] / found[2] if found[2] else None, "answered": found[0]},
        "speed": {"rmse_kmh": math.sqrt(statistics.fmean(e * e for e in speed_err)) if speed_err else None,
                  "mean_error_kmh": statistics.fmean(speed_err) if speed_err else None, "samples": len(speed_err)},
        "events": {"per_type": per_type, "events": details, "incidents": incidents, "raised": raised},
    }


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f} %"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("--boxes", choices=("truth", "results", "tracks", "detector"), default="truth")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH, help="detector model (its floors apply)")
    p.add_argument("--input-size", default="", help="detector: WxH (default: the model's service input size)")
    p.add_argument("--floor", type=float, default=None, help="detector: score floor of the vehicle classes")
    p.add_argument("--nms-iou", type=float, default=None, help="detector: NMS IoU")
    p.add_argument("--camera-floor", type=float, default=None, help="the camera's minimum detection confidence")
    p.add_argument("--track-floor", type=float, default=None, help="the tracker's floor to start a track")
    p.add_argument("--min-visible", type=float, default=0.5)
    p.add_argument("--drop", type=float, default=0.0, help="fraction of truth boxes missed, at random")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--all-frames", action="store_true", help="truth: every frame rendered, also those the service "
                   "was not sent (busy): the camera's full frame rate")
    p.add_argument("--rows", action="store_true", help="print every lane-minute")
    p.add_argument("--events", action="store_true", help="print every event and incident")
    p.add_argument("--json", default="")
    ns = p.parse_args()
    settings = DetectorSettings(ns.model, parse_input_size(ns.input_size) if ns.input_size else None, ns.floor,
                                ns.nms_iou, ns.camera_floor, ns.track_floor)
    s = replay(ns.run, ns.boxes, ns.min_visible, ns.drop, ns.seed, settings, all_frames=ns.all_frames)
    c, q, sp, det = s["counts"], s["queues"], s["speed"], s["detection"]
    if ns.rows:
        for r in c["rows"]:
            print(r)
        for k, v in c["per_lane"].items():
            print(k, v)
    print(f"{s['boxes']} boxes, {s['frames']} frames: counts MAPE {100 * (c['mape'] or 0):.1f} % over "
          f"{c['lane_minutes']} lane-minutes (reported {c['reported']}, true {c['true']}); queue error "
          f"{q['mae_m'] or 0:.2f} m, {q['mae_when_queued_m'] or 0:.2f} m when queued ({q['queued_samples']}); "
          "speed RMSE "
          f"{sp['rmse_kmh'] or 0:.2f} km/h (mean {sp['mean_error_kmh'] or 0:+.2f}, {sp['samples']} detections); "
          f"detection precision {100 * (det['precision'] or 0):.1f} % recall {100 * (det['recall'] or 0):.1f} %")
    by_phase = c["mape_by_phase"]
    print(f"counts MAPE with the minutes beginning at each of {len(by_phase)} seconds: mean "
          f"{100 * statistics.fmean(by_phase):.2f} %, median {100 * statistics.median(by_phase):.2f} %, "
          f"{100 * min(by_phase):.2f}..{100 * max(by_phase):.2f} % (this run's own: {100 * by_phase[0]:.2f} %)")
    print("events        events  found  recall  incidents  false  precision  latency (median)")
    for kind, e in s["events"]["per_type"].items():
        lat = e["median_latency_s"]
        print(f"  {kind:<10} {e['events']:>7} {e['detected']:>6} {_pct(e['recall']):>7} {e['incidents']:>10} "
              f"{e['false_incidents']:>6} {_pct(e['precision']):>10} {'-' if lat is None else f'{lat:.1f}':>12} s")
    if ns.events:
        for row in s["events"]["events"]:
            print(row)
        for row in s["events"]["incidents"]:
            print(row)
    if ns.json:
        Path(ns.json).write_text(json.dumps(s, indent=1))


if __name__ == "__main__":
    main()
