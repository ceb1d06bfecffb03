"""Who may call what: API-key authentication, the role policy, lot ownership, and plate redaction."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf.message import Message
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from v2x.common.v1 import common_pb2 as cpb
from v2x.parking.v1 import parking_pb2 as pb

from services.common.apikeys import create_key, revoke_key
from services.common.runtime import Resources
from tests.conftest import Keys
from tests.parking.conftest import NewLot
from tests.parking.helpers import batch, lot, report, ts
from tests.parking.test_bad_inputs import fingerprint

if TYPE_CHECKING:
    # The async flavour of the stub exists only in the generated .pyi.
    from v2x.parking.v1.parking_pb2_grpc import ParkingServiceAsyncStub as Stub

SERVICE = "v2x.parking.v1.ParkingService"
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
Metadata = tuple[tuple[str, str], ...]


# ----- calling any rpc and reading its outcome -----------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Lots of operator OPA: one counted by entry/exit, one detecting single spaces."""

    counted: str
    spotted: str
    fresh: str  # an id no lot has


@pytest.fixture
async def target(new_lot: NewLot, unique: str) -> Target:
    return Target(await new_lot(), await new_lot(general=3, ev=0, disabled=0,
                                                 detection=pb.DETECTION_TYPE_SINGLE_SPACE), f"N-{unique}")


def passage_to_amend(t: Target) -> pb.RecordPassageRequest:
    return pb.RecordPassageRequest(lot_id=t.counted, passage_id="P0", direction=pb.PASSAGE_DIRECTION_ENTRY,
                                   plate="沪A54321", plate_colour=pb.PLATE_COLOUR_BLUE, passed_at=ts(seconds_ago=60))


# A request for each rpc that the lot's own operator (or an admin, for RegisterLot) may send.
REQUESTS: dict[str, Callable[[Target], Message]] = {
    "RegisterLot": lambda t: pb.RegisterLotRequest(lot=lot(t.fresh)),
    "UpdateLot": lambda t: pb.UpdateLotRequest(lot=lot(t.counted, general=120)),
    "GetLot": lambda t: pb.GetLotRequest(lot_id=t.counted),
    "ListLots": lambda t: pb.ListLotsRequest(),
    "UpsertSpots": lambda t: pb.UpsertSpotsRequest(lot_id=t.spotted, spots=[
        pb.Spot(id="S1", space_class=pb.SPACE_CLASS_GENERAL)]),
    "ListSpots": lambda t: pb.ListSpotsRequest(lot_id=t.spotted),
    "PushOccupancy": lambda t: report(t.counted, 1, general=50),
    "StreamOccupancy": lambda t: report(t.counted, 1, general=50),
    "RecordPassage": lambda t: pb.RecordPassageRequest(
        lot_id=t.counted, passage_id="P1", direction=pb.PASSAGE_DIRECTION_ENTRY, plate="沪A12345",
        plate_colour=pb.PLATE_COLOUR_BLUE, passed_at=ts()),
    "AmendPassage": lambda t: pb.AmendPassageRequest(
        lot_id=t.counted, passage_id="P0", action=pb.PASSAGE_AMEND_ACTION_CORRECT, plate="沪A54322",
        reason="plate misread at the entrance"),
    "ListPassages": lambda t: pb.ListPassagesRequest(lot_id=t.counted),
    "FindAvailable": lambda t: pb.FindAvailableRequest(location=cpb.LatLon(lat=31.40, lon=121.49), radius_m=1000),
    "WatchAvailability": lambda t: pb.WatchAvailabilityRequest(snapshot=True, area=cpb.Area(circle=cpb.Circle(
        center=cpb.LatLon(lat=31.40, lon=121.49), radius_m=1000))),
}
WRITES = {"RegisterLot", "UpdateLot", "UpsertSpots", "PushOccupancy", "StreamOccupancy", "RecordPassage",
          "AmendPassage"}


def _code(number: int) -> grpc.StatusCode:
    return next(c for c in grpc.StatusCode if c.value[0] == number)


# grpc/grpc#36066: when a server ends a client-streaming call before the client half-closed (a refusal), the asyncio
# client's write that loses the race overwrites the server's status with this one. The server answered right; the
# client library misreports it now and then, so such a call is made again.
_GRPC_36066 = (grpc.StatusCode.INTERNAL, "Internal error from Core")


async def outcome(stub: Stub, rpc: str, request: Message, md: Metadata) -> tuple[grpc.StatusCode, str]:
    """The status of one call and its message. A report refused inside StreamOccupancy (the stream
    itself goes on) counts as its ack's status."""
    for _ in range(5):
        result = await _outcome(stub, rpc, request, md)
        if rpc != "StreamOccupancy" or result != _GRPC_36066:
            break
    return result


