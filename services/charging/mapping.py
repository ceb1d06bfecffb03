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

from services.charging.vocab import ConnectorErrorCode, ConnectorStatus

S = ConnectorStatus
E = ConnectorErrorCode


def _frozen(table: dict[str, int]) -> Mapping[str, int]:
    return MappingProxyType(table)


# ----- OCPP 1.6 --------------------------------------------------------------------------------

OCPP16_STATUS: Mapping[str, int] = _frozen({
    "Available": S.AVAILABLE,
    "Preparing": S.PREPARING,
    "Charging": S.CHARGING,
    "SuspendedEVSE": S.SUSPENDED_EVSE,
    "SuspendedEV": S.SUSPENDED_EV,
    "Finishing": S.FINISHING,
    "Reserved": S.RESERVED,
    "Unavailable": S.UNAVAILABLE,
    "Faulted": S.FAULTED,
})

OCPP16_ERROR: Mapping[str, int] = _frozen({
    "ConnectorLockFailure": E.CONNECTOR_LOCK_FAILURE,
    "EVCommunicationError": E.EV_COMMUNICATION_ERROR,
    "GroundFailure": E.GROUND_FAILURE,
    "HighTemperature": E.HIGH_TEMPERATURE,
    "InternalError": E.INTERNAL_ERROR,
    "LocalListConflict": E.LOCAL_LIST_CONFLICT,
    "NoError": E.NO_ERROR,
    "OtherError": E.OTHER_ERROR,
    "OverCurrentFailure": E.OVER_CURRENT_FAILURE,
    "PowerMeterFailure": E.POWER_METER_FAILURE,
    "PowerSwitchFailure": E.POWER_SWITCH_FAILURE,
    "ReaderFailure": E.READER_FAILURE,
    "ResetFailure": E.RESET_FAILURE,
    "UnderVoltage": E.UNDER_VOLTAGE,
    "OverVoltage": E.OVER_VOLTAGE,
    "WeakSignal": E.WEAK_SIGNAL,
})

# ----- OCPP 2.0.1 ------------------------------------------------------------------------------

OCPP201_STATUS: Mapping[str, int] = _frozen({
    "Available": S.AVAILABLE,
    "Occupied": S.OCCUPIED,
    "Reserved": S.RESERVED,
    "Unavailable": S.UNAVAILABLE,
    "Faulted": S.FAULTED,
})

# TransactionEvent.transactionInfo.chargingState: what a 2.0.1 charger says about a session in progress.
# Idle = a transaction is open but no vehicle is connected yet (1.6 Preparing); EVConnected = plugged
# in, no energy flowing and neither side suspending (in use, no finer detail).
OCPP201_CHARGING_STATE: Mapping[str, int] = _frozen({
    "Charging": S.CHARGING,
    "EVConnected": S.OCCUPIED,
    "SuspendedEV": S.SUSPENDED_EV,
    "SuspendedEVSE": S.SUSPENDED_EVSE,
    "Idle": S.PREPARING,
})

# ----- OCPI 2.2.1 ------------------------------------------------------------------------------

OCPI_TO_CANONICAL: Mapping[str, int] = _frozen({
    "AVAILABLE": S.AVAILABLE,
    "BLOCKED": S.BLOCKED,
    "CHARGING": S.CHARGING,
    "INOPERATIVE": S.UNAVAILABLE,
    "OUT_OF_ORDER": S.FAULTED,
    "PLANNED": S.UNAVAILABLE,
    "REMOVED": S.UNAVAILABLE,
    "RESERVED": S.RESERVED,
    "UNKNOWN": S.UNKNOWN,
})

# OCPI has one in-use status: every canonical session state is CHARGING there (OCPI 2.2.1 defines
# CHARGING as "the EVSE is in use").
CANONICAL_TO_OCPI: Mapping[int, str] = MappingProxyType({
    S.AVAILABLE: "AVAILABLE",
    S.OCCUPIED: "CHARGING",
    S.PREPARING: "CHARGING",
    S.CHARGING: "CHARGING",
    S.SUSPENDED_EV: "CHARGING",
    S.SUSPENDED_EVSE: "CHARGING",
    S.FINISHING: "CHARGING",
    S.RESERVED: "RESERVED",
    S.BLOCKED: "BLOCKED",
    S.UNAVAILABLE: "INOPERATIVE",
    S.FAULTED: "OUT_OF_ORDER",
    S.UNKNOWN: "UNKNOWN",
})


def ocpp16_status(status: str, error_code: str) -> tuple[int, int]:
    """(canonical status, canonical error code) of an OCPP 1.6 StatusNotification. KeyError when a
    value is not in the vocabulary (the gateway validates against the OCPP schema first)."""
    return OCPP16_STATUS[status], OCPP16_ERROR[error_code]


def ocpp201_status(connector_status: str) -> int:
    return OCPP201_STATUS[connector_status]


def to_ocpi(status: int) -> str:
    return CANONICAL_TO_OCPI[status]

