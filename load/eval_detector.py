"""Detector evaluation: recall at IoU >= 0.5 of the fp32 and the int8 detector on the real photos and on held-out
simulator frames, side by side, with the time per frame of each.

    flock /tmp/v2x-bench.lock .venv/bin/python load/eval_detector.py [--model M.onnx ...] [--input-size 480x352]
        [--frames 160] [--json out.json]

Several ``--model``s are scored one after the other in the same run, on the same frames, for a fair comparison.
The input size defaults to the service's (``SERVICE_INPUT_SIZE``); ``model`` takes each model's own.

The simulator frames use roadside_sim.detection_set.EVALUATION_SEED; the int8 model was calibrated on
CALIBRATION_SEED frames (models/quantize_detector.py), so it is never scored on what it was calibrated on.
Both models run through ``Detector.detect`` (letterbox, session, decoding, NMS) with the service's session options.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository's packages

from roadside_sim.detection_set import EVALUATION_SEED, LabelledFrame, Score, real_photos, sim_frames
from services.roadside.detector import (
    DEFAULT_MODEL_PATH,
    SERVICE_INPUT_SIZE,
    Detector,
    DetectorConfig,
    measurable_precisions,
    model_for_precision,
    parse_input_size,
)

GOAL_RECALL_POINTS = 2.0  # int8 recall within this many points of fp32


def score(detector: Detector, frames: list[LabelledFrame]) -> tuple[Score, float, float]:
    """Recall over the frames, and median wall / CPU milliseconds per ``detect``."""
    result = Score()
    walls, cpus = [], []
    detector.detect(frames[0].image)
    for frame in frames:
        wall, cpu = time.perf_counter(), time.process_time()
        detections = detector.detect(frame.image)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        result.add(frame.truth, [((d.x1, d.y1, d.x2, d.y2), d.vehicle_class.value) for d in detections])
    walls.sort()
    cpus.sort()
    return result, walls[len(walls) // 2] * 1000, cpus[len(cpus) // 2] * 1000


def evaluate(
    model: Path,
    sets: dict[str, list[LabelledFrame]],
    input_size: tuple[int, int] | None,
    precisions: tuple[str, ...] = ("fp32", "int8"),
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "model": str(model),
        "input_size": "model" if input_size is None else f"{input_size[0]}x{input_size[1]}",
        "frames": {k: len(v) for k, v in sets.items()},
        "load_average_before": os.getloadavg(),
    }
    for precision in precisions:
        config = DetectorConfig(model_path=model_for_precision(model, precision), input_size=input_size)
        detector = Detector(config)
        rows = {}
        total = Score()
        for name, frames in sets.items():
            s, wall_ms, cpu_ms = score(detector, frames)
            rows[name] = {
                "truths": s.truths,
                "found": s.found,
                "recall": round(s.recall, 4),
                "detections": s.detections,
                "unmatched": s.unmatched,
                "wall_ms_p50": round(wall_ms, 1),
                "cpu_ms_p50": round(cpu_ms, 1),
            }
            total.truths += s.truths
            total.found += s.found
        rows["all"] = {"truths": total.truths, "found": total.found, "recall": round(total.recall, 4)}
        out[precision] = rows
    if "fp32" in out and "int8" in out:
        out["recall_points_int8_minus_fp32"] = {
            k: round(100 * (out["int8"][k]["recall"] - out["fp32"][k]["recall"]), 2) for k in out["fp32"]
        }
        out["int8_within_goal"] = all(v >= -GOAL_RECALL_POINTS for v in out["recall_points_int8_minus_fp32"].values())
    out["load_average_after"] = os.getloadavg()
    return out


def print_report(out: dict[str, Any]) -> None:
    print(f"{out['model']} at {out['input_size']}")
    print("| precision | set | truth boxes | found | recall | detections | unmatched | ms/frame p50 (wall / CPU) |")
    print("|---|---|---|---|---|---|---|---|")
    for precision in ("fp32", "int8"):
        for name, r in out.get(precision, {}).items():
            timing = f"{r['wall_ms_p50']} / {r['cpu_ms_p50']}" if "wall_ms_p50" in r else ""
            print(
                f"| {precision} | {name} | {r['truths']} | {r['found']} | {r['recall']:.3f} | "
                f"{r.get('detections', '')} | {r.get('unmatched', '')} | {timing} |"
            )
    if "int8_within_goal" in out:
        print(
            f"int8 - fp32 recall, points: {out['recall_points_int8_minus_fp32']} "
            f"(goal: no worse than -{GOAL_RECALL_POINTS:g}): {'met' if out['int8_within_goal'] else 'NOT met'}"
        )
    print(
        f"load average before {[round(x, 2) for x in out['load_average_before']]}, "
        f"after {[round(x, 2) for x in out['load_average_after']]}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument(
        "--model",
        type=Path,
        action="append",
        help=f"an fp32 model, int8 is <stem>-int8.onnx beside it (repeatable; default {DEFAULT_MODEL_PATH})",
    )
    p.add_argument(
        "--input-size",
        default="x".join(map(str, SERVICE_INPUT_SIZE)),
        help="WxH frames are letterboxed to, or 'model' for each model's own (default: the service's)",
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "int8"),
        action="append",
        help="the precisions to score (default: both, or fp32 for a model without an int8 version)",
    )
    p.add_argument("--frames", type=int, default=160, help="held-out simulator frames")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    input_size = None if args.input_size == "model" else parse_input_size(args.input_size)
    sets = {"real photos": real_photos(), "simulator frames": sim_frames(EVALUATION_SEED, args.frames)}
    def precisions(model: Path) -> tuple[str, ...]:
        if args.precision:
            return tuple(args.precision)
        return measurable_precisions(model)

    results = [evaluate(model, sets, input_size, precisions(model)) for model in args.model or [DEFAULT_MODEL_PATH]]
    for out in results:
        print_report(out)
    if args.json:
        args.json.write_text(json.dumps(results if len(results) > 1 else results[0], indent=2) + "\n")
    return 0 if all(out.get("int8_within_goal", True) for out in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