async def _outcome(stub: Stub, rpc: str, request: Message, md: Metadata) -> tuple[grpc.StatusCode, str]:
    try:
        if rpc == "StreamOccupancy":
            async def one() -> AsyncIterator[Message]:
                yield batch(request)  # type: ignore[arg-type]

            acks = [a async for m in stub.StreamOccupancy(one(), metadata=md)  # type: ignore[arg-type]
                    for a in m.acks]
            assert len(acks) == 1
            if acks[0].result == pb.ACK_RESULT_REJECTED:
                return _code(acks[0].error.code), acks[0].error.message
        elif rpc == "WatchAvailability":
            call = stub.WatchAvailability(request, metadata=md)  # type: ignore[arg-type]
            try:
                await call.read()
            finally:
                call.cancel()
        else:
            await getattr(stub, rpc)(request, metadata=md)
    except aio.AioRpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


# ----- the matrix --------------------------------------------------------------------------------

OK = "ok"
ROLE = "role"    # PERMISSION_DENIED: the role may not call the rpc at all
OWNER = "owner"  # PERMISSION_DENIED: the lot belongs to another operator

WHO = ("admin", "police", "driver", "platform", "op_a", "op_b", "camera")
# op_a owns the target lots; op_b is another operator.
#                     admin  police driver platform op_a  op_b   camera
MATRIX = {
    "RegisterLot":       (OK,   ROLE,  ROLE,  ROLE,    ROLE, ROLE,  ROLE),
    "UpdateLot":         (OK,   ROLE,  ROLE,  ROLE,    OK,   OWNER, ROLE),
    "UpsertSpots":       (OK,   ROLE,  ROLE,  ROLE,    OK,   OWNER, ROLE),
    "PushOccupancy":     (ROLE, ROLE,  ROLE,  ROLE,    OK,   OWNER, ROLE),
    "StreamOccupancy":   (ROLE, ROLE,  ROLE,  ROLE,    OK,   OWNER, ROLE),
    "RecordPassage":     (ROLE, ROLE,  ROLE,  ROLE,    OK,   OWNER, ROLE),
    "AmendPassage":      (ROLE, ROLE,  ROLE,  ROLE,    OK,   OWNER, ROLE),
    "ListPassages":      (OK,   OK,    ROLE,  ROLE,    OK,   OWNER, ROLE),
    "ListLots":          (OK,   OK,    ROLE,  OK,      OK,   OK,    ROLE),
    "GetLot":            (OK,   OK,    OK,    OK,      OK,   OK,    None),
    "ListSpots":         (OK,   OK,    OK,    OK,      OK,   OK,    None),
    "FindAvailable":     (OK,   OK,    OK,    OK,      OK,   OK,    None),
    "WatchAvailability": (OK,   OK,    OK,    OK,      OK,   OK,    None),
}
ROWS = [(who, rpc, expected) for rpc, row in MATRIX.items() for who, expected in zip(WHO, row, strict=True)
        if expected is not None]


@pytest.mark.parametrize(("who", "rpc", "expected"), ROWS, ids=[f"{w}-{r}" for w, r, _ in ROWS])
async def test_role_and_ownership_decide_who_may_call(who: str, rpc: str, expected: str, stub: Stub,
                                                     keys: Keys, target: Target, resources: Resources) -> None:
    if rpc == "AmendPassage":  # something to amend, recorded by the lot's operator
        await stub.RecordPassage(passage_to_amend(target), metadata=keys.md(keys.op_a))
    before = await fingerprint(resources)
    code, message = await outcome(stub, rpc, REQUESTS[rpc](target), keys.md(getattr(keys, who)))
    written = await fingerprint(resources) != before
    if expected == OK:
        assert code == grpc.StatusCode.OK, message
        assert written == (rpc in WRITES)
        return
    assert code == PERMISSION_DENIED, message
    assert (f"may not call {rpc}" if expected == ROLE else "belongs to another operator") in message
    assert not written


# ----- authentication ------------------------------------------------------------------------------


def _id(key: str) -> str:
    return key.split("_")[1]


def _secret(key: str) -> str:
    return key.split("_")[2]


# The authorization header (None: none at all) that authenticates no one, and what the refusal says.
BAD_CREDENTIALS: dict[str, tuple[Callable[[Keys], str | None], str]] = {
    "no-key": (lambda k: None, "missing"),
    "empty-bearer": (lambda k: "Bearer ", "Bearer <api key>"),
    "basic-scheme": (lambda k: "Basic xyz", "Bearer <api key>"),
    "basic-scheme-with-a-valid-key": (lambda k: f"Basic {k.driver}", "Bearer <api key>"),
    "key-alone-without-scheme": (lambda k: k.driver, "Bearer <api key>"),
    "not-a-key": (lambda k: "Bearer not-a-key", "malformed"),
    "two-parts": (lambda k: f"Bearer v2x_{_id(k.driver)}", "malformed"),
    "empty-key-id": (lambda k: f"Bearer v2x__{_secret(k.driver)}", "malformed"),
    "other-prefix": (lambda k: f"Bearer abc_{_id(k.driver)}_{_secret(k.driver)}", "malformed"),
    "300-chars": (lambda k: f"Bearer v2x_{_id(k.driver)}_{'s' * 300}", "malformed"),
    "wrong-secret": (lambda k: f"Bearer v2x_{_id(k.driver)}_{_secret(k.op_a)}", "unknown or revoked"),
    "secret-of-another-key": (lambda k: f"Bearer v2x_{_id(k.op_a)}_{_secret(k.driver)}", "unknown or revoked"),
    "unknown-key-id": (lambda k: f"Bearer v2x_ffffffffffff_{_secret(k.driver)}", "unknown or revoked"),
}


