"""The one place where the charging vocabularies meet the suite's canonical connector status.

Tables (docs/DOMAIN.md "EV charging"); each is tested for being total over its source vocabulary:
- OCPP 1.6 ChargePointStatus and ChargePointErrorCode -> canonical status / error code;
- OCPP 2.0.1 ConnectorStatusEnumType -> canonical status, and ChargingStateEnumType (TransactionEvent)
  -> the finer canonical status 2.0.1 connectors reach only through transactions;
- OCPI 2.2.1 EVSE status <-> canonical status (both ways: OCPI is what roaming platforms and many city
  platforms speak).

Keys are the strings on the wire; values are proto enum numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from v2x.charging.v1 import charging_pb2 as pb

S = pb.ConnectorStatus
E = pb.ConnectorErrorCode


def _frozen(table: dict[str, int]) -> Mapping[str, int]:
    return MappingProxyType(table)


# ----- OCPP 1.6 --------------------------------------------------------------------------------

OCPP16_STATUS: Mapping[str, int] = _frozen({
    "Available": S.CONNECTOR_STATUS_AVAILABLE,
    "Preparing": S.CONNECTOR_STATUS_PREPARING,
    "Charging": S.CONNECTOR_STATUS_CHARGING,
    "SuspendedEVSE": S.CONNECTOR_STATUS_SUSPENDED_EVSE,
    "SuspendedEV": S.CONNECTOR_STATUS_SUSPENDED_EV,
    "Finishing": S.CONNECTOR_STATUS_FINISHING,
    "Reserved": S.CONNECTOR_STATUS_RESERVED,
    "Unavailable": S.CONNECTOR_STATUS_UNAVAILABLE,
    "Faulted": S.CONNECTOR_STATUS_FAULTED,
})

OCPP16_ERROR: Mapping[str, int] = _frozen({
    "ConnectorLockFailure": E.CONNECTOR_ERROR_CODE_CONNECTOR_LOCK_FAILURE,
    "EVCommunicationError": E.CONNECTOR_ERROR_CODE_EV_COMMUNICATION_ERROR,
    "GroundFailure": E.CONNECTOR_ERROR_CODE_GROUND_FAILURE,
    "HighTemperature": E.CONNECTOR_ERROR_CODE_HIGH_TEMPERATURE,
    "InternalError": E.CONNECTOR_ERROR_CODE_INTERNAL_ERROR,
    "LocalListConflict": E.CONNECTOR_ERROR_CODE_LOCAL_LIST_CONFLICT,
    "NoError": E.CONNECTOR_ERROR_CODE_NO_ERROR,
    "OtherError": E.CONNECTOR_ERROR_CODE_OTHER_ERROR,
    "OverCurrentFailure": E.CONNECTOR_ERROR_CODE_OVER_CURRENT_FAILURE,
    "PowerMeterFailure": E.CONNECTOR_ERROR_CODE_POWER_METER_FAILURE,
    "PowerSwitchFailure": E.CONNECTOR_ERROR_CODE_POWER_SWITCH_FAILURE,
    "ReaderFailure": E.CONNECTOR_ERROR_CODE_READER_FAILURE,
    "ResetFailure": E.CONNECTOR_ERROR_CODE_RESET_FAILURE,
    "UnderVoltage": E.CONNECTOR_ERROR_CODE_UNDER_VOLTAGE,
    "OverVoltage": E.CONNECTOR_ERROR_CODE_OVER_VOLTAGE,
    "WeakSignal": E.CONNECTOR_ERROR_CODE_WEAK_SIGNAL,
})

# ----- OCPP 2.0.1 ------------------------------------------------------------------------------

OCPP201_STATUS: Mapping[str, int] = _frozen({
    "Available": S.CONNECTOR_STATUS_AVAILABLE,
    "Occupied": S.CONNECTOR_STATUS_OCCUPIED,
    "Reserved": S.CONNECTOR_STATUS_RESERVED,
    "Unavailable": S.CONNECTOR_STATUS_UNAVAILABLE,
    "Faulted": S.CONNECTOR_STATUS_FAULTED,
})

# TransactionEvent.transactionInfo.chargingState: what a 2.0.1 charger says about a session in progress.
# Idle = a transaction is open but no vehicle is connected yet (1.6 Preparing); EVConnected = plugged
# in, no energy flowing and neither side suspending (in use, no finer detail).
OCPP201_CHARGING_STATE: Mapping[str, int] = _frozen({
    "Charging": S.CONNECTOR_STATUS_CHARGING,
    "EVConnected": S.CONNECTOR_STATUS_OCCUPIED,
    "SuspendedEV": S.CONNECTOR_STATUS_SUSPENDED_EV,
    "SuspendedEVSE": S.CONNECTOR_STATUS_SUSPENDED_EVSE,
    "Idle": S.CONNECTOR_STATUS_PREPARING,
})

# ----- OCPI 2.2.1 ------------------------------------------------------------------------------

OCPI_TO_CANONICAL: Mapping[str, int] = _frozen({
    "AVAILABLE": S.CONNECTOR_STATUS_AVAILABLE,
    "BLOCKED": S.CONNECTOR_STATUS_BLOCKED,
    "CHARGING": S.CONNECTOR_STATUS_CHARGING,
    "INOPERATIVE": S.CONNECTOR_STATUS_UNAVAILABLE,
    "OUT_OF_ORDER": S.CONNECTOR_STATUS_FAULTED,
    "PLANNED": S.CONNECTOR_STATUS_UNAVAILABLE,
    "REMOVED": S.CONNECTOR_STATUS_UNAVAILABLE,
    "RESERVED": S.CONNECTOR_STATUS_RESERVED,
    "UNKNOWN": S.CONNECTOR_STATUS_UNKNOWN,
})

# OCPI has one in-use status: every canonical session state is CHARGING there (OCPI 2.2.1 defines
# CHARGING as "the EVSE is in use").
CANONICAL_TO_OCPI: Mapping[int, str] = MappingProxyType({
    S.CONNECTOR_STATUS_AVAILABLE: "AVAILABLE",
    S.CONNECTOR_STATUS_OCCUPIED: "CHARGING",
    S.CONNECTOR_STATUS_PREPARING: "CHARGING",
    S.CONNECTOR_STATUS_CHARGING: "CHARGING",
    S.CONNECTOR_STATUS_SUSPENDED_EV: "CHARGING",
    S.CONNECTOR_STATUS_SUSPENDED_EVSE: "CHARGING",
    S.CONNECTOR_STATUS_FINISHING: "CHARGING",
    S.CONNECTOR_STATUS_RESERVED: "RESERVED",
    S.CONNECTOR_STATUS_BLOCKED: "BLOCKED",
    S.CONNECTOR_STATUS_UNAVAILABLE: "INOPERATIVE",
    S.CONNECTOR_STATUS_FAULTED: "OUT_OF_ORDER",
    S.CONNECTOR_STATUS_UNKNOWN: "UNKNOWN",
})


def ocpp16_status(status: str, error_code: str) -> tuple[int, int]:
    """(canonical status, canonical error code) of an OCPP 1.6 StatusNotification. KeyError when a
    value is not in the vocabulary (the gateway validates against the OCPP schema first)."""
    return OCPP16_STATUS[status], OCPP16_ERROR[error_code]


def ocpp201_status(connector_status: str) -> int:
    return OCPP201_STATUS[connector_status]


def to_ocpi(status: int) -> str:
    return CANONICAL_TO_OCPI[status]

