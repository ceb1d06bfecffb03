"""Assembles the IDPS service: store, change feed, subscriptions, roadside consumer, auto-closer, and
who may call what.

Roles: the police drive the lifecycle and alone see plates and images (GetEvidence, evidence in
GetIncident). Cameras report their own detections; operators and admins may report too. Drivers, operators,
admins and the platform may read incidents (GetIncident, ListIncidents, Subscribe) with evidence redacted;
cameras only report.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from v2x.idps.v1 import idps_pb2

from services.common.background import every
from services.common.principal import Role
from services.common.redis_streams import Feed
from services.common.runtime import Resources, ServiceParts
from services.common.server import ServiceDefinition, registration
from services.idps.feed import FEED, ChangeFeed, Fanout, Subscriptions
from services.idps.roadside import RoadsideConsumer
from services.idps.servicer import SERVICE, IdpsServicer, IncidentService
from services.idps.settings import IdpsSettings
from services.idps.store import IdpsStore

log = logging.getLogger("v2x.idps")

POLICE = frozenset({Role.POLICE})
REPORTERS = frozenset({Role.POLICE, Role.CAMERA, Role.OPERATOR, Role.ADMIN})
READERS = frozenset({Role.POLICE, Role.ADMIN, Role.OPERATOR, Role.DRIVER, Role.PLATFORM})

POLICY = {
    "ReportEvent": REPORTERS,
    "TransitionIncident": POLICE,
    "UpdateIncident": POLICE,
    "MergeIncidents": POLICE,
    "SplitSource": POLICE,
    "GetIncident": READERS,
    "GetEvidence": POLICE,
    "ListIncidents": READERS,
    "Subscribe": READERS,
}
AUTO_CLOSE_EVERY_S = 5.0


async def auto_close(store: IdpsStore, incidents: IncidentService, every_s: float = AUTO_CLOSE_EVERY_S) -> None:
    """Closes cleared incidents once their reopen window has passed."""

    async def close_expired() -> None:
        while True:
            changes = await store.close_expired(datetime.now(UTC))
            await incidents.publish(changes)
            if len(changes) < 500:
                return

    await every(every_s, close_expired, "auto-close", log)


def build(resources: Resources) -> ServiceParts:
    return assemble(resources, IdpsSettings.from_env(resources.settings.env))


def assemble(resources: Resources, idps: IdpsSettings) -> ServiceParts:
    settings = resources.settings
    store = IdpsStore(resources.engine, idps, resources.reads)
    shards = resources.settings.feed_shards
    incidents = IncidentService(store, ChangeFeed(resources.redis, idps.stream_maxlen, shards))
    fanout = Fanout(resources.redis, Feed(FEED.service, FEED.name, shards))
    subscriptions = Subscriptions(resources.redis, store, fanout, idps.subscriber_buffer)
    servicer = IdpsServicer(incidents, subscriptions, settings)
    consumer = RoadsideConsumer(resources.redis, incidents, settings.max_future_skew_s)
    # Subscribe sends SubscribeResponse bytes encoded once per change for all subscribers.
    definition = ServiceDefinition(descriptor=SERVICE, policy=POLICY,
                                   register=registration(servicer, SERVICE, idps_pb2, {"Subscribe"}))
    return ServiceParts([definition], background=[consumer.run, lambda: auto_close(store, incidents)],
                        on_stop=[incidents.batcher.stop, fanout.stop])
