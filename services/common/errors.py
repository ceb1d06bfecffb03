"""Domain errors. Business code raises these; one interceptor maps them to gRPC statuses.

Domain code never imports grpc: the kind of failure is named here, the wire status is chosen in
`services.common.error_mapping`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass


class ErrorKind(enum.Enum):
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    ABORTED = "ABORTED"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: its path in the request (e.g. `counts[1].free`) and what is wrong."""

    field: str
    description: str


class DomainError(Exception):
    """Base of all expected failures. `reason` is a stable UPPER_SNAKE code for clients."""

    kind: ErrorKind = ErrorKind.FAILED_PRECONDITION
    reason: str = "FAILED_PRECONDITION"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class InvalidArgument(DomainError):
    kind = ErrorKind.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: Sequence[FieldViolation] | FieldViolation | str, message: str | None = None):
        if isinstance(violations, str):
            violations = [FieldViolation("", violations)]
        elif isinstance(violations, FieldViolation):
            violations = [violations]
        self.violations: tuple[FieldViolation, ...] = tuple(violations)
        text = message or "; ".join(
            f"{v.field}: {v.description}" if v.field else v.description for v in self.violations
        )
        super().__init__(text)


class NotFound(DomainError):
    kind = ErrorKind.NOT_FOUND
    reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    kind = ErrorKind.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class PermissionDenied(DomainError):
    kind = ErrorKind.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class Unauthenticated(DomainError):
    kind = ErrorKind.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class ResourceExhausted(DomainError):
    kind = ErrorKind.RESOURCE_EXHAUSTED
    reason = "RESOURCE_EXHAUSTED"


class FailedPrecondition(DomainError):
    kind = ErrorKind.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class Aborted(DomainError):
    """A concurrent change won (stale version); the client should re-read and retry."""

    kind = ErrorKind.ABORTED
    reason = "ABORTED"


class Unavailable(DomainError):
    kind = ErrorKind.UNAVAILABLE
    reason = "UNAVAILABLE"
