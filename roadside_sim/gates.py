"""Gate cameras of a simulated garage: vehicles entering and leaving with rendered plates (blue, yellow and green
8-character new-energy plates), read by the roadside service (ReadPlate) and recorded in parking (RecordPassage) by
the garage's operator, as a barrier controller does. The truth is the plate that was drawn; what was read and
recorded is kept for scoring."""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import cv2
from grpc import aio
from v2x.common.v1 import common_pb2 as cpb
from v2x.parking.v1 import parking_pb2 as ppb
from v2x.parking.v1.parking_pb2_grpc import ParkingServiceStub
from v2x.roadside.v1 import roadside_pb2 as rpb
from v2x.roadside.v1.roadside_pb2_grpc import RoadsideServiceStub

from roadside_sim.plates import plate_scene, random_plate, render_plate

if TYPE_CHECKING:
    from v2x.parking.v1.parking_pb2_grpc import ParkingServiceAsyncStub as ParkingStub
    from v2x.roadside.v1.roadside_pb2_grpc import RoadsideServiceAsyncStub as RoadsideStub
else:
    ParkingStub, RoadsideStub = ParkingServiceStub, RoadsideServiceStub

STYLES = (("blue", 0.6), ("green", 0.3), ("yellow", 0.1))  # new-energy cars are a third of Shanghai's new cars


@dataclass
class Passage:
    passage_id: str
    direction: int
    truth: str
    truth_colour: int
    read: str = ""
    read_colour: int = 0
    confidence: float = 0.0
    recorded: bool = False
    error: str = ""


@dataclass
class GateLog:
    lot_id: str
    passages: list[Passage] = field(default_factory=list)

    def scores(self) -> dict[str, object]:
        n = len(self.passages)
        right = sum(p.read == p.truth for p in self.passages)
        green = [p for p in self.passages if len(p.truth) == 8]
        return {"lot": self.lot_id, "passages": n, "recorded": sum(p.recorded for p in self.passages),
                "plates_read_exactly": right / n if n else None,
                "green_plates": len(green), "green_read_exactly": (sum(p.read == p.truth for p in green) / len(green)
                                                                   if green else None),
                "colour_right": sum(p.read_colour == p.truth_colour for p in self.passages) / n if n else None,
                "errors": sorted({p.error for p in self.passages if p.error})}


def _md(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


async def register_garage(parking: ParkingStub, admin_key: str, lot_id: str, operator: str,
                          at: tuple[float, float]) -> None:
    lot = ppb.Lot(id=lot_id, operator_id=operator, name="Simulated garage (gate cameras)", region_code="310113",
                  kind=ppb.LOT_KIND_GARAGE, location=cpb.LatLon(lat=at[0], lon=at[1]),
                  capacity=ppb.Capacity(general=200), detection_type=ppb.DETECTION_TYPE_BALANCING,
                  occupancy_ttl_s=3600, opening_hours=ppb.OpeningHours(always_open=True))
    try:
        await parking.RegisterLot(ppb.RegisterLotRequest(lot=lot), metadata=_md(admin_key), timeout=60,
                                  wait_for_ready=True)
    except aio.AioRpcError as exc:
        if exc.code().name != "ALREADY_EXISTS":
            raise


async def run_gate(roadside: RoadsideStub, parking: ParkingStub, admin_key: str, operator_key: str, log: GateLog,
                   stop: asyncio.Event, *, period_s: float = 12.0, seed: int = 13) -> None:
    """A vehicle at the gate every `period_s` (entering, or one that entered leaving), until `stop`."""
    rng = random.Random(seed)
    inside: list[tuple[str, str]] = []
    n = 0
    while not stop.is_set():
        n += 1
        if inside and rng.random() < 0.45:
            text, style = inside.pop(rng.randrange(len(inside)))
            direction = ppb.PASSAGE_DIRECTION_EXIT
        else:
            style = rng.choices([s for s, _ in STYLES], [w for _, w in STYLES])[0]
            text = random_plate(rng, style)
            direction = ppb.PASSAGE_DIRECTION_ENTRY
            inside.append((text, style))
        plate = render_plate(text, style)
        scene, _ = await asyncio.to_thread(plate_scene, plate, rng)
        _, buf = cv2.imencode(".jpg", scene, [cv2.IMWRITE_JPEG_QUALITY, 90])
        p = Passage(f"{log.lot_id}-{datetime.now(UTC):%Y%m%d%H%M%S}-{n}", direction, text, plate.colour)
        log.passages.append(p)
        try:
            reply = await roadside.ReadPlate(rpb.Frame(camera_id=f"{log.lot_id}-gate", frame_id=n,
                                                       encoded=buf.tobytes()), metadata=_md(admin_key), timeout=30)
            if reply.plates:
                best = reply.plates[0]
                p.read, p.read_colour, p.confidence = best.text, int(best.colour), best.confidence
            if p.read:
                req = ppb.RecordPassageRequest(lot_id=log.lot_id, passage_id=p.passage_id, direction=direction,
                                               plate=p.read,
                                               plate_colour=ppb.PlateColour.ValueType(p.read_colour or 1),
                                               lane="gate-1")
                req.passed_at.GetCurrentTime()
                await parking.RecordPassage(req, metadata=_md(operator_key), timeout=10)
                p.recorded = True
        except aio.AioRpcError as exc:
            p.error = f"{exc.code().name}: {exc.details()}"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), period_s)
