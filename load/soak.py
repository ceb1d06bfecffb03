"""Soak: mixed real clients against a running `v2x run` for N minutes, then what happened to its processes.

    .venv/bin/python load/soak.py --minutes 30 [--json PATH] [--run-file PATH]

Needs nothing but a running suite (`make run` in another terminal): it reads the endpoints and demo keys from the
run's private run file. The clients, all at once:

- health checks and reflection listings on every service;
- unary calls of every service (drivers' queries, occupancy, passages with plates, incident reports and listings,
  the municipal adapter's status, camera frames with plates through Detect and ReadPlate), a share of them with bad
  input that must be refused with INVALID_ARGUMENT;
- every streaming rpc, each cancelled by its client at a random moment (`load/walkaway.py`);
- OCPP 1.6J and 2.0.1 charge points that boot, send heartbeats, statuses and a transaction, then drop the
  connection (or close it) and come back.

It prints each process' restarts and native crashes during the soak (0 and 0 expected), the status codes clients
saw per kind of call, and each service's memory (RSS) at start and end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from v2x.charging.v1 import charging_pb2 as cpb
from v2x.charging.v1 import charging_pb2_grpc
from v2x.common.v1 import common_pb2
from v2x.idps.v1 import idps_pb2 as ipb
from v2x.idps.v1 import idps_pb2_grpc
from v2x.municipal.v1 import municipal_pb2 as mpb
from v2x.municipal.v1 import municipal_pb2_grpc
from v2x.parking.v1 import parking_pb2 as ppb
from v2x.parking.v1 import parking_pb2_grpc
from v2x.roadside.v1 import roadside_pb2 as rpb
from v2x.roadside.v1 import roadside_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from load.chargepoints import ChargePointAccess, session
from load.walkaway import CENTER, MOMENTS, Suite, Walker, prepare
from services.common.runfile import read_live, run_file

# What a client may be answered; anything else (INTERNAL, UNKNOWN, UNAVAILABLE, ...) is counted as an error.
FINE = frozenset({"OK", "CANCELLED", "DEADLINE_EXCEEDED", "INVALID_ARGUMENT"})


def _md(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


def _now() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


def rss_kb(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class Results:
    codes: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    errors: list[str] = field(default_factory=list)
    ocpp: Counter[str] = field(default_factory=Counter)

    def record(self, kind: str, code: str, detail: str = "") -> None:
        self.codes[kind][code] += 1
        if code not in FINE and len(self.errors) < 200:
            self.errors.append(f"{kind}: {code} {detail}"[:300])


class Soak:
    def __init__(self, run: dict[str, Any], rng: random.Random) -> None:
        self.run = run
        self.targets: dict[str, str] = run["targets"]
        self.keys: dict[str, str] = run["keys"]
        self.rng = rng
        self.results = Results()
        self.channels = {name: aio.insecure_channel(t) for name, t in self.targets.items()}
        self.suite = Suite(self.targets, self.keys["admin"], self.keys["police"], self.keys["driver"],
                           self.keys["operator:BSCT"])
        self.seq = time.time_ns() // 1000
        self.plates: list[bytes] = []
        self.chargers: list[ChargePointAccess] = []

    async def _unary(self, kind: str, call: Awaitable[Any]) -> None:
        try:
            await call
            self.results.record(kind, "OK")
        except aio.AioRpcError as exc:
            self.results.record(kind, exc.code().name, exc.details() or "")

    # ----- preparation ------------------------------------------------------------------------------------------

    async def prepare(self) -> Walker:
        fixtures = await prepare(self.suite)
        self.lot = fixtures.lot
        self.plates = _plate_frames(self.rng)
        self.chargers = await self._register_chargers()
        return Walker(self.suite, fixtures, rng=random.Random(self.rng.random()))

    async def _register_chargers(self) -> list[ChargePointAccess]:
        stub = charging_pb2_grpc.ChargingServiceStub(self.channels["charging"])
        out = []
        tag = f"{int(time.time()) % 100000:05d}"
        for version, protocol in (("1.6", cpb.OCPP_PROTOCOL_OCPP16J), ("2.0.1", cpb.OCPP_PROTOCOL_OCPP201)):
            short = version.replace(".", "")
            sid, cp_id = f"SOAK-CS-{tag}-{short}", f"SOAK-CP-{tag}-{short}"
            evses = []
            for i in (1, 2):
                connector = cpb.Connector(id=f"{sid}-C{i}", standard=cpb.CONNECTOR_STANDARD_GBT_DC, max_power_kw=120,
                                          price_per_kwh_fen=120, service_fee_per_kwh_fen=60,
                                          ocpp_connector_id=1 if version != "1.6" else i)
                evses.append(cpb.Evse(id=f"E{i}", charge_point_id=cp_id, ocpp_evse_id=i if version != "1.6" else 0,
                                      connectors=[connector]))
            station = cpb.Station(id=sid, operator_id="BSCT", name=f"Soak {sid}", location=CENTER,
                                  address="宝山区友谊路1号", evses=evses)
            await stub.RegisterStation(cpb.RegisterStationRequest(station=station), metadata=_md(self.keys["admin"]))
            reply = await stub.RegisterChargePoint(cpb.RegisterChargePointRequest(
                charge_point_id=cp_id, station_id=sid, protocol=protocol), metadata=_md(self.keys["admin"]))
            out.append(ChargePointAccess(self.run["ocpp_url"], cp_id, reply.password, version, 2))
        return out

    # ----- the clients ------------------------------------------------------------------------------------------

    async def infrastructure(self) -> None:
        name = self.rng.choice(list(self.targets))
        ch = self.channels[name]
        await self._unary("health.Check", health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(),
                                                                               timeout=5))
        call = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        try:
            async for _ in call:
                pass
            self.results.record("reflection.list", "OK")
        except aio.AioRpcError as exc:
            self.results.record("reflection.list", exc.code().name, exc.details() or "")

    async def unary(self) -> None:
        k, rng = self.keys, self.rng
        bad = rng.random() < 0.15
        here = common_pb2.LatLon(lat=CENTER.lat + rng.uniform(-0.02, 0.02), lon=CENTER.lon + rng.uniform(-0.02, 0.02))
        parking = parking_pb2_grpc.ParkingServiceStub(self.channels["parking"])
        charging = charging_pb2_grpc.ChargingServiceStub(self.channels["charging"])
        idps = idps_pb2_grpc.IdpsServiceStub(self.channels["idps"])
        roadside = roadside_pb2_grpc.RoadsideServiceStub(self.channels["roadside"])
        municipal = municipal_pb2_grpc.MunicipalAdminServiceStub(self.channels["municipal"])
        choice = rng.randrange(8)
        if choice == 0:
            await self._unary("parking.FindAvailable", parking.FindAvailable(ppb.FindAvailableRequest(
                location=here, radius_m=-5 if bad else 1500, limit=10), metadata=_md(k["driver"]), timeout=5))
        elif choice == 1:
            await self._unary("charging.FindChargers", charging.FindChargers(cpb.FindChargersRequest(
                location=here, radius_m=2500, limit=0 if not bad else -1), metadata=_md(k["driver"]), timeout=5))
        elif choice == 2:
            self.seq += 1
            free = self.lot.capacity.general + 5 if bad else rng.randint(0, self.lot.capacity.general)
            await self._unary("parking.PushOccupancy", parking.PushOccupancy(ppb.OccupancyReport(
                lot_id=self.lot.id, sequence=self.seq, observed_at=_now(),
                counts=[ppb.ClassCount(space_class=ppb.SPACE_CLASS_GENERAL, free=free)]),
                metadata=_md(k["operator:BSCT"]), timeout=5))
        elif choice == 3:
            await self._unary("parking.RecordPassage", parking.RecordPassage(ppb.RecordPassageRequest(
                lot_id=self.lot.id, passage_id=f"soak-{rng.getrandbits(64):016x}",
                direction=ppb.PASSAGE_DIRECTION_ENTRY if rng.random() < 0.5 else ppb.PASSAGE_DIRECTION_EXIT,
                plate="NOT A PLATE!" if bad else f"沪A{rng.randint(10000, 99999)}", plate_colour=ppb.PLATE_COLOUR_BLUE,
                lane="E1", passed_at=_now()), metadata=_md(k["operator:BSCT"]), timeout=5))
        elif choice == 4:
            await self._unary("idps.ReportEvent", idps.ReportEvent(ipb.ReportEventRequest(
                idempotency_key=f"soak-{rng.getrandbits(64):016x}", source_id="soak-desk",
                source_kind=ipb.SOURCE_KIND_POLICE_OFFICER, type=ipb.EVENT_TYPE_STOPPED_VEHICLE, position=here,
                confidence=2.0 if bad else 0.7, observed_at=_now()), metadata=_md(k["police"]), timeout=5))
        elif choice == 5:
            await self._unary("idps.ListIncidents", idps.ListIncidents(ipb.ListIncidentsRequest(),
                                                                        metadata=_md(k["police"]), timeout=5))
        elif choice == 6:
            await self._unary("municipal.GetStatus", municipal.GetStatus(mpb.GetStatusRequest(),
                                                                         metadata=_md(k["admin"]), timeout=5))
        else:
            frame = rpb.Frame(frame_id=rng.getrandbits(31), captured_at=_now(),
                              encoded=b"not an image" if bad else rng.choice(self.plates))
            if rng.random() < 0.5:
                await self._unary("roadside.Detect", roadside.Detect(frame, metadata=_md(k["admin"]), timeout=10))
            else:
                await self._unary("roadside.ReadPlate", roadside.ReadPlate(frame, metadata=_md(k["admin"]),
                                                                           timeout=10))

    async def walk_away(self, walker: Walker) -> None:
        names = sorted(walker.calls())
        await walker.one(self.rng.choice(names), self.rng.choice(MOMENTS))

    async def charge_point(self, cp: ChargePointAccess) -> None:
        try:
            answered = await session(cp, self.rng, heartbeats=self.rng.randint(1, 3), drop=self.rng.random() < 0.7)
            self.results.ocpp[f"ocpp{cp.version} sessions"] += 1
            self.results.ocpp[f"ocpp{cp.version} calls answered"] += answered
        except Exception as exc:  # a refused connection or a call without answer
            self.results.ocpp[f"ocpp{cp.version} failed sessions"] += 1
            self.results.errors.append(f"ocpp {cp.version}: {exc!r}"[:300])
        await asyncio.sleep(self.rng.uniform(0.2, 1.5))

    async def close(self) -> None:
        for ch in self.channels.values():
            await ch.close(None)


def _plate_frames(rng: random.Random, n: int = 12) -> list[bytes]:
    from roadside_sim.plates import plate_scene, random_plate, render_plate

    frames = []
    for i in range(n):
        style = ("blue", "green", "yellow")[i % 3]
        scene, _ = plate_scene(render_plate(random_plate(rng, style), style), rng)
        ok, jpeg = cv2.imencode(".jpg", scene, [cv2.IMWRITE_JPEG_QUALITY, 85])
        if ok:
            frames.append(bytes(jpeg.tobytes()))
    return frames


async def _loop(until: float, step: Callable[[], Awaitable[None]], pause_s: float = 0.0) -> None:
    while time.monotonic() < until:
        await step()
        if pause_s:
            await asyncio.sleep(pause_s)


async def soak(minutes: float, run: dict[str, Any], seed: int, path: Path) -> dict[str, Any]:
    s = Soak(run, random.Random(seed))
    walker = await s.prepare()
    processes_before = run["processes"]
    rss_before = {name: rss_kb(p["pid"]) for name, p in processes_before.items()}
    started = time.monotonic()
    until = started + minutes * 60
    try:
        jobs = [_loop(until, s.infrastructure, 0.05)]
        jobs += [_loop(until, s.unary) for _ in range(4)]
        jobs += [_loop(until, lambda: s.walk_away(walker)) for _ in range(4)]
        jobs += [_loop(until, lambda cp=cp: s.charge_point(cp)) for cp in s.chargers]  # type: ignore[misc]
        progress = asyncio.create_task(_progress(started, until, s))
        await asyncio.gather(*jobs)
        progress.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await progress
    finally:
        await walker.close()
        await s.close()
    s.results.errors += [f"walk-away {e}" for e in walker.tally.unexpected]
    after = read_live(path) or {}
    processes_after = after.get("processes", {})
    report: dict[str, Any] = {"minutes": minutes, "processes": {}, "codes": {}, "ocpp": dict(s.results.ocpp),
                              "errors": s.results.errors[:50], "walkaway": dict(walker.tally.codes)}
    for name, before in processes_before.items():
        now = processes_after.get(name, {})
        rss_end = rss_kb(now.get("pid"))
        start = rss_before.get(name)
        report["processes"][name] = {
            "restarts": now.get("restarts", 0) - before["restarts"],
            "crashes": now.get("crashes", 0) - before["crashes"],
            "rss_start_mb": round(start / 1024, 1) if start else None,
            "rss_end_mb": round(rss_end / 1024, 1) if rss_end else None,
            "rss_growth_mb": round((rss_end - start) / 1024, 1) if start and rss_end else None}
    report["codes"] = {kind: dict(c) for kind, c in sorted(s.results.codes.items())}
    return report


async def _progress(started: float, until: float, s: Soak) -> None:
    while True:
        await asyncio.sleep(60)
        calls = sum(sum(c.values()) for c in s.results.codes.values()) + s.results.ocpp["ocpp1.6 sessions"] + \
            s.results.ocpp["ocpp2.0.1 sessions"]
        print(f"  {int(time.monotonic() - started) // 60} min: {calls} calls, {len(s.results.errors)} errors",
              flush=True)


def print_report(r: dict[str, Any]) -> None:
    print(f"\nsoak of {r['minutes']} min")
    print(f"{'process':<18}{'restarts':>9}{'crashes':>9}{'RSS start MB':>14}{'RSS end MB':>12}{'growth MB':>11}")
    for name, p in r["processes"].items():
        print(f"{name:<18}{p['restarts']:>9}{p['crashes']:>9}{p['rss_start_mb'] or '-':>14}{p['rss_end_mb'] or '-':>12}"
              f"{p['rss_growth_mb'] if p['rss_growth_mb'] is not None else '-':>11}")
    print("\nstatus codes by call")
    for kind, codes in r["codes"].items():
        print(f"  {kind:<28} " + ", ".join(f"{c} {n}" for c, n in sorted(codes.items())))
    print(f"  {'walk-away streams':<28} " + ", ".join(f"{c} {n}" for c, n in sorted(r["walkaway"].items())))
    print("  " + ", ".join(f"{k}: {v}" for k, v in sorted(r["ocpp"].items())))
    bad = {k: {c: n for c, n in codes.items() if c not in FINE} for k, codes in r["codes"].items()}
    bad = {k: v for k, v in bad.items() if v}
    print(f"\nerrors (codes other than {', '.join(sorted(FINE))}): {bad or 'none'}")
    for e in r["errors"][:10]:
        print(f"  {e}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--json", type=Path, help="also write the report here")
    p.add_argument("--run-file", type=Path, default=run_file(), help="the running suite's run file")
    p.add_argument("--seed", type=int, default=20261206)
    ns = p.parse_args()
    run = read_live(ns.run_file)
    if run is None:
        raise SystemExit(f"no running `v2x run` found ({ns.run_file}): start the suite with `make run` first")
    report = asyncio.run(soak(ns.minutes, run, ns.seed, ns.run_file))
    print_report(report)
    if ns.json:
        ns.json.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    failed = any(p["restarts"] or p["crashes"] for p in report["processes"].values())
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()

