"""FIWARE NGSI-LD profile (`ngsi_ld`): entities of the Smart Data Models, each valid against its model's JSON Schema
(dataModel.Parking: OffStreetParking, OnStreetParking, ParkingSpot; dataModel.Transportation: EVChargingStation),
normalized NGSI-LD with the models' own `@context`.

- lot_static: OffStreetParking (garage, surface lot) or OnStreetParking (street segment, LineString location) with
  everything the lot's record says;
- lot_dynamic: a fragment of the same entity: availableSpotNumber, totalSpotNumber, occupancy, status (observedAt),
  and the lot's location (the models require it on every entity; the adapter knows it from the lot's static
  record);
- spot_status: ParkingSpot (status, category onStreet / offStreet, refParkingSite, location: the berth's
  coordinates when the record has them, else the lot's);
- charger_status: one EVChargingStation per charging point (connector): capacity 1, availableCapacity, socketType,
  allowedVehicleType, status, chargingUnitId = the connector (the model's capacity counts vehicles charged at once, so
  a point is the unit whose state one record says);
- charger_static: the static attributes of the same entities, one fragment per connector of the station (name,
  address, location, operator, socketType, capacity, socketNumber, chargingUnitId, the power as `v2xMaxPowerKw`):
  a record is then several entities, its wire form their JSON objects joined by commas (`subjects` names them).
Entry/exit records are not carried.

One POST is a batch upsert `POST /ngsi-ld/v1/entityOperations/upsert?options=update` (application/ld+json): with
`options=update` a broker merges each fragment into the entity it has (a lot's occupancy does not erase its name,
location and capacity); without it the broker would replace whole entities. A batch never holds one entity id twice:
the records of one entity in a batch are merged into one fragment, later attributes over earlier ones. A broker
answers a partly failed batch with 207 `{"success": [ids], "errors": [{"entityId", "error": {"type", "title",
"status"?}}]}`: the lane makes the records of a rejected entity dead letters with the broker's reason and sends the
records of an entity that failed transiently again (services/municipal/delivery.py).

Extension attributes, named in the suite's own JSON-LD context (`V2X_CONTEXT`, inline in each entity's `@context`
so that nothing needs fetching): `v2xDelivery` (the delivery facts of the entity's records: a list of {idempotencyKey,
recordType, sequence, aggregateId, changedAt}), `v2xChargingPiles` ({fast, slow}: the parking models have no pile
counts), `v2xConnectorStatus` (the connector's OCPP 1.6 status, finer than the model's station status),
`v2xStation` (the charging station a point belongs to), `v2xMaxPowerKw` (a point's power: the model has none).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from services.municipal import vocab
from services.municipal.checks import Checker
from services.municipal.model import OutboxRecord
from services.municipal.profiles.base import Profile, RenderContext, lot_location

CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"
PARKING_CONTEXT = "https://raw.githubusercontent.com/smart-data-models/dataModel.Parking/master/context.jsonld"
TRANSPORTATION_CONTEXT = "https://smart-data-models.github.io/dataModel.Transportation/context.jsonld"
V2X_VOCAB = "urn:v2x-suite:ngsi-ld:"
V2X_CONTEXT = {name: V2X_VOCAB + name for name in ("v2xDelivery", "v2xChargingPiles", "v2xConnectorStatus",
                                                    "v2xStation", "v2xMaxPowerKw")}
PARKING = [CORE_CONTEXT, PARKING_CONTEXT, V2X_CONTEXT]
TRANSPORTATION = [CORE_CONTEXT, TRANSPORTATION_CONTEXT, V2X_CONTEXT]
_DAYS = ("Mo", "Tu", "We", "Th", "Fr", "Sa", "Su")


def _prop(value: Any, observed_at: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "Property", "value": value}
    if observed_at:
        out["observedAt"] = observed_at
    return out


def _geo(geometry: dict[str, Any]) -> dict[str, Any]:
    return {"type": "GeoProperty", "value": geometry}


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _utc(value: str | None) -> str | None:
    # NGSI-LD times are UTC ("Z"); payload times are ISO with offset.
    if value is None:
        return None
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def opening_hours(periods: Sequence[dict[str, Any]]) -> str:
    """schema.org openingHours text ("Mo,Tu 07:00-23:00"): one group per distinct opening time."""
    by_time: dict[tuple[int, int], list[int]] = {}
    for o in periods:
        by_time.setdefault((o["open_minute"], o["close_minute"]), []).append(o["weekday"])
    return ", ".join(f"{','.join(_DAYS[d - 1] for d in sorted(set(days)))} "
                     f"{_hhmm(start)}-{_hhmm(end) if end < 1440 else '24:00'}"
                     for (start, end), days in by_time.items())


def _entities(wire: bytes) -> list[dict[str, Any]]:
    """The entities of one record's wire form (one JSON object, or several joined by commas)."""
    out: list[dict[str, Any]] = orjson.loads(b"[" + wire + b"]")
    return out


