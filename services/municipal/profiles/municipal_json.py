"""The city platform's JSON profile (public-parking information networking, GB/T 29745 family).

One POST carries a batch: {"version": "1.0", "source": "v2x-suite", "records": [record, ...]}; each
record is {"idempotencyKey", "recordType", "sequence", "aggregateId", "changedAt", "data"}. Field
mapping of `data` per record type (the full table with code lists is in services/municipal/PROFILES.md):

lot_static   parkCode, parkName, address, regionCode (6 digits), streetCode (9/12 digits or ""),
             coordinateSystem ("WGS84" | "GCJ02", per destination), longitude, latitude (6 decimals),
             parkType, operatorCode, entrances[{code, longitude, latitude, type 1 in / 2 out / 3 both}],
             totalBerths, evBerths, disabledBerths, reservableBerths, openAllDay,
             openingHours[{weekday 1-7, open "HH:MM", close "HH:MM"}], publicBerths, feeRule{freeMinutes,
             firstHourFen, perHourFen, dailyCapFen, description, periods[{start, end, bands[{fromMinute,
             toMinute, feeFen, unitMinutes}]}]}, detectionType, phone, fastChargingPiles, slowChargingPiles
lot_dynamic  parkCode, totalBerths, freeBerths (null when no class is known), berthClasses[{berthClass,
             total, free}], parkStatus, observedTime, uploadTime, sequence
spot_status  parkCode, berthCode, berthClass, berthStatus, observedTime; coordinateSystem, latitude, longitude
             when the berth has coordinates (on-street)
passage      parkCode, recordId, direction (1 in, 2 out), plateNo + plateNoPolicy (per destination:
             full / masked / hashed / none), plateColor, laneCode, berthClass, passTime, operateType (1 new,
             2 correction, 3 void), originalRecordId (the amended recordId; null when new), revision,
             amendReason (plate numbers in it go out as plateNo does), amendTime (null when new); an exit
             matched to its entry: entryRecordId, entryTime, parkingDuration (s), feeFen (null otherwise).
             plateColor by the destination's plate_colour_codes over the default table
charger_status stationCode, connectorCode, connectorStatus, errorCode, observedTime
charger_static stationCode, stationName, operatorCode, address, coordinateSystem, latitude, longitude, parkCode
             (the lot it is in, or null), version, updateTime, connectors[{connectorCode, equipmentCode (the
             EVSE), connectorType (T/CEC 102: 3 AC, 4 DC), connectorStandard (GBT_AC, GBT_DC, CCS2, TYPE2,
             CHADEMO), power (kW), electricityFeeFen, serviceFeeFen (per kWh), berthCode (or null)}]

Times are local (UTC+8) ISO-8601 with offset. The platform's rules checked here: a lot needs a
6/9/12-digit region code and a name of at most 100 characters; an entry/exit record needs a plate colour,
and a full plate must be a mainland plate number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from services.municipal import plates, vocab
from services.municipal.checks import Checker
from services.municipal.coords import wgs84_to_gcj02
from services.municipal.fastpath import FastWire
from services.municipal.local_times import local_time
from services.municipal.model import KINDS, OutboxRecord
from services.municipal.native import fastpath
from services.municipal.profiles.base import Profile, RenderContext
from services.municipal.settings import MunicipalDestination

# passage record_type -> operateType: the platform replaces (2) or withdraws (3) the record originalRecordId.
_OPERATE_TYPE = {"normal": 1, "correction": 2, "void": 3}


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def fee_rule(price: dict[str, Any]) -> dict[str, Any]:
    """The lot's fee rule: the flat fields, and the same as periods of the day with duration bands (the form city
    rules publish: a band from minute N to M costs feeFen, once, or per unitMinutes begun). The suite's lots have
    one rule all day."""
    free = int(price.get("free_minutes", 0))
    first, hourly = int(price.get("first_hour_fen", 0)), int(price.get("per_hour_fen", 0))
    bands: list[dict[str, Any]] = []
    if free:
        bands.append({"fromMinute": 0, "toMinute": free, "feeFen": 0, "unitMinutes": None})
    if first:
        bands.append({"fromMinute": free, "toMinute": max(60, free), "feeFen": first, "unitMinutes": None})
    if hourly or not bands:
        bands.append({"fromMinute": max(60, free) if first else free, "toMinute": None, "feeFen": hourly,
                      "unitMinutes": 60})
    return {"freeMinutes": free, "firstHourFen": first, "perHourFen": hourly,
            "dailyCapFen": int(price.get("daily_cap_fen", 0)), "description": price.get("description", ""),
            "periods": [{"start": "00:00", "end": "24:00", "bands": bands}]}


class MunicipalJson(Profile):
    name = "municipal_json"
    carries = frozenset(KINDS)
    content_type = "application/json; charset=utf-8"
    offers_counts = True

    def _point(self, lat: float, lon: float) -> tuple[float, float]:
        if self.destination.coordinate_system == "GCJ02":
            lat, lon = wgs84_to_gcj02(lat, lon)
        return round(lat, 6), round(lon, 6)

    def __init__(self, destination: MunicipalDestination) -> None:
        super().__init__(destination)
        self.plate_colours = {**vocab.MUNICIPAL_PLATE_COLOUR, **destination.plate_colour_codes}

    def _map(self, c: Checker, record: OutboxRecord, key: str, ctx: RenderContext) -> Any:
        p = record.payload
        data = getattr(self, f"_{record.kind}")(c, p)
        return {**self.envelope(record, key), "data": data}

    def _lot_static(self, c: Checker, p: dict[str, Any]) -> dict[str, Any]:
        region = p.get("region_code") or ""
        if not region:
            c.fail("region_code", "the platform needs the lot's administrative region code")
        if len(p["name"]) > 100:
            c.fail("name", "the platform takes at most 100 characters")
        lat, lon = self._point(p["lat"], p["lon"])
        cap = p["capacity"]
        entrances = []
        for e in p.get("entrances") or []:
            elat, elon = self._point(e["lat"], e["lon"])
            entrances.append({"code": e["id"], "latitude": elat, "longitude": elon,
                              "type": 3 if e.get("entry") and e.get("exit") else (1 if e.get("entry") else 2)})
        price = p["price"]
        return {
            "parkCode": p["lot_id"], "parkName": p["name"], "address": p.get("address", ""),
            "regionCode": region[:6], "streetCode": region if len(region) > 6 else "",
            "coordinateSystem": self.destination.coordinate_system, "latitude": lat, "longitude": lon,
            "parkType": vocab.MUNICIPAL_PARK_TYPE[p["lot_kind"]], "operatorCode": p["operator_id"],
            "entrances": entrances, "totalBerths": p["total_spaces"], "evBerths": cap.get("ev", 0),
            "disabledBerths": cap.get("disabled", 0), "reservableBerths": cap.get("reserved", 0),
            "openAllDay": p["always_open"],
            "openingHours": [{"weekday": o["weekday"], "open": _hhmm(o["open_minute"]),
                              "close": _hhmm(o["close_minute"] % 1440)} for o in p.get("opening_periods") or []],
            "publicBerths": p["public_spaces"] if p.get("public_spaces") is not None else p["total_spaces"],
            "feeRule": fee_rule(price),
            "detectionType": vocab.MUNICIPAL_DETECTION[p["detection_type"]], "phone": p.get("phone", ""),
            # Records written before the suite kept piles carry none: 0, as the lot then read.
            "fastChargingPiles": p.get("fast_charging_piles") or 0,
            "slowChargingPiles": p.get("slow_charging_piles") or 0,
        }

    def _lot_dynamic(self, c: Checker, p: dict[str, Any]) -> dict[str, Any]:
        cap: dict[str, int] = p["capacity"]
        free: dict[str, int | None] = p["free"]
        known = [v for v in free.values() if v is not None]
        return {
            "parkCode": p["lot_id"], "totalBerths": sum(cap.values()),
            "freeBerths": sum(known) if known else None,
            "berthClasses": [{"berthClass": vocab.MUNICIPAL_BERTH_CLASS[name], "total": total,
                              "free": free.get(name)} for name, total in cap.items() if total > 0],
            "parkStatus": vocab.MUNICIPAL_PARK_STATUS[p["status"]],
            "observedTime": local_time(p.get("observed_at")), "uploadTime": local_time(p.get("received_at")),
            "sequence": p.get("sequence", 0),
        }

    def _spot_status(self, c: Checker, p: dict[str, Any]) -> dict[str, Any]:
        data = {"parkCode": p["lot_id"], "berthCode": p["spot_id"],
                "berthClass": vocab.MUNICIPAL_BERTH_CLASS[p["space_class"]],
                "berthStatus": vocab.MUNICIPAL_BERTH_STATUS[p["status"]], "observedTime": local_time(p["observed_at"])}
        if p.get("lat") is not None and p.get("lon") is not None:
            # An on-street berth's own place, in the destination's coordinate system.
            lat, lon = self._point(p["lat"], p["lon"])
            data.update({"coordinateSystem": self.destination.coordinate_system, "latitude": lat, "longitude": lon})
        return data

    def _passage(self, c: Checker, p: dict[str, Any]) -> dict[str, Any]:
        policy = self.destination.plate_policy
        colour = p.get("plate_colour")
        if colour not in self.plate_colours:
            c.fail("plate_colour", "the platform needs the plate colour of an entry/exit record")
        if policy == "full" and not plates.is_mainland_plate(p["plate"]):
            c.fail("plate", "is not a mainland plate number, which a full-plate record must carry")
        record_type = p.get("record_type") or "normal"
        amended = record_type != "normal"
        return {"parkCode": p["lot_id"], "recordId": p["passage_id"],
                "direction": vocab.MUNICIPAL_DIRECTION[p["direction"]],
                "plateNo": plates.apply(policy, p["plate"], self.destination.secret), "plateNoPolicy": policy,
                "plateColor": self.plate_colours.get(colour or "", self.plate_colours["PLATE_COLOUR_OTHER"]),
                "laneCode": p.get("lane", ""),
                "berthClass": vocab.MUNICIPAL_BERTH_CLASS[p["space_class"]], "passTime": local_time(p["passed_at"]),
                "operateType": _OPERATE_TYPE[record_type],
                "originalRecordId": p["original_passage_id"] if amended else None,
                "revision": p["revision"] if amended else 0,
                "amendReason": self._reason(p["reason"]) if amended else "",
                "amendTime": local_time(p["amended_at"]) if amended else None,
                # An exit matched to its entry: the stay (null for entries and unmatched exits).
                "entryRecordId": p.get("entry_passage_id"), "entryTime": local_time(p.get("entry_passed_at")),
                "parkingDuration": p.get("duration_s"), "feeFen": p.get("fee_fen")}

    def _reason(self, reason: str) -> str:
        """An amendment's reason with every plate number in it as the destination's plate policy sends plates."""
        policy = self.destination.plate_policy
        if policy == "full":
            return reason
        return plates.MAINLAND_PLATE.sub(
            lambda m: plates.apply(policy, m.group(), self.destination.secret) or "***", reason)

    def _charger_status(self, c: Checker, p: dict[str, Any]) -> dict[str, Any]:
        return {"stationCode": p["station_id"], "connectorCode": p["connector_id"],
                "connectorStatus": vocab.MUNICIPAL_CONNECTOR_STATUS[p["status"]],
                "errorCode": str(p.get("error_code") or "").removeprefix("CONNECTOR_ERROR_CODE_"),
                "observedTime": local_time(p.get("observed_at"))}

    def _charger_static(self, c: Checker, p: dict[str, Any]) -> dict[str, Any]:
        lat, lon = self._point(p["lat"], p["lon"])
        return {
            "stationCode": p["station_id"], "stationName": p["name"], "operatorCode": p["operator_id"],
            "address": p.get("address") or "", "coordinateSystem": self.destination.coordinate_system,
            "latitude": lat, "longitude": lon, "parkCode": p.get("parking_lot_id"), "version": p["version"],
            "updateTime": local_time(p["updated_at"]),
            "connectors": [{"connectorCode": k["connector_id"], "equipmentCode": k["evse_id"],
                            "connectorType": vocab.MUNICIPAL_CONNECTOR_TYPE[k["standard"]],
                            "connectorStandard": k["standard"].removeprefix("CONNECTOR_STANDARD_"),
                            "power": k["max_power_kw"], "electricityFeeFen": k.get("price_per_kwh_fen", 0),
                            "serviceFeeFen": k.get("service_fee_per_kwh_fen", 0),
                            "berthCode": k.get("parking_spot_id")} for k in p["connectors"]],
        }

    # ----- fast paths: the checks of checks.py and the mappings above, straight-line, for the frequent kinds -----
    # The writers live in services/municipal/fastpath.py (compiled with mypyc where it can be), behind `wires`.

    def fast_wires(self) -> Mapping[str, FastWire]:
        return {"lot_dynamic": fastpath.wire_lot_dynamic, "spot_status": fastpath.wire_spot_status}

    def _envelope_of_batch(self, records: list[Any]) -> dict[str, Any]:
        return {"version": "1.0", "source": "v2x-suite", "destination": self.destination.name, "records": records}

    def body(self, docs: Sequence[Any]) -> bytes:
        return orjson.dumps(self._envelope_of_batch(docs if isinstance(docs, list) else list(docs)))

    def wire(self, doc: Any) -> bytes:
        return orjson.dumps(doc)

    def body_of(self, wires: Sequence[bytes]) -> bytes:
        empty = orjson.dumps(self._envelope_of_batch([]))  # ...,"records":[]}
        return empty[:-2] + b",".join(wires) + empty[-2:]

    def counts_url(self) -> str | None:
        if self.destination.reconcile_url:
            return self.destination.reconcile_url
        # By convention the platform answers counts beside the records endpoint: .../records -> .../counts.
        parts = urlsplit(self.destination.url)
        path = parts.path.rsplit("/", 1)[0] + "/counts"
        return urlunsplit((parts.scheme, parts.netloc, path, "", ""))

