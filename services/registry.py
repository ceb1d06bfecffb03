"""The services this build implements, by name (the names of docs/ARCHITECTURE.md's table)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.common.runtime import Builder

# In the order `v2x run` starts them; known without importing any of them.
NAMES = ("parking", "idps", "charging", "roadside", "municipal")


def builders() -> dict[str, Builder]:
    from services.charging.app import build as charging
    from services.idps.app import build as idps
    from services.municipal.app import build as municipal
    from services.parking.app import build as parking
    from services.roadside.app import build as roadside

    built: dict[str, Builder] = {"parking": parking, "idps": idps, "charging": charging, "roadside": roadside,
                                 "municipal": municipal}
    assert tuple(built) == NAMES
    return built


def check_settings(env: Mapping[str, str]) -> None:
    """Reads every service's own settings from `env`: a bad value fails here (ConfigError naming the variable), before
    `v2x run` starts anything. `v2x serve NAME` reads its service's settings as it builds it."""
    from services.charging.settings import ChargingSettings
    from services.idps.settings import IdpsSettings
    from services.municipal.settings import MunicipalSettings
    from services.parking.settings import ParkingSettings
    from services.roadside.settings import RoadsideSettings

    for read in (ParkingSettings.from_env, IdpsSettings.from_env, ChargingSettings.from_env,
                 RoadsideSettings.from_env, MunicipalSettings.from_env):
        read(env)
