"""Who may change the charging service's data, apart from how it is stored: pure functions that `store.py` calls
inside its transactions with the rows it locked (the rules of a status itself are in `status.py`)."""

from __future__ import annotations

from services.charging.status import OCPP_SOURCES
from services.common.errors import PermissionDenied
from services.common.principal import Principal, Role


def require_owner(principal: Principal, operator_id: str, what: str) -> None:
    if not principal.is_operator(operator_id):
        raise PermissionDenied(f"{what} belongs to another operator")


def may_update_station(principal: Principal, station_id: str, current_operator: str, new_operator: str) -> None:
    """An operator updates its own stations and keeps them; only an admin moves a station to another operator."""
    if principal.role is Role.ADMIN:
        return
    require_owner(principal, current_operator, f"station {station_id}")
    if new_operator != current_operator:
        raise PermissionDenied("only an admin can move a station to another operator")


def may_report(connector_id: str, source: int, actor: str, operator_id: str, charge_point_id: str) -> None:
    """A charge point reports the connectors it drives; an operator the connectors of its own stations."""
    if source in OCPP_SOURCES:
        if charge_point_id != actor:
            raise PermissionDenied(f"connector {connector_id} is not driven by charge point {actor}")
    elif operator_id != actor:
        raise PermissionDenied(f"connector {connector_id} belongs to another operator")
