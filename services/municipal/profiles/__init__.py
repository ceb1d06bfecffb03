"""Destination profiles: the platform's kinds of data in each wire format, chosen per destination."""

from __future__ import annotations

from services.municipal.profiles.base import Profile, RenderContext
from services.municipal.profiles.datex2 import Datex2Xml
from services.municipal.profiles.municipal_json import MunicipalJson
from services.municipal.profiles.ngsi_ld import NgsiLd
from services.municipal.settings import MunicipalDestination

PROFILES: dict[str, type[Profile]] = {p.name: p for p in (MunicipalJson, Datex2Xml, NgsiLd)}


def make_profile(destination: MunicipalDestination) -> Profile:
    return PROFILES[destination.profile](destination)


__all__ = ["PROFILES", "Profile", "RenderContext", "make_profile"]
