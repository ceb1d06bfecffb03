"""The one place where domain errors become gRPC statuses with google.rpc details."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from services.common.errors import DomainError, ErrorKind, InvalidArgument

DOMAIN = "v2x.city"

_CODES: dict[ErrorKind, tuple[grpc.StatusCode, int]] = {
    ErrorKind.INVALID_ARGUMENT: (grpc.StatusCode.INVALID_ARGUMENT, code_pb2.INVALID_ARGUMENT),
    ErrorKind.NOT_FOUND: (grpc.StatusCode.NOT_FOUND, code_pb2.NOT_FOUND),
    ErrorKind.ALREADY_EXISTS: (grpc.StatusCode.ALREADY_EXISTS, code_pb2.ALREADY_EXISTS),
    ErrorKind.PERMISSION_DENIED: (grpc.StatusCode.PERMISSION_DENIED, code_pb2.PERMISSION_DENIED),
    ErrorKind.UNAUTHENTICATED: (grpc.StatusCode.UNAUTHENTICATED, code_pb2.UNAUTHENTICATED),
    ErrorKind.RESOURCE_EXHAUSTED: (grpc.StatusCode.RESOURCE_EXHAUSTED, code_pb2.RESOURCE_EXHAUSTED),
    ErrorKind.FAILED_PRECONDITION: (grpc.StatusCode.FAILED_PRECONDITION, code_pb2.FAILED_PRECONDITION),
    ErrorKind.ABORTED: (grpc.StatusCode.ABORTED, code_pb2.ABORTED),
    ErrorKind.UNAVAILABLE: (grpc.StatusCode.UNAVAILABLE, code_pb2.UNAVAILABLE),
}


def grpc_code(error: DomainError) -> grpc.StatusCode:
    return _CODES[error.kind][0]


# A status travels in the trailers, and gRPC clients refuse metadata over 8 KiB (soft) / 16 KiB (hard):
# a batch of bad items, or a huge bad value echoed back, must not turn into an unreadable answer.
# Bounds in UTF-8 bytes; the message is sent twice (grpc-message, percent-encoded, and in the status).
MAX_MESSAGE_BYTES = 1024
MAX_VIOLATIONS_BYTES = 1536
MAX_DESCRIPTION_BYTES = 256


def _clip(text: str, limit: int) -> str:
    raw = text.encode()
    return text if len(raw) <= limit else raw[: limit - 3].decode(errors="ignore") + "..."


def to_status_proto(error: DomainError) -> status_pb2.Status:
    """google.rpc.Status with ErrorInfo, plus BadRequest field violations for bad arguments (as many
    as fit in the size bounds above; the message is clipped the same way)."""
    status = status_pb2.Status(code=_CODES[error.kind][1], message=_clip(error.message, MAX_MESSAGE_BYTES))
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN))
    status.details.append(info)
    if isinstance(error, InvalidArgument):
        bad = error_details_pb2.BadRequest()
        for v in error.violations:
            item = error_details_pb2.BadRequest.FieldViolation(
                field=_clip(v.field, MAX_DESCRIPTION_BYTES), description=_clip(v.description, MAX_DESCRIPTION_BYTES))
            if bad.ByteSize() + item.ByteSize() > MAX_VIOLATIONS_BYTES:
                break
            bad.field_violations.append(item)
        detail = any_pb2.Any()
        detail.Pack(bad)
        status.details.append(detail)
    return status
