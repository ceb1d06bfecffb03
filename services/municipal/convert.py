"""Between the municipal admin protos and the adapter's domain: validate what comes in, build what goes out."""

from __future__ import annotations

from datetime import UTC, date, datetime

from google.rpc import status_pb2
from google.type import date_pb2
from v2x.common.v1 import common_pb2 as cpb
from v2x.municipal.v1 import municipal_pb2 as pb

from services.common import paging
from services.common.errors import FieldViolation, InvalidArgument
from services.common.timestamps import ts
from services.common.validation import Validator
from services.municipal.delivery import Lane
from services.municipal.model import DeadLetter, DestinationStatus, Reconciliation

KIND_TO_PROTO: dict[str, int] = {
    "lot_static": pb.RECORD_KIND_LOT_STATIC, "lot_dynamic": pb.RECORD_KIND_LOT_DYNAMIC,
    "spot_status": pb.RECORD_KIND_SPOT_STATUS, "passage": pb.RECORD_KIND_PASSAGE,
    "charger_status": pb.RECORD_KIND_CHARGER_STATUS, "charger_static": pb.RECORD_KIND_CHARGER_STATIC}
PROTO_TO_KIND = {v: k for k, v in KIND_TO_PROTO.items()}
PROFILE_TO_PROTO: dict[str, int] = {"municipal_json": pb.PROFILE_MUNICIPAL_JSON, "datex2_xml": pb.PROFILE_DATEX2_XML,
                                    "ngsi_ld": pb.PROFILE_NGSI_LD}
STATE_TO_PROTO: dict[str, int] = {"open": pb.DEAD_LETTER_STATE_OPEN, "requeued": pb.DEAD_LETTER_STATE_REQUEUED,
                                  "resolved": pb.DEAD_LETTER_STATE_RESOLVED}
# HTTP statuses of the last error as google.rpc codes (0 = no answer: UNAVAILABLE).
_HTTP_TO_RPC = {400: 3, 401: 16, 403: 7, 404: 5, 408: 4, 409: 10, 413: 3, 422: 3, 429: 8}
MAX_RETRY_IDS = 1000


def rpc_status(http_status: int | None, message: str | None) -> status_pb2.Status:
    code = _HTTP_TO_RPC.get(http_status or 0, 14 if (http_status or 0) in (0, 502, 503, 504) else 13)
    text = message or ""
    prefix = f"HTTP {http_status}: " if http_status else ""
    # The delivery's own messages already name the status ("HTTP 500: ..."): once is enough.
    return status_pb2.Status(code=code, message=text if text.startswith(prefix) else prefix + text)


def kind(value: int, field: str) -> str | None:
    if value == pb.RECORD_KIND_UNSPECIFIED:
        return None
    if value not in PROTO_TO_KIND:
        raise InvalidArgument(FieldViolation(field, f"unknown record kind {value}"))
    return PROTO_TO_KIND[value]


def page(p: cpb.PageRequest) -> tuple[int, int]:
    """A page of dead letters: its size and the id they come before (0 = the newest first)."""
    page_ = paging.page(p, paging.ROW_CURSOR)
    return page_.size, int(page_.cursor or 0)


def token(last_id: int) -> str:
    return paging.token(str(last_id))


def replay_time(request: pb.ReplayRequest) -> datetime:
    v = Validator()
    at = v.timestamp("from_time", request.from_time, max_future_s=0)
    v.check()
    assert at is not None
    return at


def day(d: date_pb2.Date) -> date:
    try:
        return date(d.year, d.month, d.day)
    except ValueError:
        raise InvalidArgument(FieldViolation("day", "is not a valid date")) from None


def status_proto(lane: Lane, st: DestinationStatus) -> pb.DestinationStatus:
    s = st.state
    out = pb.DestinationStatus(
        destination=lane.name, profile=PROFILE_TO_PROTO[lane.profile.name],  # type: ignore[arg-type]
        endpoint_url=lane.destination.url, paused=s.paused, pause_reason=s.pause_reason,
        lag_records=st.lag_records, lag_s=st.lag_s, cursor=s.cursor.id, dead_letters=st.dead_letters,
        replaying=s.replay_from is not None, rate_limit_rps=lane.destination.rate_limit_rps,
        delivered=[pb.KindCount(kind=KIND_TO_PROTO[k], delivered=st.delivered.get(k, 0))  # type: ignore[arg-type]
                   for k in lane.kinds])
    if s.last_delivered_at is not None:
        out.last_delivered_at.FromDatetime(s.last_delivered_at)
    if s.last_error is not None:
        out.last_error.CopyFrom(rpc_status(s.last_error_code, s.last_error))
        if s.last_error_at is not None:
            out.last_error_at.FromDatetime(s.last_error_at)
    return out


def dead_letter_proto(d: DeadLetter) -> pb.DeadLetter:
    return pb.DeadLetter(
        id=d.id, destination=d.destination, kind=KIND_TO_PROTO.get(d.kind, 0),  # type: ignore[arg-type]
        record_key=d.record_key, outbox_id=d.outbox_id, idempotency_key=d.idempotency_key, attempts=d.attempts,
        http_status=d.http_status, last_error=rpc_status(d.http_status, d.message),
        first_attempt_at=ts(d.first_attempt_at), last_attempt_at=ts(d.last_attempt_at),
        payload_preview=d.payload_preview, state=STATE_TO_PROTO[d.state], reason=d.reason)  # type: ignore[arg-type]


def reconciliation_proto(r: Reconciliation, compared: bool) -> pb.ReconcileResponse:
    d = date.fromisoformat(r.day)
    out = pb.ReconcileResponse(destination=r.destination, day=date_pb2.Date(year=d.year, month=d.month, day=d.day),
                               matched=r.matched, compared=compared)
    for k in r.kinds:
        item = pb.KindReconciliation(kind=KIND_TO_PROTO[k.kind], ours=k.ours,  # type: ignore[arg-type]
                                     difference=k.difference, missing_keys=k.missing_keys)
        if k.theirs is not None:
            item.theirs = k.theirs
        out.kinds.append(item)
    return out


def now() -> datetime:
    return datetime.now(UTC)
