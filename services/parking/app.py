"""Assembles the parking service: store, feed, servicer, and who may call what."""

from __future__ import annotations

from v2x.parking.v1 import parking_pb2

from services.common.principal import Role
from services.common.runtime import Resources, ServiceParts
from services.common.server import ServiceDefinition, registration
from services.parking.feed import AvailabilityFeed
from services.parking.index import LotIndex
from services.parking.servicer import ParkingServicer
from services.parking.settings import ParkingSettings
from services.parking.store import ParkingStore

ALL = frozenset(Role)
WRITERS = frozenset({Role.ADMIN, Role.OPERATOR})

SERVICE = parking_pb2.DESCRIPTOR.services_by_name["ParkingService"]
POLICY = {
    "RegisterLot": frozenset({Role.ADMIN}),
    "UpdateLot": WRITERS,
    "GetLot": ALL,
    "ListLots": frozenset({Role.ADMIN, Role.OPERATOR, Role.POLICE, Role.PLATFORM}),
    "UpsertSpots": WRITERS,
    "ListSpots": ALL,
    "PushOccupancy": frozenset({Role.OPERATOR}),
    "StreamOccupancy": frozenset({Role.OPERATOR}),
    "RecordPassage": frozenset({Role.OPERATOR}),
    "AmendPassage": frozenset({Role.OPERATOR}),
    "ListPassages": frozenset({Role.ADMIN, Role.OPERATOR, Role.POLICE}),
    "FindAvailable": ALL,
    "WatchAvailability": ALL,
}


def build(resources: Resources) -> ServiceParts:
    return assemble(resources, ParkingSettings.from_env(resources.settings.env))


def assemble(resources: Resources, parking: ParkingSettings) -> ServiceParts:
    store = ParkingStore(resources.engine, resources.reads)
    feed = AvailabilityFeed(resources.redis, store, resources.settings.redis_stream_maxlen, LotIndex(store),
                            shards=resources.settings.feed_shards)
    servicer = ParkingServicer(store, feed, resources.settings, parking)
    definition = ServiceDefinition(
        descriptor=SERVICE,
        # FindAvailable answers from the nearby index with the answer already encoded.
        register=registration(servicer, SERVICE, parking_pb2, {"FindAvailable"}),
        policy=POLICY,
    )
    return ServiceParts([definition], background=[feed.follow_index], on_start=[feed.load_index])
