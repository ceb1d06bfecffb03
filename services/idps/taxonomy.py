"""The event vocabulary and the mapping tables between vocabularies, all in one place.

Canonical event types are the RSI codes (GB/T 29100 as used by T/CSAE 53 and OpenV2X) plus the
suite's own codes for police categories RSI lacks:

    1001 ACCIDENT          a traffic accident (DENM cause 2)
    1002 ILLEGAL_PARKING   a vehicle standing where it may not (no DENM cause: a violation, not a hazard)
    1003 ROADWORKS         works on the carriageway (DENM cause 3)
    1999 UNMAPPED          an outside code the suite has no type for; the original code is kept

Every mapping has an explicit UNMAPPED bucket: `to_denm` answers `DENM_UNMAPPED` (0) and `from_denm`
answers `EventType.UNMAPPED` for codes without a counterpart. The tables are not inverses of each
other (several types share one DENM cause); tests pin every entry.
"""

from __future__ import annotations

from collections.abc import Mapping

from services.idps.vocab import EventType, SourceKind

# ----- canonical types ---------------------------------------------------------------------------

FIRE: int = EventType.FIRE
FACILITY_DAMAGED: int = EventType.FACILITY_DAMAGED
RAIN: int = EventType.RAIN
HAIL: int = EventType.HAIL
WIND: int = EventType.WIND
FOG: int = EventType.FOG
SNOW: int = EventType.SNOW
HAZE: int = EventType.HAZE
SANDSTORM: int = EventType.SANDSTORM
THROWN_OBJECT: int = EventType.THROWN_OBJECT
PEDESTRIAN_ON_ROAD: int = EventType.PEDESTRIAN_ON_ROAD
ANIMAL: int = EventType.ANIMAL
SLIPPERY: int = EventType.SLIPPERY
ICY: int = EventType.ICY
TRAFFIC_JAM: int = EventType.TRAFFIC_JAM
OVERSPEED: int = EventType.OVERSPEED
SLOW_VEHICLE: int = EventType.SLOW_VEHICLE
STOPPED_VEHICLE: int = EventType.STOPPED_VEHICLE
WRONG_WAY: int = EventType.WRONG_WAY
EMERGENCY_VEHICLE: int = EventType.EMERGENCY_VEHICLE
TRUCK: int = EventType.TRUCK
ACCIDENT: int = EventType.ACCIDENT
ILLEGAL_PARKING: int = EventType.ILLEGAL_PARKING
ROADWORKS: int = EventType.ROADWORKS
UNMAPPED: int = EventType.UNMAPPED

RSI_CODES: frozenset[int] = frozenset({
    FIRE, FACILITY_DAMAGED, RAIN, HAIL, WIND, FOG, SNOW, HAZE, SANDSTORM, THROWN_OBJECT, PEDESTRIAN_ON_ROAD,
    ANIMAL, SLIPPERY, ICY, TRAFFIC_JAM, OVERSPEED, SLOW_VEHICLE, STOPPED_VEHICLE, WRONG_WAY, EMERGENCY_VEHICLE,
    TRUCK,
})
SUITE_CODES: frozenset[int] = frozenset({ACCIDENT, ILLEGAL_PARKING, ROADWORKS, UNMAPPED})
ALL_TYPES: frozenset[int] = RSI_CODES | SUITE_CODES

# ----- ETSI DENM cause codes -----------------------------------------------------------------------

DENM_UNMAPPED = 0
DENM_TRAFFIC_CONDITION = 1
DENM_ACCIDENT = 2
DENM_ROADWORKS = 3
DENM_IMPASSABILITY = 5
DENM_ADHESION = 6
DENM_ROAD_SURFACE = 9
DENM_OBSTACLE = 10
DENM_ANIMAL = 11
DENM_HUMAN_ON_ROAD = 12
DENM_WRONG_WAY = 14
DENM_RESCUE_WORK = 15
DENM_EXTREME_WEATHER = 17
DENM_VISIBILITY = 18
DENM_PRECIPITATION = 19
DENM_SLOW_VEHICLE = 26
DENM_END_OF_QUEUE = 27
DENM_BREAKDOWN = 91
DENM_POST_CRASH = 92
DENM_STATIONARY_VEHICLE = 94
DENM_EMERGENCY_VEHICLE = 95
DENM_COLLISION_RISK = 97
DENM_SIGNAL_VIOLATION = 98
DENM_DANGEROUS_SITUATION = 99

