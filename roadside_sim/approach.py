"""Demo: the simple key-coloured approach streamed to a running roadside service, events printed as they come.

    python -m roadside_sim approach --target 127.0.0.1:50051 --key <admin key> [--camera-id sim-1] [--fps 5]

Configures the camera (the simulator's lanes, zones, counting line and homography; with --lot-id its
two kerb spots report to that parking lot), then plays a two-minute scenario in real time: traffic both
ways, a car stopping 40 s in the box junction (903), one parking at the bus stop (1002), a wrong-way
driver (904), a speeder (901), a crawler (902), a pedestrian crossing (405) and a car taking spot S1.
With the ONNX detector the key-coloured boxes are not vehicles to it; run the service with the
demo key-colour detector for this (``V2X_ROADSIDE_DETECTOR=sim``, services/roadside/keycolour.py).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import cv2
from grpc import aio
from v2x.roadside.v1 import roadside_pb2 as pb
from v2x.roadside.v1.roadside_pb2_grpc import RoadsideServiceStub

from roadside_sim.scene import NB_CENTRE_E, SB_CENTRE_E, Scene, SimVehicle, drive
from roadside_sim.truth import VehicleClass

if TYPE_CHECKING:
    from v2x.roadside.v1.roadside_pb2_grpc import RoadsideServiceAsyncStub as Stub
else:
    Stub = RoadsideServiceStub


def scenario() -> list[SimVehicle]:
    # Simulated vehicles pass through each other: the northbound flow waits until the lane's events are
    # over, so that the stopped car is not hidden by cars driving through it.
    vehicles = [drive(100 + i, 110.0 + 3.0 * i, 12, 66, 40) for i in range(10)]
    vehicles += [drive(200 + i, 1.5 + 4.0 * i, 66, 12, 35, east=SB_CENTRE_E) for i in range(35)]
    vehicles += [
        drive(1, 5, 12, 50, 36).hold(40).then(3, NB_CENTRE_E, 66),  # 903 in the box junction
        drive(2, 20, 12, 30, 20, east=-4.75).hold(30).then(4, -4.75, 66),  # 1002 at the bus stop
        SimVehicle(3, VehicleClass.CAR, [(60.0, NB_CENTRE_E, 66.0), (66.0, NB_CENTRE_E, 12.0)]),  # 904
        drive(4, 75, 12, 66, 85),  # 901
        drive(5, 85, 12, 50, 7),  # 902
        SimVehicle(6, VehicleClass.PERSON, [(100.0, -2.0, 25.0), (106.0, 2.0, 25.0)]),  # 405
        SimVehicle(7, VehicleClass.CAR, [(30.0, NB_CENTRE_E, 12.0), (32.0, 4.75, 17.0)]).hold(60),  # spot S1
    ]
    return vehicles


async def run(args: argparse.Namespace) -> None:
    scene = Scene()
    md = (("authorization", f"Bearer {args.key}"),)
    async with aio.insecure_channel(args.target) as channel:
        stub: Stub = RoadsideServiceStub(channel)
        camera = await stub.ConfigureCamera(
            pb.ConfigureCameraRequest(camera=scene.camera(args.camera_id, lot_id=args.lot_id)), metadata=md)
        print(f"camera {camera.id} configured (version {camera.version})", flush=True)
        vehicles = scenario()
        start_wall = datetime.now(UTC)
        start = time.monotonic()

        async def frames() -> AsyncIterator[pb.Frame]:
            i = 0
            while (t := i / args.fps) <= args.seconds:
                await asyncio.sleep(max(0.0, start + t - time.monotonic()))
                _, buf = cv2.imencode(".jpg", scene.render(vehicles, t), [cv2.IMWRITE_JPEG_QUALITY, 90])
                frame = pb.Frame(camera_id=args.camera_id, frame_id=i + 1, encoded=buf.tobytes())
                frame.captured_at.FromDatetime(start_wall + timedelta(seconds=t))
                i += 1
                yield frame

        async for result in stub.StreamFrames(frames(), metadata=md):
            for e in result.events:
                print(f"{e.observed_at.ToDatetime():%H:%M:%S} {pb.AnalyticsEventType.Name(e.type)} "
                      f"lane={e.lane_id} zone={e.zone_id} track={e.track_id} conf={e.confidence:.2f} "
                      f"at {e.position.lat:.6f},{e.position.lon:.6f}", flush=True)
            if result.HasField("error"):
                print(f"frame {result.frame_id}: {result.error.message}", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="roadside_sim approach", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="127.0.0.1:50051")
    p.add_argument("--key", required=True, help="an admin API key (configures the camera and streams it)")
    p.add_argument("--camera-id", default="sim-1")
    p.add_argument("--lot-id", default="", help="an on-street SINGLE_SPACE lot with spots S1 and S2")
    p.add_argument("--fps", type=float, default=5.0)
    p.add_argument("--seconds", type=float, default=120.0)
    asyncio.run(run(p.parse_args(argv)))


if __name__ == "__main__":
    main()