@pytest.mark.parametrize("rpc", ["GetLot", "RegisterLot", "StreamOccupancy", "WatchAvailability"])
@pytest.mark.parametrize("credentials", BAD_CREDENTIALS)
async def test_calls_without_a_valid_key_are_unauthenticated(credentials: str, rpc: str, stub: Stub,
                                                             keys: Keys, target: Target,
                                                             resources: Resources) -> None:
    header, says = BAD_CREDENTIALS[credentials]
    value = header(keys)
    md: Metadata = () if value is None else (("authorization", value),)
    before = await fingerprint(resources)
    code, message = await outcome(stub, rpc, REQUESTS[rpc](target), md)
    assert code == UNAUTHENTICATED, message
    assert says in message
    assert await fingerprint(resources) == before


async def test_revoked_key_is_refused_once_the_cache_expires(stub: Stub, keys: Keys, resources: Resources,
                                                             target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    issued = await create_key(resources.engine, "operator:OPA", "revoked in a test")
    md = Keys.md(issued.key)
    assert (await stub.PushOccupancy(report(target.counted, 1, general=50), metadata=md)).result == \
        pb.ACK_RESULT_ACCEPTED
    assert await revoke_key(resources.engine, issued.principal.key_id)
    # The key cache's clock moves past its lifetime instead of the test waiting it out.
    moved_s = resources.settings.api_key_cache_s + 0.2
    monkeypatch.setattr(resources.verifier, "clock", lambda: time.monotonic() + moved_s)
    with pytest.raises(aio.AioRpcError) as err:
        await stub.PushOccupancy(report(target.counted, 2, general=40), metadata=md)
    assert err.value.code() == UNAUTHENTICATED
    assert "revoked" in (err.value.details() or "")
    view = await stub.GetLot(pb.GetLotRequest(lot_id=target.counted), metadata=Keys.md(keys.driver))
    assert view.availability.sequence == 1


async def test_key_revoked_before_its_first_use_is_refused_and_writes_nothing(stub: Stub, keys: Keys,
                                                                              resources: Resources,
                                                                              target: Target) -> None:
    issued = await create_key(resources.engine, "operator:OPA", "revoked in a test")
    assert await revoke_key(resources.engine, issued.principal.key_id)
    with pytest.raises(aio.AioRpcError) as err:
        await stub.PushOccupancy(report(target.counted, 1, general=40), metadata=Keys.md(issued.key))
    assert err.value.code() == UNAUTHENTICATED
    view = await stub.GetLot(pb.GetLotRequest(lot_id=target.counted), metadata=keys.md(keys.driver))
    assert view.availability.sequence == 0


# ----- plates ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("who", "plate", "redacted"), [
    ("police", "沪A12345", False),
    ("op_a", "沪A12345", False),
    ("admin", "***", True),
])
async def test_plates_are_shown_only_to_police_and_the_owning_operator(who: str, plate: str, redacted: bool,
                                                                       stub: Stub, keys: Keys,
                                                                       target: Target) -> None:
    await stub.RecordPassage(REQUESTS["RecordPassage"](target), metadata=keys.md(keys.op_a))  # type: ignore[arg-type]
    out = await stub.ListPassages(pb.ListPassagesRequest(lot_id=target.counted), metadata=keys.md(getattr(keys, who)))
    assert [p.plate for p in out.passages] == [plate]
    assert out.plates_redacted is redacted
    assert [p.passage_id for p in out.passages] == ["P1"]


@pytest.mark.parametrize("who", ["op_b", "driver"])
async def test_passages_are_refused_to_other_operators_and_drivers(who: str, stub: Stub, keys: Keys,
                                                                   target: Target) -> None:
    await stub.RecordPassage(REQUESTS["RecordPassage"](target), metadata=keys.md(keys.op_a))  # type: ignore[arg-type]
    with pytest.raises(aio.AioRpcError) as err:
        await stub.ListPassages(pb.ListPassagesRequest(lot_id=target.counted), metadata=keys.md(getattr(keys, who)))
    assert err.value.code() == PERMISSION_DENIED
    assert "沪A12345" not in (err.value.details() or "")


# ----- infrastructure without a key ------------------------------------------------------------------


async def test_health_check_needs_no_key(parking_channel: aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(parking_channel)
    for service in ("", SERVICE):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_needs_no_key(parking_channel: aio.Channel) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(parking_channel)

    async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        yield reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE)

    replies = [r async for r in reflection.ServerReflectionInfo(ask())]
    assert SERVICE in {s.name for s in replies[0].list_services_response.service}
    assert replies[1].file_descriptor_response.file_descriptor_proto
