"""Two PlateReader settings on the same frames, alternately frame by frame: exact reads (plate frames) and CPU per
frame, so that both see the same machine load. Which setting reads first alternates too.

    flock /tmp/v2x-bench.lock .venv/bin/python load/compare_plates.py --frames plates --split tune --count 400 \\
        --new candidate_score=0.005

``--frames``: ``plates`` (the plate set, ``--narrower-than`` as in load/eval_plates.py), ``sim`` (640x480 rendered
street frames of roadside_sim/detection_set.py, no plates: what ``Detect`` pays on every frame), ``vehicles`` (the
vehicle boxes of those frames, no plates: what an analytics event's evidence pays), ``photos`` (Darknet's real
sample photos, no plates). ``--base``/``--new`` set PlateConfig fields (numbers) for either reader.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository's packages

from load.eval_plates import outcome, split_samples
from load.harness import percentile
from roadside_sim.detection_set import EVALUATION_SEED, VEHICLE_CLASSES, real_photos, sim_frames
from roadside_sim.plate_set import PlateSample
from services.roadside.detector import BgrImage
from services.roadside.plates import PlateConfig, PlateReader


def _config(settings: list[str]) -> PlateConfig:
    fields = {f.name: f.type for f in dataclasses.fields(PlateConfig)}
    values: dict[str, Any] = {}
    for item in settings:
        name, _, value = item.partition("=")
        if name not in fields:
            raise SystemExit(f"PlateConfig has no field {name!r}")
        values[name] = int(value) if fields[name] in ("int", int) else float(value)
    return dataclasses.replace(PlateConfig(), **values)


def _frames(args: argparse.Namespace) -> list[tuple[BgrImage, PlateSample | None]]:
    if args.frames == "plates":
        return [(s.image, s) for s in split_samples(args.split, args.count, args.narrower_than)]
    if args.frames == "photos":
        return [(f.image, None) for f in real_photos()]
    frames = sim_frames(EVALUATION_SEED, args.count)
    if args.frames == "sim":
        return [(f.image, None) for f in frames]
    crops: list[tuple[BgrImage, PlateSample | None]] = []
    for f in frames:
        h, w = f.image.shape[:2]
        for t in f.truth:
            x1, y1, x2, y2 = (round(v) for v in t.box)
            x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
            if t.object_class in VEHICLE_CLASSES and x2 - x1 >= 48 and y2 - y1 >= 32:
                crops.append((np.ascontiguousarray(f.image[y1:y2, x1:x2]), None))
    return crops[: args.count]


def _stats(values: list[float]) -> dict[str, float]:
    v = sorted(values)
    return {"p50": round(percentile(v, 0.5), 1), "mean": round(sum(v) / len(v), 1), "p90": round(percentile(v, 0.9), 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--frames", choices=("plates", "sim", "vehicles", "photos"), default="plates")
    p.add_argument("--count", type=int, default=400, help="plates generated, or sim frames / vehicle crops")
    p.add_argument("--split", choices=("held-out", "tune"), default="tune")
    p.add_argument("--narrower-than", type=float)
    p.add_argument("--repeat", type=int, default=1, help="read every frame this many times per reader")
    p.add_argument("--base", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--new", action="append", default=[], metavar="FIELD=VALUE")
    args = p.parse_args(argv)
    if args.frames == "plates" and args.split == "held-out":
        print("held-out split: figures only, look at no failure")
    load_before = [round(x, 2) for x in os.getloadavg()]
    frames = _frames(args)
    readers = {"base": PlateReader(_config(args.base)), "new": PlateReader(_config(args.new))}
    for reader in readers.values():
        reader.read(frames[0][0])
    cpu: dict[str, list[float]] = {name: [] for name in readers}
    outcomes: dict[str, list[str]] = {name: [] for name in readers}
    found: dict[str, int] = {name: 0 for name in readers}
    order = list(readers)
    for i, (image, sample) in enumerate(frames):
        for name in order if i % 2 == 0 else order[::-1]:
            for _ in range(args.repeat):
                started = time.process_time()
                readings = readers[name].read(image)
                cpu[name].append((time.process_time() - started) * 1000)
            found[name] += len(readings)
            if sample is not None:
                outcomes[name].append(outcome(sample, readings))
    print(f"{len(frames)} {args.frames} frames, base {args.base or 'defaults'}, new {args.new}")
    for name in readers:
        line = f"{name}: CPU ms/frame {_stats(cpu[name])}, readings returned {found[name]}"
        if outcomes[name]:
            got = outcomes[name]
            line += (f", exact {got.count('ok')}, detector misses {got.count('detector')}, "
                     f"recogniser misses {got.count('recogniser')}, colour misses {got.count('colour')}")
        print(line)
    if outcomes["base"] and args.split == "tune":
        plates = [sample.index for _, sample in frames if sample is not None]
        pairs = list(zip(plates, outcomes["base"], outcomes["new"], strict=True))
        gained = [index for index, a, b in pairs if a != "ok" and b == "ok"]
        lost = [index for index, a, b in pairs if a == "ok" and b != "ok"]
        print(f"gained {gained}, lost {lost}")
    print(f"load average before {load_before}, after {[round(x, 2) for x in os.getloadavg()]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