def merge(entities: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entities with one fragment per id, in order of first appearance: a later fragment's attributes replace an
    earlier one's; the delivery facts of every merged record are kept."""
    out: dict[str, dict[str, Any]] = {}
    for e in entities:
        had = out.get(e["id"])
        if had is None:
            out[e["id"]] = e
            continue
        deliveries = had["v2xDelivery"]["value"] + e["v2xDelivery"]["value"]
        out[e["id"]] = {**had, **e, "v2xDelivery": _prop(deliveries)}
    return list(out.values())


class NgsiLd(Profile):
    name = "ngsi_ld"
    carries = frozenset({"lot_static", "lot_dynamic", "spot_status", "charger_static", "charger_status"})
    content_type = "application/ld+json"
    needs_lot_kinds = True

    def request_url(self, url: str) -> str:
        """The upsert with update semantics (`options=update`), whatever else the configured url asks."""
        parts = urlsplit(url)
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"] + [("options", "update")]
        return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))

    def subjects(self, wire: bytes) -> list[str]:
        return [str(e["id"]) for e in _entities(wire)]

    def _lot_type(self, lot_id: str, ctx: RenderContext) -> str:
        return vocab.NGSI_LOT_TYPE.get(ctx.lot_kinds.get(lot_id, ""), "OffStreetParking")

    def _map(self, c: Checker, record: OutboxRecord, key: str, ctx: RenderContext) -> Any:
        p = record.payload
        entity: dict[str, Any]
        if record.kind == "charger_static":
            delivery = _prop([self.envelope(record, key)])
            return [{**e, "v2xDelivery": delivery, "@context": TRANSPORTATION} for e in self._charging_points(p)]
        if record.kind == "lot_static":
            entity = self._lot(p)
        elif record.kind == "lot_dynamic":
            entity = self._availability(p, ctx)
        elif record.kind == "spot_status":
            entity = self._spot(p, ctx)
        else:
            entity = self._charger(p)
        entity["v2xDelivery"] = _prop([self.envelope(record, key)])
        entity["@context"] = TRANSPORTATION if record.kind == "charger_status" else PARKING
        return entity

    def _lot(self, p: dict[str, Any]) -> dict[str, Any]:
        etype = vocab.NGSI_LOT_TYPE[p["lot_kind"]]
        price = p["price"]
        fee = price.get("first_hour_fen", 0) or price.get("per_hour_fen", 0)
        category = [c for c in (vocab.NGSI_LOT_CATEGORY[p["lot_kind"]], "public", "feeCharged" if fee else "free")
                    if c]
        entity: dict[str, Any] = {
            "id": f"urn:ngsi-ld:{etype}:{p['lot_id']}", "type": etype,
            "name": _prop(p["name"]),
            "location": _geo(lot_location(p)),
            "address": _prop({"streetAddress": p.get("address", ""), "addressRegion": p.get("region_code", ""),
                              "addressCountry": "CN"}),
            "category": _prop(category),
            "totalSpotNumber": _prop(p["total_spaces"]),
            "occupancyDetectionType": _prop([vocab.STANDARD_DETECTION[p["detection_type"]]]),
            "allowedVehicleType": _prop(["car"]),
            "chargeType": _prop(["firstIntervalPrice", "additionalIntervalPrice"] if fee else ["free"]),
            "dataProvider": _prop("v2x-suite"),
        }
        if etype == "OffStreetParking":
            entity["layout"] = _prop([vocab.NGSI_LOT_LAYOUT[p["lot_kind"]]])
        if not p["always_open"] and p.get("opening_periods"):
            entity["openingHours"] = _prop(opening_hours(p["opening_periods"]))
        if p.get("phone"):
            entity["contactPoint"] = _prop({"telephone": p["phone"]})
        if p["capacity"].get("disabled"):
            entity["category"]["value"].append("forDisabled")
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
        total = sum(p["capacity"].values())
        entity: dict[str, Any] = {
            "id": f"urn:ngsi-ld:{etype}:{p['lot_id']}", "type": etype,
            "totalSpotNumber": _prop(total),
            "status": _prop([vocab.NGSI_SITE_STATUS[p["status"]]], observed),
        }
        location = ctx.lot_locations.get(p["lot_id"])
        if location is not None:
            entity["location"] = _geo(location)
        if known:
            free = min(sum(known), total)
            entity["availableSpotNumber"] = _prop(free, observed)
            entity["occupiedSpotNumber"] = _prop(total - free, observed)
            entity["occupancy"] = _prop(round((total - free) / total, 4) if total else 0.0, observed)
        if observed:
            entity["occupancyModified"] = _prop(observed)
        return entity

    def _spot(self, p: dict[str, Any], ctx: RenderContext) -> dict[str, Any]:
        site_type = self._lot_type(p["lot_id"], ctx)
        entity: dict[str, Any] = {
            "id": f"urn:ngsi-ld:ParkingSpot:{p['lot_id']}:{p['spot_id']}", "type": "ParkingSpot",
            "status": _prop(vocab.NGSI_SPOT_STATUS[p["status"]], _utc(p["observed_at"])),
            "category": _prop(["onStreet" if site_type == "OnStreetParking" else "offStreet"]),
            "refParkingSite": {"type": "Relationship", "object": f"urn:ngsi-ld:{site_type}:{p['lot_id']}"},
        }
        if p.get("lat") is not None and p.get("lon") is not None:
            entity["location"] = _geo({"type": "Point", "coordinates": [p["lon"], p["lat"]]})
        elif (lot := ctx.lot_locations.get(p["lot_id"])) is not None:
            entity["location"] = _geo(lot)
        return entity

    def _charger(self, p: dict[str, Any]) -> dict[str, Any]:
        observed = _utc(p.get("observed_at") or p.get("received_at"))
        status = p["status"]
        station, connector = p["station_id"], p["connector_id"]
        entity: dict[str, Any] = {
            "id": f"urn:ngsi-ld:EVChargingStation:{station}:{connector}", "type": "EVChargingStation",
            "capacity": _prop(1),
            "availableCapacity": _prop(1 if status == "CONNECTOR_STATUS_AVAILABLE" else 0, observed),
            "socketType": _prop([vocab.NGSI_SOCKET_TYPE.get(str(p.get("standard")), "Other")]),
            "allowedVehicleType": _prop(["car"]),
            "status": _prop(vocab.NGSI_CHARGER_STATUS[status], observed),
            "chargingUnitId": _prop(connector),
            "v2xConnectorStatus": _prop(vocab.NGSI_CONNECTOR_STATUS[status], observed),
            "v2xStation": _prop(station),
        }
        if p.get("lat") is not None and p.get("lon") is not None:
            entity["location"] = _geo({"type": "Point", "coordinates": [p["lon"], p["lat"]]})
        if p.get("operator_id"):
            entity["operator"] = _prop(p["operator_id"])
        return entity

    def _charging_points(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        """A station's static data as its charging points' entities (one per connector, as charger_status names
        them): what the model says of a point that does not change with its status."""
        station = p["station_id"]
        shared: dict[str, Any] = {
            "type": "EVChargingStation", "name": _prop(p["name"]),
            "location": _geo({"type": "Point", "coordinates": [p["lon"], p["lat"]]}),
            "address": _prop({"streetAddress": p.get("address") or "", "addressCountry": "CN"}),
            "operator": _prop(p["operator_id"]), "dataProvider": _prop("v2x-suite"),
            "capacity": _prop(1), "socketNumber": _prop(1), "allowedVehicleType": _prop(["car"]),
            "v2xStation": _prop(station),
        }
        return [{"id": f"urn:ngsi-ld:EVChargingStation:{station}:{k['connector_id']}", **shared,
                 "socketType": _prop([vocab.NGSI_SOCKET_TYPE[k["standard"]]]),
                 "chargingUnitId": _prop(k["connector_id"]), "v2xMaxPowerKw": _prop(k["max_power_kw"])}
                for k in p["connectors"]]

    def body(self, docs: Sequence[Any]) -> bytes:
        return orjson.dumps(merge([e for d in docs for e in (d if isinstance(d, list) else [d])]))

    def wire(self, doc: Any) -> bytes:
        """One entity's JSON; a record of several entities (charger_static) is their JSON objects joined by commas,
        as they stand in the batch's array."""
        if isinstance(doc, list):
            return b",".join(orjson.dumps(e) for e in doc)
        return orjson.dumps(doc)

    def body_of(self, wires: Sequence[bytes]) -> bytes:
        ids = [i for w in wires for i in self.subjects(w)]
        if len(set(ids)) == len(ids):
            return b"[" + b",".join(wires) + b"]"
        return orjson.dumps(merge([e for w in wires for e in _entities(w)]))
