"""`make load-capacity`: how many intersections one node holds. Steps the number of intersections up (1, 2, 3, ...),
each a `make load` run of LOAD_STEP_SECONDS (default 150) with the mix of load/mix.toml scaled to it (cameras at the
mix's fps plus their share of operators, drivers, consoles and chargers), against one suite started for all steps
(or V2X_TARGET), until a step breaks a bound of the mix's [bounds]: frame p99, console e2e p99, driver query p99,
failures, restarts. Prints the table and the bound that broke first; writes it with every step's report under
load/reports/<timestamp>/ (capacity.json, step-<n>/).

    make load-capacity [LOAD_STEP_SECONDS=150] [LOAD_MAX_INTERSECTIONS=16] [LOAD_DETECTOR=onnx]
                       [LOAD_WARM_UP_SECONDS=10] [LOAD_WORKERS=4]

Locust runs distributed, a master and LOAD_WORKERS (4) worker processes, because the generator's own tail was what
broke the driver bound first: with every user of 3 intersections in one locust process its drivers saw a p99 of
130-140 ms while a plain gRPC client (no gevent) querying the same services in the same run saw 22-30 ms and the
services' handling histogram had 2 calls in 1,170 over 50 ms; with 2 workers the drivers saw 18-25 ms at 3
intersections but 58-71 ms at 5 (the probe: 11-15 ms); with 4 workers at 5, 13-14 ms, the probe's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from load.driver import (
    DRIVER_QUERIES,
    FRAME,
    LOAD,
    LocustRun,
    Mix,
    check_bounds,
    frames_cache,
    measure,
    new_report_dir,
    open_target,
    runtime_dir,
    say,
    write_plan,
)

HEADER = (
    f"{'intersections':>13}{'users':>7}{'frames/s':>10}{'dropped':>9}{'frame p99':>11}{'e2e p99':>9}"
    f"{'driver p99':>12}{'failures':>10}{'restarts':>10}{'suite CPU':>11}{'locust CPU':>12}{'load avg':>10}  verdict"
)


def row(n: int, s: dict[str, Any], broken: list[str]) -> dict[str, Any]:
    frame = s["requests"].get(f"grpc {FRAME}", {})
    e2e = [e["p99_ms"] for e in s["console_e2e"].values() if e.get("p99_ms") is not None]
    driver = [s["requests"].get(f"grpc {q}", {}).get("p99_ms") for q in DRIVER_QUERIES]
    driver = [d for d in driver if d is not None]
    cpu = [p["cpu_cores"] for p in s["processes"].values() if p.get("cpu_cores") is not None]
    return {
        "intersections": n,
        "users": sum(s["users"].values()),
        "frames_per_s": frame.get("rate_per_s"),
        "dropped_frames": s["dropped_frames"]["total"],
        "frame_p99_ms": frame.get("p99_ms"),
        "console_e2e_p99_ms": max(e2e) if e2e else None,
        "driver_p99_ms": max(driver) if driver else None,
        "failures": s["failures"],
        "restarts": sum(p["restarts"] for p in s["processes"].values()),
        "suite_cpu_cores": round(sum(cpu), 2) if cpu else None,
        "locust_cpu_cores": s.get("load_generator_cpu_cores"),
        "load_average": s["load_average_before"][0],
        "broken": broken,
    }


def _f(v: Any, spec: str = ".0f") -> str:
    return "-" if v is None else format(v, spec)


def line(r: dict[str, Any]) -> str:
    verdict = "holds" if not r["broken"] else "BROKE " + "; ".join(r["broken"])
    return (
        f"{r['intersections']:>13}{r['users']:>7}{_f(r['frames_per_s'], '.1f'):>10}{r['dropped_frames']:>9}"
        f"{_f(r['frame_p99_ms']):>11}{_f(r['console_e2e_p99_ms']):>9}{_f(r['driver_p99_ms']):>12}"
        f"{r['failures']:>10}{r['restarts']:>10}{_f(r['suite_cpu_cores'], '.2f'):>11}"
        f"{_f(r.get('locust_cpu_cores'), '.2f'):>12}"
        f"{_f(r['load_average'], '.1f'):>10}  {verdict}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--step-seconds", type=float, default=float(os.environ.get("LOAD_STEP_SECONDS", "150")))
    p.add_argument("--max-intersections", type=int, default=int(os.environ.get("LOAD_MAX_INTERSECTIONS", "16")))
    p.add_argument("--warm-up-seconds", type=float, default=float(os.environ.get("LOAD_WARM_UP_SECONDS", "10")))
    p.add_argument("--start", type=int, default=int(os.environ.get("LOAD_START_INTERSECTIONS", "1")))
    p.add_argument("--mix", type=Path, default=Path(os.environ.get("LOAD_MIX", LOAD / "mix.toml")))
    p.add_argument("--reports", type=Path, default=LOAD / "reports")
    p.add_argument("--port-base", type=int, default=int(os.environ.get("LOAD_PORT_BASE", "52200")))
    p.add_argument("--detector", choices=("onnx", "sim"), default=os.environ.get("LOAD_DETECTOR", "onnx"))
    p.add_argument("--workers", type=int, default=int(os.environ.get("LOAD_WORKERS", "4")))
    ns = p.parse_args()
    mix = Mix.read(ns.mix)
    out = new_report_dir(ns.reports)
    say(
        f"make load-capacity: steps of {ns.step_seconds:g} s from {ns.start} intersection(s), bounds {mix.bounds}; "
        f"report {out}"
    )
    runtime = runtime_dir()
    target, style = open_target(ns.port_base, runtime, out / "suite.log", ns.detector)
    rows: list[dict[str, Any]] = []
    first_broken: str | None = None
    try:
        frames = frames_cache(mix.counts(4).get("Camera", 1), mix.fps, style)
        plan = runtime / "load-plan.json"
        say(f"each step: {ns.warm_up_seconds:g} s of warm-up (not held to the bounds), then {ns.step_seconds:g} s")
        say(HEADER)
        for n in range(ns.start, ns.max_intersections + 1):
            counts = mix.counts(n)
            write_plan(plan, target, frames, mix.fps, counts, ns.warm_up_seconds)
            run = LocustRun(out / f"step-{n:02d}", ns.step_seconds, counts, workers=ns.workers,
                            settle_s=ns.warm_up_seconds)
            _, summary = measure(run, plan, target, {"intersections": n, "fps": mix.fps})
            (run.out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
            broken = check_bounds(summary, mix.bounds)
            r = row(n, summary, broken)
            rows.append(r)
            say(line(r))
            if broken:
                first_broken = broken[0]
                break
    finally:
        target.stop()
    held = [r["intersections"] for r in rows if not r["broken"]]
    verdict = (
        f"one node held {max(held)} intersection(s); at {rows[-1]['intersections']} the first bound broken "
        f"was {first_broken}"
        if held and first_broken
        else f"no step held: at {rows[-1]['intersections']} the first bound broken was {first_broken}"
        if first_broken
        else f"every step up to {ns.max_intersections} held"
    )
    (out / "capacity.json").write_text(
        json.dumps(
            {
                "mix": str(ns.mix),
                "bounds": mix.bounds,
                "fps": mix.fps,
                "step_seconds": ns.step_seconds,
                "warm_up_seconds": ns.warm_up_seconds,
                "detector": ns.detector,
                "rows": rows,
                "verdict": verdict,
            },
            indent=2,
            ensure_ascii=False,
        )
    )
    say(f"\n{HEADER}")
    for r in rows:
        say(line(r))
    say(f"\n{verdict}\nreport: {out}")


if __name__ == "__main__":
    main()
