"""The platform's administrator: the municipal adapter's GetStatus every few seconds. Its lag (the oldest waiting
record's age, the largest over the destinations) is fired as a "lag" event whose time is the lag, so that the
report shows it next to the load that caused it."""

from __future__ import annotations

from locust import User, constant, task
from v2x.municipal.v1 import municipal_pb2 as mpb
from v2x.municipal.v1.municipal_pb2_grpc import MunicipalAdminServiceStub

from load.users.common import LAG, channel, fire, plan, unary

LAG_NAME = "municipal lag (ms = seconds behind x 1000)"
LAG_RECORDS = "municipal lag records (ms = records waiting)"


class PlatformAdmin(User):
    abstract = False
    wait_time = constant(2)

    def on_start(self) -> None:
        p = plan()
        self.stub = MunicipalAdminServiceStub(channel(p.targets["municipal"]))

    @task
    def status(self) -> None:
        reply = unary(self, "municipal.GetStatus", self.stub.GetStatus, mpb.GetStatusRequest(), plan().keys["admin"])
        if reply is not None and reply.destinations:
            fire(self.environment, LAG, LAG_NAME, max(d.lag_s for d in reply.destinations) * 1000)
            fire(self.environment, LAG, LAG_RECORDS, float(max(d.lag_records for d in reply.destinations)))
