"""The IDPS domain's vocabularies: event types (GB/T 29100 codes and our own, docs/DOMAIN.md), source kinds,
incident statuses, severities, lane states, audit actions and link kinds.

Each enum mirrors the proto enum of the same name (`protos/v2x/idps/v1/idps.proto`): the same numbers, the
names without the proto's prefix, every value but UNSPECIFIED; `tests/house/test_mirrored_enums.py` holds them to
it. The numbers are also what the database stores. Domain code uses these, `convert.py` maps to and from the wire.
"""

from __future__ import annotations

from enum import IntEnum


class EventType(IntEnum):
    FIRE = 202
    FACILITY_DAMAGED = 205
    RAIN = 301
    HAIL = 302
    WIND = 304
    FOG = 305
    SNOW = 308
    HAZE = 311
    SANDSTORM = 399
    THROWN_OBJECT = 401
    PEDESTRIAN_ON_ROAD = 405
    ANIMAL = 406
    SLIPPERY = 408
    ICY = 409
    TRAFFIC_JAM = 707
    OVERSPEED = 901
    SLOW_VEHICLE = 902
    STOPPED_VEHICLE = 903
    WRONG_WAY = 904
    EMERGENCY_VEHICLE = 905
    TRUCK = 906
    ACCIDENT = 1001
    ILLEGAL_PARKING = 1002
    ROADWORKS = 1003
    UNMAPPED = 1999


class SourceKind(IntEnum):
    ROADSIDE_DETECTION = 1
    POLICE_OFFICER = 2
    EMERGENCY_CALL = 3
    EXTERNAL_FEED = 4
    GOVERNMENT = 5
    METEOROLOGICAL = 6
    INTERNET = 7
    UNKNOWN = 8


class IncidentStatus(IntEnum):
    REPORTED = 1
    CONFIRMED = 2
    DISPATCHED = 3
    ON_SCENE = 4
    CLEARED = 5
    CLOSED = 6
    FALSE_ALARM = 7


class Severity(IntEnum):
    MINOR = 1
    NORMAL = 2
    MAJOR = 3


class LaneState(IntEnum):
    FREE = 1
    BLOCKED = 2
    AFFECTED = 3


class AuditAction(IntEnum):
    CREATED = 1
    SOURCE_ADDED = 2
    TRANSITIONED = 3
    UPDATED = 4
    MERGED = 5
    SPLIT = 6
    REACTIVATED = 7
    AUTO_CLOSED = 8


class LinkKind(IntEnum):
    OPENED = 1
    JOINED = 2
    MERGED = 3
    SPLIT = 4
