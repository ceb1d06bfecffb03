"""What `make load` and `make load-capacity` share: the suite under test (started with `v2x run` on ports of its
own, or an existing one named by V2X_TARGET), the frames rendered in advance, the plan the locust users read, a
headless locust run (alone or as a master with workers) and the summary of what it measured.

This process is not a locust process: it never imports a locustfile (gevent would patch it); locust runs as child
processes.
"""

from __future__ import annotations

import csv
import json
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from v2x.municipal.v1 import municipal_pb2 as mpb
from v2x.municipal.v1.municipal_pb2_grpc import MunicipalAdminServiceStub

from load.harness import tree_cpu_s
from services.common.runfile import read_live

ROOT = Path(__file__).resolve().parents[1]
LOAD = ROOT / "load"
BIN = Path(sys.executable).parent
SERVICES = ("roadside", "idps", "parking", "charging", "municipal")
# Where a suite `make load` starts listens: LOAD_PORT_BASE + these (not the standard ports, so that a `make run` of
# the same user can go on beside it).
PORT_OFFSETS = {"roadside": 1, "idps": 2, "parking": 3, "charging": 4, "municipal": 5}
METRICS_OFFSET, OCPP_OFFSET, EMULATOR_OFFSET, CONSOLE_OFFSET = 10, 20, 21, 22
# Request types that are not round trips (load/users/common.py).
E2E, DROP, LAG, SETUP, WARM_UP = "e2e", "drop", "lag", "setup", "warm-up"
FRAME = "roadside.StreamFrames frame"
DRIVER_QUERIES = ("parking.FindAvailable", "charging.FindChargers")


def say(text: str) -> None:
    print(text, flush=True)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ----- the mix --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mix:
    intersections: int
    cameras_per: int
    fps: float
    per_intersection: dict[str, float]
    fixed: dict[str, int]
    bounds: dict[str, float]

    @staticmethod
    def read(path: Path) -> Mix:
        raw = tomllib.loads(path.read_text())
        run = raw.get("run", {})
        return Mix(
            int(run.get("intersections", 4)),
            int(run.get("cameras_per", 1)),
            float(run.get("fps", 5.0)),
            {k: float(v) for k, v in raw.get("per_intersection", {}).items()},
            {k: int(v) for k, v in raw.get("fixed", {}).items()},
            {k: float(v) for k, v in raw.get("bounds", {}).items()},
        )

    def counts(self, intersections: int) -> dict[str, int]:
        """Users per class for `intersections` intersections (shares rounded up, so every class runs)."""
        out = {
            name: math.ceil(share * intersections * (self.cameras_per if name == "Camera" else 1) - 1e-9)
            for name, share in self.per_intersection.items()
        }
        for name, n in self.fixed.items():
            out[name] = out.get(name, 0) + n
        return {k: v for k, v in out.items() if v > 0}


# ----- the suite under test -------------------------------------------------------------------------------------


@dataclass
class Target:
    targets: dict[str, str]
    ocpp_url: str
    keys: dict[str, str]  # admin, police, driver, operator
    operator_id: str
    run_file: Path | None = None  # a suite this run started: its processes (pids, restarts)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def processes(self) -> dict[str, dict[str, Any]]:
        if self.run_file is None:
            return {}
        run = read_live(self.run_file) or {}
        procs: dict[str, dict[str, Any]] = run.get("processes", {})
        return procs

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # `v2x run` stops everything it started on Ctrl-C
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def target_from_env(env: Mapping[str, str]) -> Target:
    """An existing suite: V2X_TARGET=HOST (each service on its V2X_<SERVICE>_PORT or the standard port), its OCPP
    gateway at V2X_OCPP_URL (default ws://HOST:9000/ocpp) and keys from V2X_ADMIN_KEY, V2X_POLICE_KEY,
    V2X_DRIVER_KEY, V2X_OPERATOR_KEY (of operator V2X_OPERATOR_ID)."""
    host = env["V2X_TARGET"]
    standard = {"roadside": 50051, "idps": 50052, "parking": 50053, "charging": 50054, "municipal": 50055}
    targets = {s: f"{host}:{env.get(f'V2X_{s.upper()}_PORT', standard[s])}" for s in SERVICES}
    names = {
        "admin": "V2X_ADMIN_KEY",
        "police": "V2X_POLICE_KEY",
        "driver": "V2X_DRIVER_KEY",
        "operator": "V2X_OPERATOR_KEY",
    }
    missing = [v for v in [*names.values(), "V2X_OPERATOR_ID"] if not env.get(v)]
    if missing:
        raise SystemExit(f"V2X_TARGET={host}: set {', '.join(missing)} (the keys the load test uses)")
    return Target(
        targets,
        env.get("V2X_OCPP_URL", f"ws://{host}:9000/ocpp"),
        {k: env[v] for k, v in names.items()},
        env["V2X_OPERATOR_ID"],
    )


