"""A kept frame of a run with what the roadside service answered drawn on it: the camera's lanes, zones and counting
line, the ground-truth boxes (thin white), the detections (class, confidence, track id) and each track's trail over
the frames before.

    python -m roadside_sim picture --run DIR --camera CAMERA_ID [--frame N] --out PNG
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from roadside_sim.cameras import rigs
from roadside_sim.network import District

COLOURS = [(60, 180, 255), (80, 220, 80), (255, 140, 60), (200, 80, 255), (60, 240, 240), (255, 90, 160)]


def draw(run: Path, camera_id: str, frame_id: int | None, out: Path, trail: int = 12) -> Path:
    kept = sorted((run / "frames").glob(f"{camera_id}-*.jpg"))
    if not kept:
        raise SystemExit(f"no kept frames of {camera_id} in {run / 'frames'}")
    path = kept[len(kept) // 2] if frame_id is None else run / "frames" / f"{camera_id}-{frame_id:06d}.jpg"
    frame_no = int(path.stem.rsplit("-", 1)[1])
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f"cannot read {path}")
    results: dict[int, dict[str, Any]] = {}
    for line in (run / "results.jsonl").open():
        r = json.loads(line)
        if r.get("camera_id") == camera_id and frame_no - trail <= int(r.get("frame_id", 0)) <= frame_no:
            results[int(r["frame_id"])] = r
    truth = None
    for line in (run / "frames.jsonl").open():
        if f'"camera": "{camera_id}", "frame_id": {frame_no},' in line:
            truth = json.loads(line)
            break
    rig = next(r for r in rigs(District(), 4, 4, lot_prefix="SIM") if r.camera_id == camera_id)
    cam = rig.camera()
    overlay = img.copy()
    for lane in cam.lanes:
        pts = np.array([[p.x, p.y] for p in lane.polygon.points], np.int32)
        cv2.polylines(overlay, [pts], True, (255, 255, 0), 1, cv2.LINE_AA)
    for zone in cam.zones:
        pts = np.array([[p.x, p.y] for p in zone.polygon.points], np.int32)
        cv2.polylines(overlay, [pts], True, (255, 0, 255), 1, cv2.LINE_AA)
    for cl in cam.counting_lines:
        cv2.line(overlay, (int(cl.start.x), int(cl.start.y)), (int(cl.end.x), int(cl.end.y)), (0, 255, 255), 2)
    img = cv2.addWeighted(overlay, 0.7, img, 0.3, 0)
    if truth:
        for b in truth["boxes"]:
            x1, y1, x2, y2 = b["box"]
            cv2.rectangle(img, (x1, y1), (x2 - 1, y2 - 1), (255, 255, 255), 1)
    trails: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for fid in sorted(results):
        for d in results[fid].get("detections", []):
            box = d["box"]
            track = int(d.get("track_id", 0))
            trails[track].append((int((box.get("x_min", 0.0) + box.get("x_max", 0.0)) / 2), int(box.get("y_max", 0.0))))
    for track, trail_pts in trails.items():
        if track and len(trail_pts) > 1:
            cv2.polylines(img, [np.array(trail_pts, np.int32)], False, COLOURS[track % len(COLOURS)], 2, cv2.LINE_AA)
    for d in results.get(frame_no, {}).get("detections", []):
        box = d["box"]
        track = int(d.get("track_id", 0))
        colour = COLOURS[track % len(COLOURS)]
        # (a coordinate of 0 is left out of the JSON of a result)
        p1 = (int(box.get("x_min", 0.0)), int(box.get("y_min", 0.0)))
        p2 = (int(box.get("x_max", 0.0)), int(box.get("y_max", 0.0)))
        cv2.rectangle(img, p1, p2, colour, 2)
        cls = str(d.get("object_class", "")).removeprefix("OBJECT_CLASS_").lower()
        speed = f" {d['speed_mps'] * 3.6:.0f}km/h" if "speed_mps" in d else ""
        label = f"#{track % 1000} {cls} {d.get('confidence', 0):.2f}{speed}"
        cv2.putText(img, label, (p1[0], max(12, p1[1] - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 3,
                    cv2.LINE_AA)
        cv2.putText(img, label, (p1[0], max(12, p1[1] - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.42, colour, 1, cv2.LINE_AA)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), img)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="v2x sim picture", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a run's folder (ground truth, results, kept frames)")
    p.add_argument("--camera", required=True)
    p.add_argument("--frame", type=int, default=None, help="a kept frame (default: the middle one)")
    p.add_argument("--out", required=True)
    ns = p.parse_args(argv)
    print(draw(Path(ns.run), ns.camera, ns.frame, Path(ns.out)))