DENM_CAUSES: frozenset[int] = frozenset({
    DENM_TRAFFIC_CONDITION, DENM_ACCIDENT, DENM_ROADWORKS, DENM_IMPASSABILITY, DENM_ADHESION, DENM_ROAD_SURFACE,
    DENM_OBSTACLE, DENM_ANIMAL, DENM_HUMAN_ON_ROAD, DENM_WRONG_WAY, DENM_RESCUE_WORK, DENM_EXTREME_WEATHER,
    DENM_VISIBILITY, DENM_PRECIPITATION, DENM_SLOW_VEHICLE, DENM_END_OF_QUEUE, DENM_BREAKDOWN, DENM_POST_CRASH,
    DENM_STATIONARY_VEHICLE, DENM_EMERGENCY_VEHICLE, DENM_COLLISION_RISK, DENM_SIGNAL_VIOLATION,
    DENM_DANGEROUS_SITUATION,
})

# Canonical type -> DENM cause. Every canonical type has an entry (DENM_UNMAPPED where DENM has none).
TO_DENM: Mapping[int, int] = {
    FIRE: DENM_DANGEROUS_SITUATION,  # DENM has no fire cause; lossy
    FACILITY_DAMAGED: DENM_UNMAPPED,
    RAIN: DENM_PRECIPITATION,
    HAIL: DENM_PRECIPITATION,
    SNOW: DENM_PRECIPITATION,
    WIND: DENM_EXTREME_WEATHER,
    FOG: DENM_VISIBILITY,
    HAZE: DENM_VISIBILITY,
    SANDSTORM: DENM_VISIBILITY,
    THROWN_OBJECT: DENM_OBSTACLE,
    PEDESTRIAN_ON_ROAD: DENM_HUMAN_ON_ROAD,
    ANIMAL: DENM_ANIMAL,
    SLIPPERY: DENM_ADHESION,
    ICY: DENM_ADHESION,
    TRAFFIC_JAM: DENM_TRAFFIC_CONDITION,
    OVERSPEED: DENM_UNMAPPED,  # an enforcement matter, not a DENM hazard
    SLOW_VEHICLE: DENM_SLOW_VEHICLE,
    STOPPED_VEHICLE: DENM_STATIONARY_VEHICLE,
    WRONG_WAY: DENM_WRONG_WAY,
    EMERGENCY_VEHICLE: DENM_EMERGENCY_VEHICLE,
    TRUCK: DENM_UNMAPPED,
    ACCIDENT: DENM_ACCIDENT,
    ILLEGAL_PARKING: DENM_UNMAPPED,  # a violation; announcing it as a stationary vehicle would raise false alarms
    ROADWORKS: DENM_ROADWORKS,
    UNMAPPED: DENM_UNMAPPED,
}

# DENM cause -> canonical type. Every DENM cause of docs/DOMAIN.md has an entry (UNMAPPED where the suite has none).
FROM_DENM: Mapping[int, int] = {
    DENM_TRAFFIC_CONDITION: TRAFFIC_JAM,
    DENM_ACCIDENT: ACCIDENT,
    DENM_ROADWORKS: ROADWORKS,
    DENM_IMPASSABILITY: UNMAPPED,
    DENM_ADHESION: SLIPPERY,
    DENM_ROAD_SURFACE: UNMAPPED,
    DENM_OBSTACLE: THROWN_OBJECT,
    DENM_ANIMAL: ANIMAL,
    DENM_HUMAN_ON_ROAD: PEDESTRIAN_ON_ROAD,
    DENM_WRONG_WAY: WRONG_WAY,
    DENM_RESCUE_WORK: UNMAPPED,
    DENM_EXTREME_WEATHER: WIND,
    DENM_VISIBILITY: FOG,
    DENM_PRECIPITATION: RAIN,
    DENM_SLOW_VEHICLE: SLOW_VEHICLE,
    DENM_END_OF_QUEUE: TRAFFIC_JAM,
    DENM_BREAKDOWN: STOPPED_VEHICLE,
    DENM_POST_CRASH: ACCIDENT,
    DENM_STATIONARY_VEHICLE: STOPPED_VEHICLE,
    DENM_EMERGENCY_VEHICLE: EMERGENCY_VEHICLE,
    DENM_COLLISION_RISK: UNMAPPED,
    DENM_SIGNAL_VIOLATION: UNMAPPED,
    DENM_DANGEROUS_SITUATION: UNMAPPED,
}


