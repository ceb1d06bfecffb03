"""Replays a `v2x sim` run's frames through the service's tracker and analytics offline, and scores counts, queues and
speeds as `v2x sim score` does: the rules' error apart from the detector's, in seconds rather than a 10-minute run.

    .venv/bin/python load/replay_analytics.py RUN_DIR [--boxes truth|results] [--min-visible 0.5] [--drop 0.0]

RUN_DIR is a scored run's ground truth folder (`v2x sim score --out DIR`, or the folder its table names). The
detections fed to the tracker are, per frame and camera:

* ``truth``: the rendered boxes (their visible pixels) at least ``--min-visible`` visible, as an exact detector
  would find them (score 0.9), less a random ``--drop`` fraction of them (seeded), a detector that misses some;
* ``results``: the detections the service answered in that run (tracked and untracked, their boxes, classes and
  confidences), as the detector found them.

Frames are replayed at their capture times in capture order, only those the service answered. The cameras'
configuration is the simulator's own (roadside_sim/cameras.py, 4 intersections, one camera each unless the run had
other cameras).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository's packages

from roadside_sim.cameras import CameraRig, rigs
from roadside_sim.geometry import box_iou
from roadside_sim.network import District
from services.roadside.analytics import CameraAnalytics
from services.roadside.convert import camera_spec
from services.roadside.detector import DEFAULT_CAMERA_FLOORS, Detection, VehicleClass
from services.roadside.tracker import Tracker

MIN_VISIBLE, MIN_SIDE_PX, IOU = 0.5, 16, 0.5  # as roadside_sim/score.py judges detections
_CLASSES = {f"OBJECT_CLASS_{c.name}": c for c in VehicleClass}


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


def replay(run: Path, boxes: str = "truth", min_visible: float = 0.5, drop: float = 0.0, seed: int = 1
           ) -> dict[str, Any]:
    frames = _load(run / "frames.jsonl")
    results = {(r["camera_id"], int(r["frame_id"])): r for r in _load(run / "results.jsonl")}
    truth_minutes = {(m["camera"], m["lane"], m["minute"]): m["vehicles"]
                     for m in _load(run / "minutes.jsonl") if "lane" in m}
    cameras = {f["camera"] for f in frames}
    specs = {c: camera_spec(r.camera()) for c, r in _camera_rigs(cameras).items()}
    trackers = {c: Tracker() for c in cameras}
    # The default model's floors: the replay has no detector; its boxes are the run's or the truth's.
    analytics = {c: CameraAnalytics(s.with_floors(DEFAULT_CAMERA_FLOORS)) for c, s in specs.items()}
    rng = random.Random(seed)
    queue_err: list[float] = []
    queue_busy: list[float] = []
    speed_err: list[float] = []
    answered = [f for f in frames if (f["camera"], f["frame_id"]) in results
                and "error" not in results[(f["camera"], f["frame_id"])]]
    answered.sort(key=lambda f: (f["captured_at"], f["camera"]))
    for f in answered:
        camera = f["camera"]
        at = datetime.fromisoformat(f["captured_at"])
        if boxes == "truth":
            dets = [Detection(VehicleClass(b["class"]), 0.9, float(b["box"][0]), float(b["box"][1]),
                              float(b["box"][2]), float(b["box"][3]), b["class"])
                    for b in f["boxes"] if b["visible"] >= min_visible and rng.random() >= drop]
        else:
            dets = [Detection(_CLASSES[d.get("object_class", "OBJECT_CLASS_CAR")], float(d.get("confidence", 0.0)),
                              float(d["box"].get("x_min", 0.0)), float(d["box"].get("y_min", 0.0)),
                              float(d["box"].get("x_max", 0.0)), float(d["box"].get("y_max", 0.0)), "")
                    for d in results[(camera, f["frame_id"])].get("detections", [])]
        tracked = trackers[camera].update(dets, int(at.timestamp() * 1e9))
        ids = {id(d) for _, d in tracked}
        spec = specs[camera]
        out = analytics[camera].process(at, f["frame_id"], tracked, (spec.image_width, spec.image_height),
                                        [d for d in dets if id(d) not in ids])
        reported = {lane.lane_id: lane.queue_length_m for lane in out.lanes}
        for lane, true_m in f["queues_m"].items():
            if lane in reported:
                e = abs(reported[lane] - true_m)
                queue_err.append(e)
                if true_m > 0 or reported[lane] > 0:
                    queue_busy.append(e)
        # Speeds of matched detections (class-agnostic, best IoU first, every truth box; a match of a box that does
        # not count, mostly hidden or tiny, is left out), as the scorer matches them.
        truths, objs = f["boxes"], out.objects
        pairs = sorted(((box_iou(tuple(g["box"]), (o.box.x1, o.box.y1, o.box.x2, o.box.y2)), i, j)
                        for i, g in enumerate(truths) for j, o in enumerate(objs)), reverse=True)
        used_g: set[int] = set()
        used_o: set[int] = set()
        for iou, i, j in pairs:
            if iou < IOU or i in used_g or j in used_o:
                continue
            used_g.add(i)
            used_o.add(j)
            g, speed = truths[i], objs[j].speed_mps
            if speed is not None and g["visible"] >= MIN_VISIBLE and g["box"][2] - g["box"][0] >= MIN_SIDE_PX \
                    and g["box"][3] - g["box"][1] >= MIN_SIDE_PX:
                speed_err.append((speed - g["speed_mps"]) * 3.6)
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
    return {
        "boxes": boxes, "frames": len(answered),
        "counts": {"mape": statistics.fmean(abs(r["reported"] - r["true"]) / r["true"] for r in busy) if busy
                   else None, "lane_minutes": len(busy), "reported": sum(r["reported"] for r in rows),
                   "true": sum(r["true"] for r in rows), "rows": rows,
                   "per_lane": {f"{c} {lane}": v for (c, lane), v in sorted(per_lane.items())}},
        "queues": {"mae_m": statistics.fmean(queue_err) if queue_err else None,
                   "mae_when_queued_m": statistics.fmean(queue_busy) if queue_busy else None,
                   "queued_samples": len(queue_busy)},
        "speed": {"rmse_kmh": math.sqrt(statistics.fmean(e * e for e in speed_err)) if speed_err else None,
                  "mean_error_kmh": statistics.fmean(speed_err) if speed_err else None, "samples": len(speed_err)},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("--boxes", choices=("truth", "results"), default="truth")
    p.add_argument("--min-visible", type=float, default=0.5)
    p.add_argument("--drop", type=float, default=0.0, help="fraction of truth boxes missed, at random")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rows", action="store_true", help="print every lane-minute")
    p.add_argument("--json", default="")
    ns = p.parse_args()
    s = replay(ns.run, ns.boxes, ns.min_visible, ns.drop, ns.seed)
    c, q, sp = s["counts"], s["queues"], s["speed"]
    if ns.rows:
        for r in c["rows"]:
            print(r)
        for k, v in c["per_lane"].items():
            print(k, v)
    print(f"{s['boxes']} boxes, {s['frames']} frames: counts MAPE {100 * (c['mape'] or 0):.1f} % over "
          f"{c['lane_minutes']} lane-minutes (reported {c['reported']}, true {c['true']}); queue error "
          f"{q['mae_m'] or 0:.2f} m, {q['mae_when_queued_m'] or 0:.2f} m when queued ({q['queued_samples']}); "
          "speed RMSE "
          f"{sp['rmse_kmh'] or 0:.2f} km/h (mean {sp['mean_error_kmh'] or 0:+.2f}, {sp['samples']} detections)")
    if ns.json:
        Path(ns.json).write_text(json.dumps(s, indent=1))


if __name__ == "__main__":
    main()
