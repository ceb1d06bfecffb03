"""The roadside simulator: intersections of the demo district streamed to a running suite.

    python -m roadside_sim [run] --intersections 4 --cameras-per 1 --fps 3 --seconds 0 [--target HOST:PORT --key K]
    python -m roadside_sim score --seconds 600 --json score.json
    python -m roadside_sim picture --run DIR --camera ID --out PNG   (a kept frame with detections and tracks)
    python -m roadside_sim approach --key K          (the simple key-coloured approach, for the sim detector)

`v2x sim ...` runs the same (services/cli.py starts `python -m roadside_sim`). Targets and keys default to the ones
the running `v2x run` of this user left in its run file.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from roadside_sim.scenario import DEMO_ORDER, Kind
from roadside_sim.suite import read_run_file

if TYPE_CHECKING:
    from roadside_sim.run import SimConfig

DEFAULTS = {"roadside": "127.0.0.1:50051", "parking": "127.0.0.1:50053", "idps": "127.0.0.1:50052"}


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--intersections", type=int, default=4, help="junctions of the district with cameras (1..4)")
    p.add_argument("--cameras-per", type=int, default=1, help="cameras per junction, one per approach (1..4)")
    p.add_argument("--fps", type=float, default=3.0, help="frames per second per camera")
    p.add_argument("--seconds", type=float, default=0.0, help="how long (0: until Ctrl-C)")
    p.add_argument("--target", default="", help="the roadside service (default: the running `v2x run`'s)")
    p.add_argument("--parking", default="", help="the parking service (default: the running `v2x run`'s)")
    p.add_argument("--charging", default="", help="the charging service, for the kerbside chargers over its OCPP "
                   "gateway (default: the running `v2x run`'s when --target is not given; none otherwise)")
    p.add_argument("--no-chargers", action="store_true", help="no simulated OCPP charge points")
    p.add_argument("--idps", default="", help="the IDPS service (scoring; default: the running `v2x run`'s)")
    p.add_argument("--key", default="", help="an admin API key (default: the running `v2x run`'s demo admin key)")
    p.add_argument("--police-key", default="", help="a police key (scoring; default: the run's demo police key)")
    p.add_argument("--start", default="", help="local time of day to simulate, HH:MM (default: now in Shanghai)")
    p.add_argument("--out", default="", help="folder for ground truth and results (default: a new temp folder)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--no-scenarios", action="store_true", help="traffic only, no injected events")
    p.add_argument("--no-spots", action="store_true", help="no on-street parking spots")
    p.add_argument("--no-gates", action="store_true", help="no garage gate with plates (needs an operator key of "
                   "the running `v2x run`)")
    p.add_argument("--events", default="", help="only these event types, e.g. 903,904 (default: all)")
    p.add_argument("--keep-every", type=int, default=60, help="keep every Nth frame of each camera as JPEG in "
                   "<out>/frames (1: every frame, for replaying the detector offline; 0: none)")
    p.add_argument("--render", choices=("photo", "key"), default="photo",
                   help="vehicles from a real photo (for the real detector) or key-coloured (for the service's "
                   "V2X_ROADSIDE_DETECTOR=sim)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="v2x sim", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command")
    run = sub.add_parser("run", help="stream the district's cameras to a running suite (the default)")
    _add_common(run)
    score = sub.add_parser("score", help="run a scenario and score what the suite reported against the truth")
    _add_common(score)
    score.add_argument("--json", default="", help="write the scores here")
    score.add_argument("--min-recall", default="", help="fail (exit 1) when an event type's recall is below, "
                       "e.g. 903=0.9,904=0.9")
    sub.add_parser("approach", help="the simple key-coloured approach (see roadside_sim/approach.py)", add_help=False)
    return p


def _config(ns: argparse.Namespace, seconds_default: float = 0.0) -> tuple[SimConfig, dict[str, str]]:
    from roadside_sim.run import SimConfig

    run = read_run_file() or {}
    targets = {**DEFAULTS, **run.get("targets", {})}
    keys = run.get("keys", {})
    admin = ns.key or keys.get("admin", "")
    if not admin:
        raise SystemExit("v2x sim: no admin key: give --key (no running `v2x run` of this user was found)")
    if not 1 <= ns.intersections <= 4 or not 1 <= ns.cameras_per <= 4:
        raise SystemExit("v2x sim: --intersections and --cameras-per must be 1..4")
    if ns.keep_every < 0:
        raise SystemExit("v2x sim: --keep-every must be 0 or more")
    if not 0.2 <= ns.fps <= 30:
        raise SystemExit("v2x sim: --fps must be 0.2..30")
    start = None
    if ns.start:
        from roadside_sim.run import SHANGHAI

        try:
            hh, mm = (int(x) for x in ns.start.split(":"))
            start = datetime.now(SHANGHAI).replace(hour=hh, minute=mm, second=0, microsecond=0)
        except ValueError:
            raise SystemExit(f"v2x sim: --start {ns.start!r} is not HH:MM") from None
    kinds: tuple[Kind, ...] = DEMO_ORDER
    if ns.events:
        try:
            kinds = tuple(Kind(int(x)) for x in ns.events.split(","))
        except ValueError:
            raise SystemExit(f"v2x sim: --events {ns.events!r}: known types are "
                             f"{','.join(str(int(k)) for k in Kind)}") from None
    cfg = SimConfig(roadside=ns.target or targets["roadside"], parking=ns.parking or targets["parking"],
                    admin_key=admin, intersections=ns.intersections, cameras_per=ns.cameras_per, fps=ns.fps,
                    seconds=ns.seconds or seconds_default, start=start, out=Path(ns.out) if ns.out else None,
                    seed=ns.seed, scenarios=not ns.no_scenarios, kinds=kinds, spots=not ns.no_spots,
                    render=ns.render, keep_every=ns.keep_every)
    if not ns.no_chargers:
        cfg.charging = ns.charging or ("" if ns.target else run.get("targets", {}).get("charging", ""))
    operators = sorted(k.removeprefix("operator:") for k in keys
                       if k.startswith("operator:") and k != "operator:STREET")
    if operators and not ns.no_gates:
        cfg.gate_operator, cfg.gate_key = operators[0], keys[f"operator:{operators[0]}"]
    extra = {"idps": ns.idps or targets["idps"], "police": ns.police_key or keys.get("police", "")}
    return cfg, extra


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["picture"]:
        from roadside_sim.picture import main as picture

        picture(args[1:])
        return
    if args[:1] == ["approach"]:
        from roadside_sim.approach import main as approach

        approach(args[1:])
        return
    if not args or (args[0].startswith("-") and args[0] not in ("-h", "--help")):
        args = ["run", *args]
    ns = parser().parse_args(args)
    if ns.command == "score":
        from roadside_sim.score import score_command

        cfg, extra = _config(ns, seconds_default=600.0)
        raise SystemExit(asyncio.run(score_command(cfg, extra["idps"], extra["police"], ns.json, ns.min_recall)))
    cfg, _ = _config(ns)
    asyncio.run(_run(cfg))


async def _run(cfg: SimConfig) -> None:
    from roadside_sim.run import simulate, summary

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if cfg.seconds > 0:
        run = await simulate(cfg, stop)
        print(f"roadside_sim: done: {summary(run)}", flush=True)
        return
    # Until stopped: one simulated hour at a time (routes for an hour build in seconds), each from the time of day
    # it starts at, ground truth in a folder of its own.
    base = cfg.out
    session = 0
    while not stop.is_set():
        session += 1
        part = dataclasses.replace(cfg, seconds=3600.0, start=None, out=base / f"session-{session}" if base else None,
                                   jam_lead_s=60.0 if session == 1 else 0.0)
        run = await simulate(part, stop)
        print(f"roadside_sim: hour {session} done: {summary(run)}", flush=True)


if __name__ == "__main__":
    main()
