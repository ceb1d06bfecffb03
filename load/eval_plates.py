"""Plate reading on the held-out part of the harder plate set (roadside_sim/plate_set.py): exact read rate and ms
per plate by colour, size band and angle band, and where each miss comes from (detector, recogniser, colour).

    flock /tmp/v2x-bench.lock .venv/bin/python load/eval_plates.py [--count 600] [--split held-out] [--json out.json]

``--split tune`` reads the tuning part instead (look at failures there, never at held-out ones). ``--narrower-than
80`` keeps only the plates under 80 px wide of the ``--count`` generated (the small-plate subset: 160 of the first 1600
of the tuning split). A plate counts as
read when the best reading's text and colour are both exact. A miss is the detector's when no reading's box
overlaps the plate (IoU >= 0.3 with the plate's corners' box), the recogniser's when the text is wrong, the colour
step's when only the colour is.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository's packages

from roadside_sim.plate_set import HELD_OUT_SEED, TUNE_SEED, PlateSample, plate_set
from services.roadside.plates import PlateReader, PlateReading

GOAL_OVERALL = 0.95
GOAL_BAND = 0.90  # every band at 80 px and wider


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def outcome(sample: PlateSample, readings: list[PlateReading]) -> str:
    xs = [c[0] for c in sample.corners]
    ys = [c[1] for c in sample.corners]
    truth = (min(xs), min(ys), max(xs), max(ys))
    on_plate = [r for r in readings if _iou(r.box, truth) >= 0.3]
    if not on_plate:
        return "detector"
    best = readings[0]
    if best.text != sample.text:
        return "recogniser" if best in on_plate else "detector"
    return "ok" if best.colour == sample.colour else "colour"


def split_samples(split: str, count: int, narrower_than: float | None = None) -> list[PlateSample]:
    """The first ``count`` plates of a split ("tune" or "held-out"), only those less wide than ``narrower_than``."""
    samples = plate_set(HELD_OUT_SEED if split == "held-out" else TUNE_SEED, count)
    return samples if narrower_than is None else [s for s in samples if s.width_px < narrower_than]


def evaluate(samples: list[PlateSample], reader: PlateReader) -> dict[str, Any]:
    reader.read(samples[0].image)
    rows: list[dict[str, Any]] = []
    for sample in samples:
        image = sample.image
        started, cpu = time.perf_counter(), time.process_time()
        readings = reader.read(image)
        elapsed, cpu_s = time.perf_counter() - started, time.process_time() - cpu
        rows.append({"index": sample.index, "colour": sample.style, "size": sample.size_band,
                     "angle": sample.angle_band, "text": sample.text, "read": readings[0].text if readings else "",
                     "read_colour": readings[0].colour if readings else 0, "outcome": outcome(sample, readings),
                     "ms": elapsed * 1000, "cpu_ms": cpu_s * 1000, "width_px": round(sample.width_px, 1),
                     "yaw": round(sample.yaw_deg, 1),
                     "blur": sample.blur_px, "night": sample.night, "jpeg": sample.jpeg_quality})
    return {"rows": rows, "tables": {key: table(rows, key) for key in ("colour", "size", "angle")},
            "overall": summary(rows)}


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    ms = sorted(r["ms"] for r in rows)
    cpu = sorted(r["cpu_ms"] for r in rows)
    counts: dict[str, int] = defaultdict(int)
    for r in rows:
        counts[r["outcome"]] += 1
    return {"plates": n, "exact": counts["ok"], "rate": round(counts["ok"] / n, 4) if n else 0.0,
            "detector_misses": counts["detector"], "recogniser_misses": counts["recogniser"],
            "colour_misses": counts["colour"], "ms_p50": round(ms[n // 2], 1) if n else 0.0,
            "ms_mean": round(sum(ms) / n, 1) if n else 0.0, "cpu_ms_p50": round(cpu[n // 2], 1) if n else 0.0}


def table(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[r[key]].append(r)
    return {name: summary(group) for name, group in sorted(groups.items(), key=lambda kv: _order(kv[0]))}


def _order(name: str) -> tuple[float, str]:
    head = name.split("-")[0]
    return (float(head), name) if head.isdigit() else (0.0, name)


def goals(out: dict[str, Any]) -> dict[str, Any]:
    bands = {f"{key} {name}": s["rate"] for key, t in out["tables"].items() for name, s in t.items()
             if not (key == "size" and name.startswith("60-"))}
    worst = min(bands.items(), key=lambda kv: kv[1]) if bands else ("", 0.0)
    return {"overall": out["overall"]["rate"], "overall_ok": out["overall"]["rate"] >= GOAL_OVERALL,
            "worst_band_from_80px": worst, "bands_ok": all(v >= GOAL_BAND for v in bands.values())}


def print_report(out: dict[str, Any]) -> None:
    for key, t in out["tables"].items():
        print(f"\n| {key} | plates | exact | rate | detector misses | recogniser misses | colour misses "
              "| ms/plate p50 (wall / CPU) |")
        print("|---|---|---|---|---|---|---|---|")
        for name, s in [*t.items(), ("all", out["overall"])]:
            print(f"| {name} | {s['plates']} | {s['exact']} | {s['rate']:.3f} | {s['detector_misses']} | "
                  f"{s['recogniser_misses']} | {s['colour_misses']} | {s['ms_p50']} / {s['cpu_ms_p50']} |")
    g = out["goals"]
    print(f"\noverall {g['overall']:.3f} (goal >= {GOAL_OVERALL}): {'met' if g['overall_ok'] else 'NOT met'}; "
          f"worst band at >= 80 px: {g['worst_band_from_80px']} (goal >= {GOAL_BAND} each): "
          f"{'met' if g['bands_ok'] else 'NOT met'}")
    print(f"load average before {out['load_average_before']}, after {out['load_average_after']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--count", type=int, default=600, help="plates (colours in turn)")
    p.add_argument("--split", choices=("held-out", "tune"), default="held-out")
    p.add_argument("--misses", action="store_true", help="list every miss (tune split only)")
    p.add_argument("--narrower-than", type=float, help="only the plates less wide than this (px) on the frame")
    p.add_argument("--json", type=Path, help="also write the figures and every plate's outcome here")
    args = p.parse_args(argv)
    load_before = [round(x, 2) for x in os.getloadavg()]
    out = evaluate(split_samples(args.split, args.count, args.narrower_than), PlateReader())
    out.update(split=args.split, load_average_before=load_before,
               load_average_after=[round(x, 2) for x in os.getloadavg()])
    out["goals"] = goals(out)
    print_report(out)
    if args.misses and args.split == "tune":
        for r in out["rows"]:
            if r["outcome"] != "ok":
                print(r)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
