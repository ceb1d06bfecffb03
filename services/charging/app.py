"""Assembles the charging service: store, feed, status writer, OCPP gateway, periodic checks, servicer,
and who may call what."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from v2x.charging.v1 import charging_pb2

from services.charging.bay_checks import BayChecker
from services.charging.expiry import ExpirySweeper
from services.charging.feed import ChargingFeed
from services.charging.gateway import OcppGateway
from services.charging.group_commit import StatusWriter
from services.charging.index import ChargerIndex
from services.charging.servicer import ChargingServicer
from services.charging.settings import ChargingSettings
from services.charging.store import ChargingStore
from services.common.principal import Role
from services.common.runtime import Resources, ServiceParts
from services.common.server import ServiceDefinition, registration

ALL = frozenset(Role)
READERS = frozenset({Role.ADMIN, Role.OPERATOR, Role.POLICE, Role.PLATFORM})

SERVICE = charging_pb2.DESCRIPTOR.services_by_name["ChargingService"]
POLICY = {
    "RegisterStation": frozenset({Role.ADMIN}),
    "UpdateStation": frozenset({Role.ADMIN, Role.OPERATOR}),
    "GetStation": ALL,
    "ListStations": READERS,
    "ReportStatus": frozenset({Role.OPERATOR}),
    "StreamStatus": frozenset({Role.OPERATOR}),
    "FindChargers": ALL,
    "WatchStation": ALL,
    "ListBayFlags": READERS,
    "RegisterChargePoint": frozenset({Role.ADMIN}),
}

Clock = Callable[[], datetime]

log = logging.getLogger("v2x.charging")


def wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class ChargingApp:
    """The service's parts, kept reachable (tests drive the bay check and read the gateway's port)."""

    store: ChargingStore
    feed: ChargingFeed
    writer: StatusWriter
    gateway: OcppGateway
    bays: BayChecker
    sweeper: ExpirySweeper
    parts: ServiceParts


def assemble(resources: Resources, charging: ChargingSettings, clock: Clock = wall_clock) -> ChargingApp:
    s = resources.settings
    store = ChargingStore(resources.engine, reads=resources.reads)
    feed = ChargingFeed(resources.redis, store, s.redis_stream_maxlen, clock, ChargerIndex(store), s.feed_shards)
    writer = StatusWriter(store, feed, clock)
    gateway = OcppGateway(store, writer, clock, host=s.bind_host, port=charging.ocpp_port,
                          heartbeat_s=charging.ocpp_heartbeat_s, feed=feed)
    bays = BayChecker(store, clock, idle_grace_s=charging.bay_idle_grace_s, fault_grace_s=charging.bay_fault_grace_s,
                      interval_s=charging.bay_check_interval_s)
    sweeper = ExpirySweeper(store, clock)
    servicer = ChargingServicer(store, writer, feed, gateway, s, charging, clock)
    definition = ServiceDefinition(
        descriptor=SERVICE,
        # FindChargers answers from the nearby index with the answer already encoded.
        register=registration(servicer, SERVICE, charging_pb2, {"FindChargers"}),
        policy=POLICY,
    )
    parts = ServiceParts([definition], background=[writer.run, gateway.run, bays.run, sweeper.run, feed.follow_index],
                         on_stop=[store.close], on_start=[feed.load_index, announce_pending(store)],
                         on_drain=[gateway.drain])
    return ChargingApp(store, feed, writer, gateway, bays, sweeper, parts)


def announce_pending(store: ChargingStore) -> Callable[[], Awaitable[None]]:
    """At start: the static record of stations registered before the record existed (see migration 0302)."""
    async def announce() -> None:
        if n := await store.announce_pending():
            log.info("wrote the static record of %d station(s) registered before it existed", n)
    return announce


def build(resources: Resources) -> ServiceParts:
    return assemble(resources, ChargingSettings.from_env(resources.settings.env)).parts
