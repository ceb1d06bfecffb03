"""FIWARE NGSI-LD profile (smart-data-models): OffStreetParking / OnStreetParking for lots,
ParkingSpot for spots, EVChargingStation for charger status. Entry/exit records are not carried.

One POST is an NGSI-LD batch upsert (`POST /ngsi-ld/v1/entityOperations/upsert`, a JSON array of
entities, application/ld+json). Each entity carries the delivery facts (idempotency key, kind, sequence,
subject, change time) in a `v2xDelivery` property. Locations are GeoJSON, so WGS-84 [lon, lat] by
definition; observations carry `observedAt`. A connector's status is a multi-attribute `connectorStatus`
with the connector as its datasetId (a station-level `status` would need every connector's state).

OffStreetParking / OnStreetParking have no attribute for charging piles: a lot with piles gets the standard
category `forElectricalCharging`, and the counts go in the suite's extension property `v2xChargingPiles`
({"fast": n, "slow": n}, like `v2xDelivery` outside the smart-data-models vocabulary).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from services.municipal import vocab
from services.municipal.checks import Checker
from services.municipal.model import OutboxRecord
from services.municipal.profiles.base import Profile, RenderContext

CONTEXT = ["https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld",
           "https://smartdatamodels.org/context.jsonld"]


def _prop(value: Any, observed_at: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "Property", "value": value}
    if observed_at:
        out["observedAt"] = observed_at
    return out


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _utc(value: str | None) -> str | None:
    # NGSI-LD times are UTC ("Z"); payload times are ISO with offset.
    if value is None:
        return None
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class NgsiLd(Profile):
    name = "ngsi_ld"
    carries = frozenset({"lot_static", "lot_dynamic", "spot_status", "charger_status"})
    content_type = "application/ld+json"
    needs_lot_kinds = True

    def _lot_type(self, lot_id: str, ctx: RenderContext) -> str:
        return vocab.NGSI_LOT_TYPE.get(ctx.lot_kinds.get(lot_id, ""), "OffStreetParking")

    def _map(self, c: Checker, record: OutboxRecord, key: str, ctx: RenderContext) -> Any:
        p = record.payload
        entity: dict[str, Any]
        if record.kind == "lot_static":
            entity = self._lot(p)
        elif record.kind == "lot_dynamic":
            entity = self._availability(p, ctx)
        elif record.kind == "spot_status":
            entity = self._spot(p, ctx)
        else:
            entity = self._charger(c, p)
        entity["v2xDelivery"] = _prop(self.envelope(record, key))
        entity["@context"] = CONTEXT
        return entity

    def _lot(self, p: dict[str, Any]) -> dict[str, Any]:
        etype = vocab.NGSI_LOT_TYPE[p["lot_kind"]]
        line = p.get("line")
        location = ({"type": "LineString", "coordinates": [[lon, lat] for lat, lon in line]} if line
                    else {"type": "Point", "coordinates": [p["lon"], p["lat"]]})
        price = p["price"]
        fee = price.get("first_hour_fen", 0) or price.get("per_hour_fen", 0)
        entity: dict[str, Any] = {
            "id": f"urn:ngsi-ld:{etype}:{p['lot_id']}", "type": etype,
            "name": _prop(p["name"]),
            "location": {"type": "GeoProperty", "value": location},
            "address": _prop({"streetAddress": p.get("address", ""), "addressRegion": p.get("region_code", ""),
                              "addressCountry": "CN"}),
            "category": _prop([vocab.NGSI_LOT_CATEGORY[p["lot_kind"]], "public", "feeCharged" if fee else "free"]),
            "totalSpotNumber": _prop(p["total_spaces"]),
            "occupancyDetectionType": _prop([vocab.STANDARD_DETECTION[p["detection_type"]]]),
            "allowedVehicleType": _prop(["car"]),
            "dataProvider": _prop("v2x-suite"),
        }
        if not p["always_open"]:
            days = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
            entity["openingHoursSpecification"] = _prop([
                {"dayOfWeek": days[o["weekday"] - 1], "opens": _hhmm(o["open_minute"]),
                 "closes": _hhmm(o["close_minute"] % 1440)}
                for o in p.get("opening_periods") or []])
        if p.get("phone"):
            entity["contactPoint"] = _prop({"telephone": p["phone"]})
        fast, slow = p.get("fast_charging_piles") or 0, p.get("slow_charging_piles") or 0
        if fast + slow:
            entity["category"]["value"].append("forElectricalCharging")
        if "fast_charging_piles" in p or "slow_charging_piles" in p:
            entity["v2xChargingPiles"] = _prop({"fast": fast, "slow": slow})
        return entity

    def _availability(self, p: dict[str, Any], ctx: RenderContext) -> dict[str, Any]:
        etype = self._lot_type(p["lot_id"], ctx)
        observed = _utc(p.get("observed_at") or p.get("received_at"))
        known = [v for v in p["free"].values() if v is not None]
        entity: dict[str, Any] = {
            "id": f"urn:ngsi-ld:{etype}:{p['lot_id']}", "type": etype,
            "totalSpotNumber": _prop(sum(p["capacity"].values())),
            "status": _prop([vocab.NGSI_SITE_STATUS[p["status"]]], observed),
        }
        if known:
            entity["availableSpotNumber"] = _prop(sum(known), observed)
        return entity

    def _spot(self, p: dict[str, Any], ctx: RenderContext) -> dict[str, Any]:
        site_type = self._lot_type(p["lot_id"], ctx)
        return {
            "id": f"urn:ngsi-ld:ParkingSpot:{p['lot_id']}:{p['spot_id']}", "type": "ParkingSpot",
            "status": _prop(vocab.NGSI_SPOT_STATUS[p["status"]], _utc(p["observed_at"])),
            "category": _prop(["onStreet" if site_type == "OnStreetParking" else "offStreet"]),
            "refParkingSite": {"type": "Relationship", "object": f"urn:ngsi-ld:{site_type}:{p['lot_id']}"},
        }

    def _charger(self, c: Checker, p: dict[str, Any]) -> dict[str, Any]:
        observed = _utc(p.get("observed_at"))
        status = p["status"]
        entity: dict[str, Any] = {
            "id": f"urn:ngsi-ld:EVChargingStation:{p['station_id']}", "type": "EVChargingStation",
            "connectorStatus": {"type": "Property", "value": vocab.NGSI_CONNECTOR_STATUS[status],
                                "datasetId": f"urn:ngsi-ld:Dataset:{p['connector_id']}",
                                **({"observedAt": observed} if observed else {})},
        }
        if p.get("lat") is not None and p.get("lon") is not None:
            point = {"type": "Point", "coordinates": [p["lon"], p["lat"]]}
            entity["location"] = {"type": "GeoProperty", "value": point}
        if p.get("parking_lot_id"):
            entity["refParkingSite"] = {"type": "Relationship",
                                        "object": f"urn:ngsi-ld:OffStreetParking:{p['parking_lot_id']}"}
        return entity

    def body(self, docs: Sequence[Any]) -> bytes:
        return orjson.dumps(list(docs))

    def wire(self, doc: Any) -> bytes:
        return orjson.dumps(doc)

    def body_of(self, wires: Sequence[bytes]) -> bytes:
        return b"[" + b",".join(wires) + b"]"
