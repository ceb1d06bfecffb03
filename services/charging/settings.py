"""The charging service's own settings: the OCPP WebSocket gateway and the EV bay checks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.common.config import env_float, env_int, env_ws_url


@dataclass(frozen=True)
class ChargingSettings:
    ocpp_port: int = 9000
    ocpp_public_url: str = ""  # what charge points dial, e.g. wss://ocpp.example.city/ocpp ("" = ws://host:port/ocpp)
    ocpp_heartbeat_s: int = 60
    bay_idle_grace_s: int = 900
    bay_fault_grace_s: int = 60
    bay_check_interval_s: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ChargingSettings:
        d = cls()
        return cls(
            ocpp_port=env_int(env, "V2X_OCPP_PORT", d.ocpp_port, 0, 65535),
            ocpp_public_url=env_ws_url(env, "V2X_OCPP_PUBLIC_URL"),
            ocpp_heartbeat_s=env_int(env, "V2X_OCPP_HEARTBEAT_S", d.ocpp_heartbeat_s, 1, 86400),
            bay_idle_grace_s=env_int(env, "V2X_BAY_IDLE_GRACE_S", d.bay_idle_grace_s, 0, 86400),
            bay_fault_grace_s=env_int(env, "V2X_BAY_FAULT_GRACE_S", d.bay_fault_grace_s, 0, 86400),
            bay_check_interval_s=env_float(env, "V2X_BAY_CHECK_INTERVAL_S", d.bay_check_interval_s, 0.1, 3600),
        )

    def ocpp_url(self, host: str, port: int | None = None) -> str:
        """What a charge point dials: the public URL when one is set, else the gateway on `host`."""
        if self.ocpp_public_url:
            return self.ocpp_public_url
        return f"ws://{host}:{port or self.ocpp_port}/ocpp"
