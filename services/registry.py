"""The services this build implements, by name (the names of ARCHITECTURE.md's table)."""

from __future__ import annotations

from services.common.runtime import Builder


def builders() -> dict[str, Builder]:
    from services.charging.app import build as charging
    from services.idps.app import build as idps
    from services.municipal.app import build as municipal
    from services.parking.app import build as parking
    from services.roadside.app import build as roadside

    return {"parking": parking, "idps": idps, "charging": charging, "roadside": roadside,
            "municipal": municipal}
