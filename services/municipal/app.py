"""Assembles the municipal adapter: one delivery lane per destination, the admin service, and who may call
what (administrators only)."""

from __future__ import annotations

import gc
import logging

from v2x.municipal.v1 import municipal_pb2, municipal_pb2_grpc

from services.common.principal import Role
from services.common.runtime import Resources, ServiceParts
from services.common.server import ServiceDefinition
from services.municipal.destinations import Adapter
from services.municipal.servicer import MunicipalAdminServicer
from services.municipal.settings import MunicipalSettings
from services.municipal.store import MunicipalStore

log = logging.getLogger("v2x.municipal")
ADMIN = frozenset({Role.ADMIN})

POLICY = {
    "GetStatus": frozenset({Role.ADMIN, Role.POLICE}),  # the police console shows the delivery lag
    "ListDeadLetters": ADMIN,
    "RetryDeadLetters": ADMIN,
    "Replay": ADMIN,
    "Pause": ADMIN,
    "Resume": ADMIN,
    "Reconcile": ADMIN,
}


# CPython collects its youngest generation after every 700 net new container objects. A lane holds a few chunks of
# thousands of records (each a few dicts) for tens of milliseconds, so at that pace they are walked again and again
# and promoted, and every ~10,000 records a full collection walks the whole heap (~30 ms here): a third to half of
# the adapter's CPU went to the collector. With a higher threshold the young generation is collected a few times per
# chunk, and what exists at start-up (modules, classes, protos) is frozen out of the walks (`v2x serve` freezes again
# once the server runs).
GC_THRESHOLD_0 = 20_000


def tune_gc() -> None:
    threshold = gc.get_threshold()
    if threshold[0] < GC_THRESHOLD_0:
        gc.set_threshold(GC_THRESHOLD_0, *threshold[1:])
    gc.freeze()


def build(resources: Resources) -> ServiceParts:
    return assemble(resources, MunicipalSettings.from_env(resources.settings.env))


def assemble(resources: Resources, municipal: MunicipalSettings) -> ServiceParts:
    tune_gc()
    adapter = Adapter(MunicipalStore(resources.engine), municipal)
    if not adapter.lanes:
        log.warning("no municipal destinations configured (V2X_MUNICIPAL_DESTINATIONS): nothing is delivered")
    servicer = MunicipalAdminServicer(adapter)
    definition = ServiceDefinition(
        descriptor=municipal_pb2.DESCRIPTOR.services_by_name["MunicipalAdminService"],
        register=lambda server: municipal_pb2_grpc.add_MunicipalAdminServiceServicer_to_server(servicer, server),
        policy=POLICY,
    )
    background = [lane.run for lane in adapter.lanes.values()] + [adapter.reconcile_daily, adapter.publish_lag,
                                                                   adapter.prune_outbox]
    return ServiceParts([definition], background, on_stop=[adapter.close])