def start_suite(
    port_base: int, runtime_dir: Path, log_path: Path, extra_env: Mapping[str, str], timeout_s: float = 600.0
) -> Target:
    """`v2x run --no-sim` on ports from `port_base`, its run file in `runtime_dir`; returns once it is up."""
    runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = {**os.environ, **extra_env, "XDG_RUNTIME_DIR": str(runtime_dir)}
    for s, off in PORT_OFFSETS.items():
        env[f"V2X_{s.upper()}_PORT"] = str(port_base + off)
        env[f"V2X_{s.upper()}_METRICS_PORT"] = str(port_base + METRICS_OFFSET + off)
    env["V2X_OCPP_PORT"] = str(port_base + OCPP_OFFSET)
    env["V2X_EMULATOR_PORT"] = str(port_base + EMULATOR_OFFSET)
    env["V2X_CONSOLE_PORT"] = str(port_base + CONSOLE_OFFSET)  # `v2x run` starts the web console too
    env.setdefault("LOG_LEVEL", "WARNING")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [str(BIN / "v2x"), "run", "--no-sim"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
    )
    run_file = runtime_dir / "v2x" / "run.json"
    deadline = time.monotonic() + timeout_s
    say(f"starting the suite (v2x run --no-sim, ports {port_base + 1}..{port_base + CONSOLE_OFFSET}, log {log_path})")
    while b"is up in" not in log_path.read_bytes():
        if proc.poll() is not None:
            raise SystemExit(f"v2x run exited with {proc.returncode}:\n{_tail(log_path)}")
        if time.monotonic() > deadline:
            proc.send_signal(signal.SIGINT)
            proc.wait(90)
            raise SystemExit(f"v2x run was not up within {timeout_s:g} s:\n{_tail(log_path)}")
        time.sleep(1)
    run = read_live(run_file)
    if run is None:
        raise SystemExit(f"v2x run is up but left no run file in {run_file}")
    keys = run["keys"]
    return Target(
        dict(run["targets"]),
        run["ocpp_url"],
        {"admin": keys["admin"], "police": keys["police"], "driver": keys["driver"], "operator": keys["operator:BSCT"]},
        "BSCT",
        run_file,
        proc,
        log_path,
    )


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# ----- frames, plan ---------------------------------------------------------------------------------------------


def frames_cache(cameras: int, fps: float, style: str) -> Path:
    """The zip of frames for `cameras` distinct camera views at `fps` (rendered once, then reused)."""
    intersections = min(4, cameras)
    cameras_per = min(4, max(1, math.ceil(cameras / 4)))
    path = LOAD / ".cache" / f"frames-{style}-{fps:g}fps-{intersections}x{cameras_per}.zip"
    if not path.exists():
        say(f"rendering the cameras' frames in advance (roadside_sim) -> {path}")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "load.frames",
                "--out",
                str(path),
                "--fps",
                f"{fps:g}",
                "--intersections",
                str(intersections),
                "--cameras-per",
                str(cameras_per),
                "--render",
                style,
            ],
            check=True,
            cwd=ROOT,
        )
    return path


def write_plan(
    path: Path, target: Target, frames: Path, fps: float, counts: Mapping[str, int], settle_s: float = 0.0
) -> None:
    """The plan the users read (it holds keys: readable by this user only). What the users fire in their process's
    first `settle_s` seconds is reported under "warm-up" types (load/users/common.py)."""
    plan = {
        "targets": target.targets,
        "ocpp_url": target.ocpp_url,
        "keys": target.keys,
        "operator_id": target.operator_id,
        "frames": str(frames),
        "fps": fps,
        "counts": dict(counts),
        "settle_s": settle_s,
    }
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(plan, f)


# ----- running locust -------------------------------------------------------------------------------------------


@dataclass
class LocustRun:
    out: Path  # the report folder
    seconds: float
    counts: dict[str, int]
    shape: bool = False
    workers: int = 0  # 0: one locust process; N: a master and N worker processes
    settle_s: float = 0.0  # run this much longer first, reported apart (the plan's settle_s must say the same)
    log: Path = field(init=False)
    cpu_s: float | None = field(default=None, init=False)  # the locust processes' CPU seconds, once they ran

    def __post_init__(self) -> None:
        self.log = self.out / "locust.log"


def _children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)  # of the children that have ended and been waited for
    return r.ru_utime + r.ru_stime


