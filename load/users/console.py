"""A police console: one long IDPS Subscribe over the district that resumes from its last cursor after any error, and
an officer at the console reporting incidents now and then (ReportEvent, as a 110 desk does).

Each streamed message is a "grpc" event (its time: the service's `sent_at` to its arrival). Each live NEW, and each
UPDATE that brings a new source, is also an "e2e" event: from the newest source's observation (a camera frame's
capture time, or a report's observed_at) to the console. Messages of a snapshot are not: they are history.
"""

from __future__ import annotations

import random
import time

import gevent
import grpc
from locust import User, between, task
from v2x.common.v1 import common_pb2
from v2x.idps.v1 import idps_pb2 as ipb
from v2x.idps.v1.idps_pb2_grpc import IdpsServiceStub

from load.users.common import E2E, channel, code_of, fire, md, near, now_ts, plan, running, unary

K = ipb.IncidentMessage
CAMERA_ONLY = frozenset({ipb.SOURCE_KIND_ROADSIDE_DETECTION})
REPORT_TYPES = (
    ipb.EVENT_TYPE_STOPPED_VEHICLE,
    ipb.EVENT_TYPE_ACCIDENT,
    ipb.EVENT_TYPE_ILLEGAL_PARKING,
    ipb.EVENT_TYPE_ROADWORKS,
)


class PoliceConsole(User):
    abstract = False
    wait_time = between(8, 15)  # one officer's reports

    def on_start(self) -> None:
        p = plan()
        self.rng = random.Random()
        self.stub = IdpsServiceStub(channel(p.targets["idps"]))
        self.cursor = ""
        self.sources: dict[str, int] = {}  # incident id -> source count seen
        self.watcher = gevent.spawn(self._watch)

    def on_stop(self) -> None:
        self.watcher.kill(block=False)

    @task
    def report(self) -> None:
        p = plan()
        n = self.rng.getrandbits(64)
        unary(
            self,
            "idps.ReportEvent",
            self.stub.ReportEvent,
            ipb.ReportEventRequest(
                idempotency_key=f"load-{n:016x}",
                source_id=f"load-desk-{n % 8}",
                source_kind=ipb.SOURCE_KIND_EMERGENCY_CALL,
                type=self.rng.choice(REPORT_TYPES),
                position=near(self.rng, p),
                confidence=0.7,
                observed_at=now_ts(),
                description="load test: caller reports an incident",
            ),
            p.keys["police"],
        )

    def _watch(self) -> None:
        p = plan()
        env = self.environment
        area = common_pb2.Area(
            circle=common_pb2.Circle(
                center=common_pb2.LatLon(lat=p.center[0], lon=p.center[1]), radius_m=p.radius_m * 3
            )
        )
        delay = 0.5
        while running(env):
            call = self.stub.Subscribe(
                ipb.SubscribeRequest(filter=ipb.IncidentFilter(area=area), cursor=self.cursor, heartbeat_interval_s=5),
                metadata=md(p.keys["police"]),
            )
            live = bool(self.cursor)  # resuming: no snapshot comes first
            try:
                for response in call:
                    arrived = time.time()
                    for m in response.messages:
                        fire(
                            env,
                            "grpc",
                            "idps.Subscribe message",
                            max(0.0, (arrived - m.sent_at.ToMicroseconds() / 1e6) * 1000),
                            m.ByteSize(),
                        )
                        if m.cursor:
                            self.cursor = m.cursor
                        if m.kind == K.KIND_RESYNC:
                            live = False
                            self.sources.clear()
                        elif m.kind == K.KIND_SNAPSHOT_END:
                            live = True
                        elif m.kind in (K.KIND_NEW, K.KIND_UPDATE):
                            self._seen(m.incident, live, arrived)
                        elif m.kind == K.KIND_END:
                            self.sources.pop(m.incident.id, None)
                    delay = 0.5
                if running(env):
                    raise RuntimeError("the Subscribe stream ended")
            except (grpc.RpcError, RuntimeError) as exc:
                if not running(env):
                    return
                fire(env, "grpc", "idps.Subscribe stream", 0, 0, exc if code_of(exc) != "CANCELLED" else None)
                gevent.sleep(delay)  # then resume from the cursor
                delay = min(delay * 2, 5.0)
            finally:
                call.cancel()

    def _seen(self, incident: ipb.Incident, live: bool, arrived: float) -> None:
        before = self.sources.get(incident.id)
        self.sources[incident.id] = incident.source_count
        if not live or (before is not None and incident.source_count <= before):
            return
        occurred = incident.last_observed_at.ToMicroseconds() / 1e6
        kinds = frozenset(incident.source_kinds)
        name = "console e2e: frame capture -> console" if kinds <= CAMERA_ONLY else "console e2e: report -> console"
        fire(self.environment, E2E, name, max(0.0, (arrived - occurred) * 1000))