def to_denm(event_type: int) -> int:
    """The DENM cause of a canonical type; DENM_UNMAPPED when there is none (or the type is unknown)."""
    return TO_DENM.get(event_type, DENM_UNMAPPED)


def from_denm(cause: int) -> int:
    """The canonical type of a DENM cause; UNMAPPED for causes without one and for unknown codes."""
    return FROM_DENM.get(cause, UNMAPPED)


# ----- RSI event sources (T/CSAE 53 RSI `eventSource`) ---------------------------------------------

RSI_SOURCE_UNKNOWN = 0
RSI_SOURCE_POLICE = 1
RSI_SOURCE_GOVERNMENT = 2
RSI_SOURCE_METEOROLOGICAL = 3
RSI_SOURCE_INTERNET = 4
RSI_SOURCE_DETECTION = 5

# Source kind -> RSI source. Emergency calls and external feeds have no RSI value of their own.
TO_RSI_SOURCE: Mapping[int, int] = {
    SourceKind.ROADSIDE_DETECTION: RSI_SOURCE_DETECTION,
    SourceKind.POLICE_OFFICER: RSI_SOURCE_POLICE,
    SourceKind.EMERGENCY_CALL: RSI_SOURCE_POLICE,  # 110 / 122 calls are taken by the police
    SourceKind.EXTERNAL_FEED: RSI_SOURCE_INTERNET,
    SourceKind.GOVERNMENT: RSI_SOURCE_GOVERNMENT,
    SourceKind.METEOROLOGICAL: RSI_SOURCE_METEOROLOGICAL,
    SourceKind.INTERNET: RSI_SOURCE_INTERNET,
    SourceKind.UNKNOWN: RSI_SOURCE_UNKNOWN,
}
FROM_RSI_SOURCE: Mapping[int, int] = {
    RSI_SOURCE_UNKNOWN: SourceKind.UNKNOWN,
    RSI_SOURCE_POLICE: SourceKind.POLICE_OFFICER,
    RSI_SOURCE_GOVERNMENT: SourceKind.GOVERNMENT,
    RSI_SOURCE_METEOROLOGICAL: SourceKind.METEOROLOGICAL,
    RSI_SOURCE_INTERNET: SourceKind.INTERNET,
    RSI_SOURCE_DETECTION: SourceKind.ROADSIDE_DETECTION,
}


def from_rsi_source(code: int) -> int:
    return FROM_RSI_SOURCE.get(code, SourceKind.UNKNOWN)


# ----- correlation ---------------------------------------------------------------------------------

# Types that describe one happening seen differently: a camera sees a stopped vehicle where the police
# report an accident (or a burning car). A type is always compatible with itself.
COMPATIBLE_GROUPS: tuple[frozenset[int], ...] = (
    frozenset({ACCIDENT, STOPPED_VEHICLE, FIRE}),
    frozenset({ILLEGAL_PARKING, STOPPED_VEHICLE}),
    frozenset({SLIPPERY, ICY}),
    frozenset({RAIN, HAIL, SNOW}),
    frozenset({FOG, HAZE, SANDSTORM}),
)

# When compatible types meet, the incident takes the more specific one (higher rank): an incident
# opened by a camera's STOPPED_VEHICLE becomes an ACCIDENT when the police report one.
_RANK: Mapping[int, int] = {
    ACCIDENT: 10, FIRE: 9, ILLEGAL_PARKING: 5, STOPPED_VEHICLE: 1,
    ICY: 2, SLIPPERY: 1,
    HAIL: 3, SNOW: 2, RAIN: 1,
    SANDSTORM: 3, FOG: 2, HAZE: 1,
}

# Types about one vehicle: reports with different plates are different incidents.
PER_VEHICLE: frozenset[int] = frozenset({OVERSPEED, SLOW_VEHICLE, WRONG_WAY, ILLEGAL_PARKING, TRUCK})


def compatible_types(event_type: int) -> frozenset[int]:
    """Every type an incident may have for a report of `event_type` to join it (itself included)."""
    out = {event_type}
    for group in COMPATIBLE_GROUPS:
        if event_type in group:
            out |= group
    return frozenset(out)


def compatible(a: int, b: int) -> bool:
    return b in compatible_types(a)


def merged_type(incident_type: int, report_type: int) -> int:
    """The incident's type after a compatible report joined it: the more specific of the two."""
    if report_type != incident_type and _RANK.get(report_type, 0) > _RANK.get(incident_type, 0):
        return report_type
    return incident_type
