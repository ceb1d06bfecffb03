"""The parking service's own settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.common.config import env_int


@dataclass(frozen=True)
class ParkingSettings:
    # How long an occupancy reading stays valid when the lot states no TTL of its own (then it reads UNKNOWN).
    occupancy_default_ttl_s: int = 600

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ParkingSettings:
        d = cls()
        return cls(occupancy_default_ttl_s=env_int(env, "V2X_OCCUPANCY_TTL_S", d.occupancy_default_ttl_s, 10, 86400))
