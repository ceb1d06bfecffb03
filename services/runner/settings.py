"""The settings of `v2x run` itself (not of a service)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.common.config import env_int


@dataclass(frozen=True)
class RunSettings:
    # The municipal platform emulator the demo's adapter delivers to.
    emulator_port: int = 8700

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RunSettings:
        return cls(emulator_port=env_int(env, "V2X_EMULATOR_PORT", cls().emulator_port, 1, 65535))
