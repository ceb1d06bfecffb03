"""The parts of `make load` and `make load-capacity` that decide what a run is and whether it held: the mix scaled to
n intersections, the summary read from locust's CSV, the capacity bounds. (No locust here: load/driver.py is the
non-locust side.)"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from load.driver import LOAD, LocustRun, Mix, check_bounds, summarize

FIELDS = ["Type", "Name", "Request Count", "Failure Count", "Median Response Time", "Average Response Time",
          "Min Response Time", "Max Response Time", "Average Content Size", "Requests/s", "Failures/s", "50%", "66%",
          "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%"]


def test_the_mix_scales_per_intersection_rounding_up_and_adds_the_fixed_users() -> None:
    mix = Mix.read(LOAD / "mix.toml")
    one, three = mix.counts(1), mix.counts(3)
    assert one == {"Camera": 1, "Operator": 1, "Driver": 4, "PoliceConsole": 1, "ChargePoint": 2, "PlatformAdmin": 1}
    assert three == {"Camera": 3, "Operator": 2, "Driver": 12, "PoliceConsole": 2, "ChargePoint": 6,
                     "PlatformAdmin": 1}
    assert mix.fps == 5.0
    assert mix.bounds == {"frame_p99_ms": 300, "console_e2e_p99_ms": 2000, "driver_p99_ms": 50, "failures": 0,
                          "restarts": 0}


def _stats(out: Path, rows: list[dict[str, object]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with (out / "locust_stats.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, FIELDS, restval="0")
        w.writeheader()
        for r in rows:
            w.writerow(r)
        w.writerow({"Type": "", "Name": "Aggregated"})


def _row(kind: str, name: str, count: int, p99: float, failures: int = 0) -> dict[str, object]:
    return {"Type": kind, "Name": name, "Request Count": count, "Failure Count": failures, "Requests/s": count / 60,
            "50%": p99 / 2, "99%": p99, "Max Response Time": p99 * 1.5}


def test_the_summary_sorts_request_types_and_the_bounds_name_what_broke_first(tmp_path: Path) -> None:
    run = LocustRun(tmp_path / "r", 60, {"Camera": 1, "Driver": 4})
    _stats(run.out, [_row("grpc", "roadside.StreamFrames frame", 290, 280),
                     _row("grpc", "parking.FindAvailable", 100, 40), _row("grpc", "charging.FindChargers", 60, 75),
                     _row("e2e", "console e2e: report -> console", 6, 900),
                     _row("drop", "frame dropped by the service", 7, 0),
                     _row("drop", "frame dropped by the camera", 3, 0),
                     _row("lag", "municipal lag (ms = seconds behind x 1000)", 30, 1200),
                     _row("setup", "parking.RegisterLot", 4, 90, failures=1)])
    before = {"parking": {"pid": 10, "restarts": 0, "crashes": 0, "cpu_s": 5.0}}
    after = {"parking": {"pid": 10, "restarts": 1, "crashes": 0, "cpu_s": 35.0}}
    s = summarize(run, 0, before, after, 60.0, [1.0, 1.0, 1.0], [])
    assert s["dropped_frames"] == {"total": 10, "frames_answered": 290, "frame dropped by the service": 7,
                                   "frame dropped by the camera": 3}
    assert s["console_e2e"]["console e2e: report -> console"]["p99_ms"] == 900
    assert s["failures"] == 1  # the failed registration counts
    assert s["processes"]["parking"] == {"restarts": 1, "crashes": 0, "cpu_cores": 0.5}
    assert s["municipal_lag"]["during_run"]["municipal lag (ms = seconds behind x 1000)"]["p99"] == 1200
    broken = check_bounds(s, {"frame_p99_ms": 300, "console_e2e_p99_ms": 2000, "driver_p99_ms": 50, "failures": 0,
                              "restarts": 0})
    assert broken == ["driver_p99_ms: 75 > 50", "failures: 1 > 0", "restarts: 1 > 0"]


def test_a_bound_without_a_measurement_is_broken(tmp_path: Path) -> None:
    run = LocustRun(tmp_path / "r", 60, {"Driver": 1})
    _stats(run.out, [_row("grpc", "parking.FindAvailable", 10, 20)])
    s = summarize(run, 0, {}, {}, 60.0, [1.0, 1.0, 1.0], [])
    assert check_bounds(s, {"frame_p99_ms": 300, "driver_p99_ms": 50}) == ["frame_p99_ms: no measurement"]


def test_what_users_fire_while_a_step_settles_is_held_to_no_bound_but_its_failures_count(tmp_path: Path) -> None:
    """A capacity step's warm-up (its first seconds, load/users/common.py fires them as "warm-up <type>"): a slow
    first query there breaks no bound, a failure there still does; the measured rates span the measured seconds."""
    run = LocustRun(tmp_path / "r", 60, {"Driver": 4}, settle_s=10)
    _stats(run.out, [{**_row("grpc", "parking.FindAvailable", 120, 20), "Requests/s": 120 / 70},
                     _row("grpc", "charging.FindChargers", 60, 30),
                     _row("warm-up grpc", "parking.FindAvailable", 8, 200),
                     _row("warm-up setup", "parking.RegisterLot", 4, 90, failures=1)])
    s = summarize(run, 0, {}, {}, 70.0, [1.0, 1.0, 1.0], [])
    # Locust's rate: 120 over the run's 70 s; the measured 60 s had them all.
    assert s["requests"]["grpc parking.FindAvailable"]["rate_per_s"] == pytest.approx(2.0)
    assert s["requests"]["warm-up grpc parking.FindAvailable"]["p99_ms"] == 200
    assert s["settle_s"] == 10
    assert s["load_generator_cpu_cores"] is None  # locust did not run here
    assert check_bounds(s, {"driver_p99_ms": 50, "failures": 0}) == ["failures: 1 > 0"]
