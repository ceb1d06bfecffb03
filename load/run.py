"""`make load`: the suite under a district's load for LOAD_SECONDS, every real client at once (load/locustfile.py).

    make load                                   # 120 s, load/mix.toml, a suite of its own (v2x run --no-sim)
    make load LOAD_SECONDS=600 LOAD_SHAPE=rush  # the rush hour (load/rush_hour.py)
    make load LOAD_WORKERS=2                    # distributed: a locust master and 2 worker processes
    V2X_TARGET=10.0.0.5 V2X_ADMIN_KEY=... make load   # an existing suite (keys from the environment)

Writes load/reports/<UTC timestamp>/ (locust's CSV and HTML, its log, summary.json, the suite's log) and points
load/reports/latest at it. Exit code 1 when locust saw a failure or a process of the suite restarted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from load.driver import (
    LOAD,
    LocustRun,
    Mix,
    frames_cache,
    load_average,
    measure,
    new_report_dir,
    open_target,
    runtime_dir,
    say,
    write_plan,
)


def print_summary(s: dict[str, object]) -> None:
    requests = s["requests"]
    assert isinstance(requests, dict)
    say(f"\n{'request':<58}{'count':>8}{'rate/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'fail':>6}")
    for name, r in sorted(requests.items()):
        say(
            f"{name[:57]:<58}{r['count']:>8}{(r['rate_per_s'] or 0):>9.1f}{(r['p50_ms'] or 0):>9.0f}"
            f"{(r['p99_ms'] or 0):>9.0f}{r['failures']:>6}"
        )
    e2e = s["console_e2e"]
    assert isinstance(e2e, dict)
    for name, r in e2e.items():
        say(
            f"{name[:57]:<58}{r['count']:>8}{(r['rate_per_s'] or 0):>9.1f}{(r['p50_ms'] or 0):>9.0f}"
            f"{(r['p99_ms'] or 0):>9.0f}{r['failures']:>6}"
        )
    say(f"dropped frames: {json.dumps(s['dropped_frames'], ensure_ascii=False)}")
    say(f"municipal lag: {json.dumps(s['municipal_lag'], ensure_ascii=False)}")
    say(f"processes: {json.dumps(s['processes'])}")
    say(f"load generator (locust) CPU: {s.get('load_generator_cpu_cores')} cores")
    say(f"load average before {s['load_average_before']}, after {s['load_average_after']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=float(os.environ.get("LOAD_SECONDS", "120")))
    p.add_argument("--mix", type=Path, default=Path(os.environ.get("LOAD_MIX", LOAD / "mix.toml")))
    p.add_argument("--intersections", type=int, default=int(os.environ.get("LOAD_INTERSECTIONS", "0")) or None)
    p.add_argument("--shape", choices=("", "rush"), default=os.environ.get("LOAD_SHAPE", ""))
    p.add_argument("--workers", type=int, default=int(os.environ.get("LOAD_WORKERS", "0")))
    p.add_argument("--reports", type=Path, default=LOAD / "reports")
    p.add_argument("--port-base", type=int, default=int(os.environ.get("LOAD_PORT_BASE", "52200")))
    p.add_argument(
        "--detector",
        choices=("onnx", "sim"),
        default=os.environ.get("LOAD_DETECTOR", "onnx"),
        help="the roadside detector of a suite started here (sim: key-coloured frames, no model)",
    )
    ns = p.parse_args()
    mix = Mix.read(ns.mix)
    intersections = ns.intersections or mix.intersections
    counts = mix.counts(intersections)
    out = new_report_dir(ns.reports)
    say(
        f"make load: {ns.seconds:g} s, {intersections} intersections, users {counts}"
        f"{', rush hour' if ns.shape else ''}{f', {ns.workers} workers' if ns.workers else ''}; report {out}"
    )
    say(f"load average {load_average()}")
    runtime = runtime_dir()
    target, style = open_target(ns.port_base, runtime, out / "suite.log", ns.detector)
    try:
        frames = frames_cache(counts.get("Camera", 1), mix.fps, style)
        plan = runtime / "load-plan.json"
        write_plan(plan, target, frames, mix.fps, counts)
        run = LocustRun(out, ns.seconds, counts, shape=ns.shape == "rush", workers=ns.workers)
        say(f"locust: {sum(counts.values())} users for {ns.seconds:g} s (log {run.log})")
        code, summary = measure(
            run,
            plan,
            target,
            {
                "intersections": intersections,
                "mix": str(ns.mix),
                "fps": mix.fps,
                "detector": ns.detector if target.proc else "remote",
                "target": "v2x run (started here)" if target.proc else os.environ["V2X_TARGET"],
            },
        )
    finally:
        target.stop()
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    print_summary(summary)
    say(f"\nreport: {out} (summary.json, report.html, locust_stats.csv)")
    restarts = sum(p["restarts"] for p in summary["processes"].values())
    raise SystemExit(1 if code != 0 or summary["failures"] or restarts else 0)


if __name__ == "__main__":
    main()
