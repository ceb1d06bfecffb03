"""The mapping tables between OCPP 1.6, OCPP 2.0.1, OCPI 2.2.1 and the canonical connector status: each
is total over its source vocabulary (as the `ocpp` package and docs/DOMAIN.md define it) and says what the
table below says, value by value."""

from __future__ import annotations

import re

import pytest
from ocpp.v16 import enums as e16
from ocpp.v201 import enums as e201
from v2x.charging.v1 import charging_pb2 as pb

from services.charging import mapping

S = pb.ConnectorStatus
OCPI_STATUSES = ("AVAILABLE", "BLOCKED", "CHARGING", "INOPERATIVE", "OUT_OF_ORDER", "PLANNED", "REMOVED", "RESERVED",
                 "UNKNOWN")  # OCPI 2.2.1 EVSE Status, docs/DOMAIN.md


def _upper_snake(camel: str) -> str:
    return re.sub(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", camel).upper()


@pytest.mark.parametrize(("ocpp", "canonical"), [
    ("Available", S.CONNECTOR_STATUS_AVAILABLE),
    ("Preparing", S.CONNECTOR_STATUS_PREPARING),
    ("Charging", S.CONNECTOR_STATUS_CHARGING),
    ("SuspendedEVSE", S.CONNECTOR_STATUS_SUSPENDED_EVSE),
    ("SuspendedEV", S.CONNECTOR_STATUS_SUSPENDED_EV),
    ("Finishing", S.CONNECTOR_STATUS_FINISHING),
    ("Reserved", S.CONNECTOR_STATUS_RESERVED),
    ("Unavailable", S.CONNECTOR_STATUS_UNAVAILABLE),
    ("Faulted", S.CONNECTOR_STATUS_FAULTED),
])
def test_ocpp16_status(ocpp: str, canonical: int) -> None:
    assert mapping.OCPP16_STATUS[ocpp] == canonical


def test_ocpp16_status_table_covers_the_whole_vocabulary() -> None:
    assert set(mapping.OCPP16_STATUS) == {s.value for s in e16.ChargePointStatus}


def test_ocpp16_error_codes_map_one_to_one_by_name() -> None:
    assert set(mapping.OCPP16_ERROR) == {c.value for c in e16.ChargePointErrorCode}
    for ocpp, canonical in mapping.OCPP16_ERROR.items():
        expected = "EV_COMMUNICATION_ERROR" if ocpp == "EVCommunicationError" else _upper_snake(ocpp)
        assert pb.ConnectorErrorCode.Name(canonical) == f"CONNECTOR_ERROR_CODE_{expected}"  # type: ignore[arg-type]
    assert len(set(mapping.OCPP16_ERROR.values())) == len(mapping.OCPP16_ERROR)


def test_ocpp16_status_notification_maps_status_and_error_together() -> None:
    assert mapping.ocpp16_status("Faulted", "GroundFailure") == (S.CONNECTOR_STATUS_FAULTED,
                                                                  pb.CONNECTOR_ERROR_CODE_GROUND_FAILURE)
    with pytest.raises(KeyError):
        mapping.ocpp16_status("Sleeping", "NoError")


@pytest.mark.parametrize(("ocpp", "canonical"), [
    ("Available", S.CONNECTOR_STATUS_AVAILABLE),
    ("Occupied", S.CONNECTOR_STATUS_OCCUPIED),
    ("Reserved", S.CONNECTOR_STATUS_RESERVED),
    ("Unavailable", S.CONNECTOR_STATUS_UNAVAILABLE),
    ("Faulted", S.CONNECTOR_STATUS_FAULTED),
])
def test_ocpp201_connector_status(ocpp: str, canonical: int) -> None:
    assert mapping.ocpp201_status(ocpp) == canonical


def test_ocpp201_tables_cover_the_whole_vocabulary() -> None:
    assert set(mapping.OCPP201_STATUS) == {s.value for s in e201.ConnectorStatusEnumType}
    assert set(mapping.OCPP201_CHARGING_STATE) == {s.value for s in e201.ChargingStateEnumType}


@pytest.mark.parametrize(("state", "canonical"), [
    ("Charging", S.CONNECTOR_STATUS_CHARGING),
    ("EVConnected", S.CONNECTOR_STATUS_OCCUPIED),
    ("SuspendedEV", S.CONNECTOR_STATUS_SUSPENDED_EV),
    ("SuspendedEVSE", S.CONNECTOR_STATUS_SUSPENDED_EVSE),
    ("Idle", S.CONNECTOR_STATUS_PREPARING),
])
def test_ocpp201_charging_state(state: str, canonical: int) -> None:
    assert mapping.OCPP201_CHARGING_STATE[state] == canonical


@pytest.mark.parametrize(("ocpi", "canonical"), [
    ("AVAILABLE", S.CONNECTOR_STATUS_AVAILABLE),
    ("BLOCKED", S.CONNECTOR_STATUS_BLOCKED),
    ("CHARGING", S.CONNECTOR_STATUS_CHARGING),
    ("INOPERATIVE", S.CONNECTOR_STATUS_UNAVAILABLE),
    ("OUT_OF_ORDER", S.CONNECTOR_STATUS_FAULTED),
    ("PLANNED", S.CONNECTOR_STATUS_UNAVAILABLE),
    ("REMOVED", S.CONNECTOR_STATUS_UNAVAILABLE),
    ("RESERVED", S.CONNECTOR_STATUS_RESERVED),
    ("UNKNOWN", S.CONNECTOR_STATUS_UNKNOWN),
])
def test_ocpi_to_canonical(ocpi: str, canonical: int) -> None:
    assert mapping.OCPI_TO_CANONICAL[ocpi] == canonical


@pytest.mark.parametrize(("canonical", "ocpi"), [
    (S.CONNECTOR_STATUS_AVAILABLE, "AVAILABLE"),
    (S.CONNECTOR_STATUS_OCCUPIED, "CHARGING"),
    (S.CONNECTOR_STATUS_PREPARING, "CHARGING"),
    (S.CONNECTOR_STATUS_CHARGING, "CHARGING"),
    (S.CONNECTOR_STATUS_SUSPENDED_EV, "CHARGING"),
    (S.CONNECTOR_STATUS_SUSPENDED_EVSE, "CHARGING"),
    (S.CONNECTOR_STATUS_FINISHING, "CHARGING"),
    (S.CONNECTOR_STATUS_RESERVED, "RESERVED"),
    (S.CONNECTOR_STATUS_BLOCKED, "BLOCKED"),
    (S.CONNECTOR_STATUS_UNAVAILABLE, "INOPERATIVE"),
    (S.CONNECTOR_STATUS_FAULTED, "OUT_OF_ORDER"),
    (S.CONNECTOR_STATUS_UNKNOWN, "UNKNOWN"),
])
def test_canonical_to_ocpi(canonical: int, ocpi: str) -> None:
    assert mapping.to_ocpi(canonical) == ocpi


def test_ocpi_tables_cover_both_vocabularies() -> None:
    assert set(mapping.OCPI_TO_CANONICAL) == set(OCPI_STATUSES)
    canonical = {v.number for v in S.DESCRIPTOR.values} - {S.CONNECTOR_STATUS_UNSPECIFIED}
    assert set(mapping.CANONICAL_TO_OCPI) == canonical
    assert set(mapping.CANONICAL_TO_OCPI.values()) <= set(OCPI_STATUSES)


def test_ocpi_round_trips_except_the_statuses_ocpi_keeps_apart() -> None:
    lossy = {"PLANNED", "REMOVED"}  # both are INOPERATIVE to a driver: not usable now
    for ocpi in OCPI_STATUSES:
        back = mapping.to_ocpi(mapping.OCPI_TO_CANONICAL[ocpi])
        assert back == ("INOPERATIVE" if ocpi in lossy else ocpi)


def test_every_ocpp_status_reaches_ocpi() -> None:
    for table in (mapping.OCPP16_STATUS, mapping.OCPP201_STATUS, mapping.OCPP201_CHARGING_STATE):
        for canonical in table.values():
            assert mapping.to_ocpi(canonical) in OCPI_STATUSES
