"""Who is calling: the principal an API key stands for, and the per-request context holding it."""

from __future__ import annotations

import contextvars
import enum
from dataclasses import dataclass

from services.common.errors import InvalidArgument, PermissionDenied, Unauthenticated


class Role(enum.Enum):
    OPERATOR = "operator"
    CAMERA = "camera"
    POLICE = "police"
    DRIVER = "driver"
    ADMIN = "admin"
    PLATFORM = "platform"

    @property
    def scoped(self) -> bool:
        return self in (Role.OPERATOR, Role.CAMERA)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. `scope` is the operator or camera id for scoped roles."""

    role: Role
    scope: str | None = None
    key_id: str = ""

    @classmethod
    def parse(cls, spec: str, key_id: str = "") -> Principal:
        """Parses `operator:ACME`, `camera:cam-1`, `police`, `driver`, `admin`, `platform`."""
        name, _, scope = spec.partition(":")
        try:
            role = Role(name.strip().lower())
        except ValueError:
            raise InvalidArgument(f"unknown role {name!r}; one of {', '.join(r.value for r in Role)}") from None
        scope = scope.strip()
        if role.scoped and not scope:
            raise InvalidArgument(f"role {role.value} needs a scope, e.g. {role.value}:ACME")
        if not role.scoped and scope:
            raise InvalidArgument(f"role {role.value} takes no scope")
        return cls(role, scope or None, key_id)

    def __str__(self) -> str:
        return f"{self.role.value}:{self.scope}" if self.scope else self.role.value

    def is_operator(self, operator_id: str) -> bool:
        return self.role is Role.OPERATOR and self.scope == operator_id

    def require(self, *roles: Role) -> None:
        if self.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise PermissionDenied(f"role {self.role.value} may not do this (allowed: {allowed})")


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("v2x_principal", default=None)
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("v2x_request_id", default="-")


def current_principal() -> Principal:
    principal = _current.get()
    if principal is None:
        raise Unauthenticated("no credentials")
    return principal


def set_principal(principal: Principal | None) -> contextvars.Token[Principal | None]:
    return _current.set(principal)


def reset_principal(token: contextvars.Token[Principal | None]) -> None:
    _current.reset(token)
