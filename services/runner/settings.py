"""The settings of `v2x run` itself (not of a service)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.common.config import env_float, env_int


@dataclass(frozen=True)
class RunSettings:
    # The municipal platform emulator the demo's adapter delivers to.
    emulator_port: int = 8700
    # A process not serving this long after it started is stopped and started again. Generous: on a loaded
    # 2-core machine a service's start-up (imports, a model session, an index) has been seen to take over 60 s.
    ready_timeout_s: float = 120.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RunSettings:
        d = cls()
        return cls(emulator_port=env_int(env, "V2X_EMULATOR_PORT", d.emulator_port, 1, 65535),
                   ready_timeout_s=env_float(env, "V2X_READY_TIMEOUT_S", d.ready_timeout_s, 1, 3600))
