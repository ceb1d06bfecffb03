"""The charging domain's vocabularies: connector standards and statuses, error codes, sources, OCPP protocols,
bay flags and acknowledgements.

Each enum mirrors the proto enum of the same name (`protos/v2x/charging/v1/charging.proto`): the same numbers, the
names without the proto's prefix, every value but UNSPECIFIED; `tests/house/test_mirrored_enums.py` holds them to
it. The numbers are also what the database stores. Domain code uses these, `convert.py` maps to and from the wire.
"""

from __future__ import annotations

from enum import IntEnum


class ConnectorStandard(IntEnum):
    GBT_AC = 1
    GBT_DC = 2
    CCS2 = 3
    TYPE2 = 4
    CHADEMO = 5


class ConnectorStatus(IntEnum):
    AVAILABLE = 1
    OCCUPIED = 2
    PREPARING = 3
    CHARGING = 4
    SUSPENDED_EV = 5
    SUSPENDED_EVSE = 6
    FINISHING = 7
    RESERVED = 8
    BLOCKED = 9
    UNAVAILABLE = 10
    FAULTED = 11
    UNKNOWN = 12


class ConnectorErrorCode(IntEnum):
    NO_ERROR = 1
    CONNECTOR_LOCK_FAILURE = 2
    EV_COMMUNICATION_ERROR = 3
    GROUND_FAILURE = 4
    HIGH_TEMPERATURE = 5
    INTERNAL_ERROR = 6
    LOCAL_LIST_CONFLICT = 7
    OTHER_ERROR = 8
    OVER_CURRENT_FAILURE = 9
    POWER_METER_FAILURE = 10
    POWER_SWITCH_FAILURE = 11
    READER_FAILURE = 12
    RESET_FAILURE = 13
    UNDER_VOLTAGE = 14
    OVER_VOLTAGE = 15
    WEAK_SIGNAL = 16


class OcppProtocol(IntEnum):
    OCPP16J = 1
    OCPP201 = 2


class AckResult(IntEnum):
    ACCEPTED = 1
    STALE = 2
    DUPLICATE = 3
    REJECTED = 4


class StatusSource(IntEnum):
    OPERATOR = 1
    OCPP16 = 2
    OCPP201 = 3


class BayFlagKind(IntEnum):
    NON_CHARGING_VEHICLE = 1
    CHARGING_WHILE_SPOT_FREE = 2