def run_locust(run: LocustRun, plan_path: Path) -> int:
    """Headless locust for `run.seconds` (+ `run.settle_s`); CSV (with history), HTML and its log in `run.out`.
    Returns its exit code (the master's in distributed mode); `run.cpu_s` is then what the locust processes used:
    on one node the load generator shares the cores with the suite, and the report says how much it took."""
    before = _children_cpu_s()
    code = _run_locust(run, plan_path)
    run.cpu_s = _children_cpu_s() - before
    return code


def _run_locust(run: LocustRun, plan_path: Path) -> int:
    run.out.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "V2X_LOAD_PLAN": str(plan_path),
        "LOAD_SECONDS": f"{run.seconds + run.settle_s:g}",
        "PYTHONPATH": f"{ROOT}:{ROOT / 'protos'}",
    }
    locustfile = LOAD / ("rush_hour.py" if run.shape else "locustfile.py")
    users = sum(run.counts.values())
    classes = [] if run.shape else sorted(run.counts)
    common = [
        "-f",
        str(locustfile),
        "--headless",
        "--stop-timeout",
        "5",
        "--exit-code-on-error",
        "1",
        "--loglevel",
        "WARNING",
        "--only-summary",
    ]
    stats = ["--csv", str(run.out / "locust"), "--csv-full-history", "--html", str(run.out / "report.html")]
    load = [] if run.shape else ["-u", str(users), "-r", str(max(1, users)), "-t", f"{run.seconds + run.settle_s:g}s"]
    locust = str(BIN / "locust")
    with run.log.open("wb") as log:
        if not run.workers:
            proc = subprocess.run(
                [locust, *common, *stats, *load, *classes],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                check=False,
            )
            return proc.returncode
        port = _free_port()
        master = subprocess.Popen(
            [
                locust,
                *common,
                *stats,
                *load,
                "--master",
                "--master-bind-host",
                "127.0.0.1",
                "--master-bind-port",
                str(port),
                "--expect-workers",
                str(run.workers),
                "--expect-workers-max-wait",
                "60",
                *classes,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        workers = [
            subprocess.Popen(
                [locust, *common, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port), *classes],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
            for _ in range(run.workers)
        ]
        try:
            code = master.wait(run.seconds + run.settle_s + 180)
        finally:
            for w in workers:
                try:
                    w.wait(30)
                except subprocess.TimeoutExpired:
                    w.kill()
                    w.wait()
            if master.poll() is None:
                master.kill()
                master.wait()
        return code


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ----- what the run measured ------------------------------------------------------------------------------------


def read_stats(out: Path) -> list[dict[str, str]]:
    with (out / "locust_stats.csv").open() as f:
        return [row for row in csv.DictReader(f) if row["Name"] != "Aggregated"]


def _num(v: str) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def process_snapshot(target: Target) -> dict[str, dict[str, Any]]:
    """Each process of the suite this run started: pid, restarts so far, CPU seconds so far (children included)."""
    out = {}
    for name, p in target.processes().items():
        pid = p.get("pid")
        out[name] = {
            "pid": pid,
            "restarts": int(p.get("restarts", 0)),
            "crashes": int(p.get("crashes", 0)),
            "cpu_s": tree_cpu_s(int(pid)) if pid else None,
        }
    return out


def municipal_status(target: Target) -> list[dict[str, Any]]:
    with grpc.insecure_channel(target.targets["municipal"]) as ch:
        try:
            reply = MunicipalAdminServiceStub(ch).GetStatus(
                mpb.GetStatusRequest(), metadata=(("authorization", f"Bearer {target.keys['admin']}"),), timeout=10
            )
        except grpc.RpcError as exc:
            return [{"error": f"{exc.code().name}: {exc.details()}"}]
    return [
        {
            "destination": d.destination,
            "lag_records": d.lag_records,
            "lag_s": round(d.lag_s, 3),
            "dead_letters": d.dead_letters,
        }
        for d in reply.destinations
    ]


def summarize(
    run: LocustRun,
    code: int,
    before: dict[str, dict[str, Any]],
    after: dict[str, dict[str, Any]],
    wall_s: float,
    load_before: list[float],
    municipal: list[dict[str, Any]],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    rows = read_stats(run.out)
    per_type: dict[str, Any] = {}
    e2e: dict[str, Any] = {}
    drops: dict[str, int] = {}
    lag: dict[str, Any] = {}
    setup_failures = 0
    for r in rows:
        n, fails = int(r["Request Count"]), int(r["Failure Count"])
        kind, name = r["Type"], r["Name"]
        rate = _num(r["Requests/s"])
        if run.settle_s and rate and not kind.startswith(WARM_UP):
            # Locust's rate is the count over the time from the start to the last one, settling included, in which
            # these were not counted: the rate over the measured part is the count over that time less settle_s.
            rate = n / max(n / rate - run.settle_s, 1.0)
        entry = {
            "count": n,
            "rate_per_s": rate,
            "p50_ms": _num(r["50%"]),
            "p99_ms": _num(r["99%"]),
            "max_ms": _num(r["Max Response Time"]),
            "failures": fails,
        }
        if kind == DROP:
            drops[name] = n
        elif kind == E2E:
            e2e[name] = entry
        elif kind == LAG:
            lag[name] = {
                "samples": n,
                "p50": _num(r["50%"]),
                "p99": _num(r["99%"]),
                "max": _num(r["Max Response Time"]),
            }
        elif kind == SETUP:
            setup_failures += fails
            per_type[f"{kind} {name}"] = entry
        else:
            per_type[f"{kind} {name}"] = entry
    frames = per_type.get(f"grpc {FRAME}", {}).get("count", 0)
    processes = {}
    for name, a in after.items():
        b = before.get(name, {})
        cpu = None
        if a.get("cpu_s") is not None and b.get("cpu_s") is not None and a.get("pid") == b.get("pid"):
            cpu = round((a["cpu_s"] - b["cpu_s"]) / wall_s, 3)
        processes[name] = {
            "restarts": a["restarts"] - b.get("restarts", 0),
            "crashes": a["crashes"] - b.get("crashes", 0),
            "cpu_cores": cpu,
        }
    failures = sum(v["failures"] for v in per_type.values()) + sum(v["failures"] for v in e2e.values())
    return {
        "seconds": run.seconds,
        "settle_s": run.settle_s,
        "wall_s": round(wall_s, 1),
        "locust_exit_code": code,
        "users": run.counts,
        "shape": "rush_hour" if run.shape else None,
        "workers": run.workers,
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "cpu_count": os.cpu_count(),
        "requests": per_type,
        "failures": failures,
        "console_e2e": e2e,
        "dropped_frames": {"total": sum(drops.values()), "frames_answered": frames, **drops},
        "municipal_lag": {"during_run": lag, "at_end": municipal},
        "processes": processes,
        "load_generator_cpu_cores": round(run.cpu_s / wall_s, 3) if run.cpu_s is not None else None,
        **(extra or {}),
    }


def open_target(port_base: int, runtime: Path, log_path: Path, detector: str) -> tuple[Target, str]:
    """The suite a run loads: V2X_TARGET's, or one started here with `detector`; and the style of frames it needs
    (key-coloured for the key-colour detector, photos otherwise)."""
    if os.environ.get("V2X_TARGET"):
        return target_from_env(os.environ), os.environ.get("LOAD_FRAMES", "photo")
    target = start_suite(port_base, runtime, log_path, {"V2X_ROADSIDE_DETECTOR": detector})
    return target, "key" if detector == "sim" else "photo"


def measure(run: LocustRun, plan_path: Path, target: Target, extra: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
    """One locust run against `target`, with the suite's processes, CPU and municipal lag around it: its exit code
    and summary."""
    load_before = load_average()
    before = process_snapshot(target)
    started = time.monotonic()
    code = run_locust(run, plan_path)
    wall = time.monotonic() - started
    after = process_snapshot(target)
    return code, summarize(run, code, before, after, wall, load_before, municipal_status(target), extra)


def check_bounds(summary: Mapping[str, Any], bounds: Mapping[str, float]) -> list[str]:
    """The bounds of the mix a run broke, in the order of load/mix.toml's [bounds]."""
    broken = []
    for bound, limit in bounds.items():
        if bound == "frame_p99_ms":
            v = summary["requests"].get(f"grpc {FRAME}", {}).get("p99_ms")
        elif bound == "console_e2e_p99_ms":
            vals = [e["p99_ms"] for e in summary["console_e2e"].values() if e.get("p99_ms") is not None]
            v = max(vals) if vals else None
        elif bound == "driver_p99_ms":
            vals = [summary["requests"].get(f"grpc {q}", {}).get("p99_ms") for q in DRIVER_QUERIES]
            vals = [x for x in vals if x is not None]
            v = max(vals) if vals else None
        elif bound == "failures":
            v = summary["failures"]
        elif bound == "restarts":
            v = sum(p["restarts"] for p in summary["processes"].values())
        else:
            continue
        if v is None:
            broken.append(f"{bound}: no measurement")
        elif v > limit:
            broken.append(f"{bound}: {v:g} > {limit:g}")
    return broken


def new_report_dir(base: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = base / stamp
    out.mkdir(parents=True, exist_ok=False)
    latest = base / "latest"
    tmp = base / f".latest.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(stamp)
    tmp.replace(latest)
    return out


def runtime_dir() -> Path:
    given = os.environ.get("LOAD_RUNTIME_DIR")
    return Path(given) if given else Path(tempfile.mkdtemp(prefix="v2x-load-"))
