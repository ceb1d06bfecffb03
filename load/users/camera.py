"""A roadside camera: one StreamFrames call sending the simulator's pre-rendered frames at the plan's frame rate, as a
camera agent does, and the latency of each frame from its send to its result.

Like a camera agent it never queues: when the stream has not taken the previous frames (two waiting) the oldest is
dropped. Every frame that gets no result is a "drop" event: dropped here, dropped unread by the service (its
cumulative `dropped_frames`), or answered DEADLINE_EXCEEDED (late). Any other error on a frame is a failure.
"""

from __future__ import annotations

import itertools
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

import gevent
import grpc
from gevent.queue import Empty, Queue
from locust import User, task
from v2x.roadside.v1 import roadside_pb2 as rpb
from v2x.roadside.v1.roadside_pb2_grpc import RoadsideServiceStub

from load.users.common import DROP, channel, code_of, fire, md, now_ts, plan, running, setup_call, worker_index

FRAME = "roadside.StreamFrames frame"
DEADLINE_EXCEEDED = 4  # google.rpc.Code
_numbers = itertools.count()


@dataclass(frozen=True)
class Clip:
    template: bytes  # a serialized rpb.Camera
    frames: tuple[bytes, ...]  # JPEG, in order


@cache
def clips(path: str) -> tuple[Clip, ...]:
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        cams = sorted({int(n.split("/")[1].split(".")[0]) for n in names if n.startswith("cameras/")})
        return tuple(
            Clip(
                z.read(f"cameras/{c}.pb"),
                tuple(z.read(n) for n in sorted(x for x in names if x.startswith(f"frames/{c}/"))),
            )
            for c in cams
        )


class Camera(User):
    abstract = False

    def on_start(self) -> None:
        p = plan()
        n = next(_numbers)
        self.clip = clips(p.frames)[n % len(clips(p.frames))]
        self.camera_id = f"{p.tag.lower()}-cam-w{worker_index(self.environment)}-{n:03d}"
        self.stub = RoadsideServiceStub(channel(p.targets["roadside"]))
        camera = rpb.Camera.FromString(self.clip.template)
        camera.id = self.camera_id
        camera.name = f"load test camera {n}"
        setup_call(
            self,
            "roadside.ConfigureCamera",
            self.stub.ConfigureCamera,
            rpb.ConfigureCameraRequest(camera=camera),
            p.keys["admin"],
        )
        self.frame_id = int(time.time() * 1000)  # increasing across this camera's streams and runs

    @task
    def stream(self) -> None:
        """One StreamFrames call for as long as the run lasts; after an error the camera reconnects."""
        p = plan()
        queue: Queue[rpb.Frame | None] = Queue()
        sent: dict[int, float] = {}
        env = self.environment

        def produce() -> None:
            period = 1.0 / p.fps
            next_at = time.monotonic()
            for jpeg in itertools.cycle(self.clip.frames):
                self.frame_id += 1
                frame = rpb.Frame(camera_id=self.camera_id, frame_id=self.frame_id, encoded=jpeg, captured_at=now_ts())
                while queue.qsize() >= 2:  # the stream has not taken the last two: drop the oldest, as a camera does
                    try:
                        queue.get_nowait()
                    except Empty:
                        break
                    fire(env, DROP, "frame dropped by the camera", 0)
                queue.put(frame)
                next_at += period
                gevent.sleep(max(0.0, next_at - time.monotonic()))

        def requests() -> Iterator[rpb.Frame]:
            while (frame := queue.get()) is not None:
                sent[frame.frame_id] = time.perf_counter()
                yield frame

        producer = gevent.spawn(produce)
        server_dropped = 0
        call = self.stub.StreamFrames(requests(), metadata=md(p.keys["admin"]))
        try:
            for result in call:
                at = sent.pop(result.frame_id, None)
                # Frames before this one that got no result were dropped unread by the service (counted below).
                for fid in [f for f in sent if f < result.frame_id]:
                    del sent[fid]
                if result.dropped_frames > server_dropped:
                    for _ in range(result.dropped_frames - server_dropped):
                        fire(env, DROP, "frame dropped by the service", 0)
                    server_dropped = result.dropped_frames
                ms = (time.perf_counter() - at) * 1000 if at is not None else 0.0
                if result.HasField("error"):
                    if result.error.code == DEADLINE_EXCEEDED:
                        fire(env, DROP, "frame late (DEADLINE_EXCEEDED)", ms)
                    else:
                        fire(
                            env,
                            "grpc",
                            FRAME,
                            ms,
                            0,
                            RuntimeError(f"frame error {result.error.code}: {result.error.message}"),
                        )
                    continue
                fire(env, "grpc", FRAME, ms, result.ByteSize())
        except grpc.RpcError as exc:
            if running(env) and code_of(exc) != "CANCELLED":
                fire(env, "grpc", "roadside.StreamFrames stream", 0, 0, exc)
                gevent.sleep(1.0)
        finally:
            producer.kill()
            call.cancel()
