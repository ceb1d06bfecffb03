"""DATEX II v3.5 profile (`datex2_xml`): documents valid against the published XSD (`DATEXII_3_D2Payload.xsd`).

- lot_static: a `prk:Place` in a `prk:ParkingTablePublication` (name, location, supply = the lot's spaces, layout,
  opening times as `fac:OperatingHoursSpecification` or `fac:OpenAllHours`, the fee rule as a `fac:RateTable`,
  occupancy detection);
- lot_dynamic: a `prk:PlaceStatus` in a `prk:ParkingStatusPublication` (occupancy, status, `fac:lastUpdated`; a
  closed lot is `fac:openingStatus` closed, the standard's way to say it, since `ParkingPlaceStatusEnum` has no
  closed);
- spot_status: a `prk:SpaceStatus` (occupied true/false) in the same publication; a closed spot, or one whose
  state is unknown, is a plain `prk:ParkingStatusInformation` with `fac:openingStatus` closed / statusUnknown
  (SpaceStatus requires `occupied`, which is then not known);
- charger_static: an `egi:EnergyInfrastructureSite` (the station's site: name, address, location, operator, the
  parking lot it is in as an `egi:AssociatedParking`) holding its `egi:EnergyInfrastructureStation` and one
  `egi:ElectricChargingPoint` refill point per connector (plug type, charging mode, power), in an
  `egi:EnergyInfrastructureTablePublication`, as European access points publish charging points (the AFIR NAP
  profiles);
- charger_status: an `egi:EnergyInfrastructureSiteStatus` with its `egi:EnergyInfrastructureStationStatus` and the
  connector's `egi:RefillPointStatus`, in an `egi:EnergyInfrastructureStatusPublication`, referring to the ids the
  table declares (site and station: the station id; refill point: station:connector).
Entry/exit records have no DATEX II form and are not carried.

One request is one `d2:payload` (the lane never mixes publications in a request: `publication`). The request's
idempotency key and signature travel in headers (`Idempotency-Key`, `X-V2X-Signature`). Each record also names
its own delivery facts (key, kind, sequence, subject, change time) as a `v2x:delivery` element in the schema's
extension point of the record (`_facilityObjectExtension` / `_facilityObjectStatusExtension`, content the schema
lets any receiver ignore), so that a receiver can dedupe and order record by record. Times are UTC+8 with
offset; coordinates WGS-84.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from services.municipal import vocab
from services.municipal.checks import Checker
from services.municipal.local_times import local_time
from services.municipal.model import LOCAL_TZ, OutboxRecord
from services.municipal.profiles.base import Profile, RenderContext

NAMESPACES = {
    "d2": "http://datex2.eu/schema/3/d2Payload",
    "com": "http://datex2.eu/schema/3/common",
    "fac": "http://datex2.eu/schema/3/facilities",
    "prk": "http://datex2.eu/schema/3/parking",
    "egi": "http://datex2.eu/schema/3/energyInfrastructure",
    "loc": "http://datex2.eu/schema/3/locationReferencing",
    "xsi": "http://www.w3.org/2001/XMLSchema-instance",
    "v2x": "urn:v2x-suite:delivery:1",
}
_XMLNS = " ".join(f'xmlns:{k}="{v}"' for k, v in NAMESPACES.items())
_CREATOR = ("<com:publicationCreator><com:country>CN</com:country>"
            "<com:nationalIdentifier>v2x-suite</com:nationalIdentifier></com:publicationCreator>")

# The publication a kind goes in; a request carries one publication, so records of two never share one.
TABLE, STATUS = "ParkingTablePublication", "ParkingStatusPublication"
ENERGY_TABLE, ENERGY_STATUS = "EnergyInfrastructureTablePublication", "EnergyInfrastructureStatusPublication"
PUBLICATION = {"lot_static": TABLE, "lot_dynamic": STATUS, "spot_status": STATUS, "charger_static": ENERGY_TABLE,
               "charger_status": ENERGY_STATUS}
# The element each publication's records start with (how `body_of` tells a publication from its documents).
_OPENING = {TABLE: b"<prk:hierarchyElementGeneral ", STATUS: b"<prk:parkingStatusInformation ",
            ENERGY_TABLE: b"<egi:energyInfrastructureSite ", ENERGY_STATUS: b"<egi:energyInfrastructureSiteStatus>"}

_VERSION = re.compile(rb' version="([0-9]+)"')


def _table_version(wires: Sequence[bytes]) -> int:
    """A table's version (parking or energy): its newest record's, the outbox id of the latest static record in it."""
    return max(int(m) for w in wires for m in _VERSION.findall(w, 0, w.index(b">")))
_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _el(name: str, value: object) -> str:
    return f"<{name}>{escape(str(value))}</{name}>"


def _text(name: str, value: str) -> str:
    return f'<{name}><com:values><com:value lang="zh">{escape(value)}</com:value></com:values></{name}>'


def _time_of_day(minute: int) -> str:
    # xs:time has no 24:00: a period that ends at midnight ends at 23:59:59.
    return "23:59:59" if minute >= 1440 else f"{minute // 60:02d}:{minute % 60:02d}:00"


def _yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def _point(lat: float, lon: float) -> str:
    return ("<loc:pointByCoordinates><loc:pointCoordinates>"
            f"{_el('loc:latitude', round(lat, 6))}{_el('loc:longitude', round(lon, 6))}"
            "</loc:pointCoordinates></loc:pointByCoordinates>")


def publication_of(wire: bytes) -> str:
    """The publication one document (in wire form) belongs in."""
    for pub, opening in _OPENING.items():
        if wire.startswith(opening):
            return pub
    raise ValueError(f"not a DATEX II record of this profile: {wire[:60]!r}")


class Datex2Xml(Profile):
    name = "datex2_xml"
    carries = frozenset({"lot_static", "lot_dynamic", "spot_status", "charger_static", "charger_status"})
    content_type = "application/xml; charset=utf-8"

    def publication(self, kind: str) -> str:
        return PUBLICATION[kind]

    def _delivery(self, record: OutboxRecord, key: str) -> str:
        attrs = " ".join(f"{k}={quoteattr(str(v))}" for k, v in self.envelope(record, key).items())
        return f"<v2x:delivery {attrs}/>"

    def _map(self, c: Checker, record: OutboxRecord, key: str, ctx: RenderContext) -> Any:
        p = record.payload
        delivery = self._delivery(record, key)
        if record.kind == "lot_static":
            return self._place(p, record, delivery)
        if record.kind == "lot_dynamic":
            return self._place_status(c, p, delivery)
        if record.kind == "spot_status":
            return self._space_status(p, delivery)
        if record.kind == "charger_static":
            return self._charging_site(p, record, delivery)
        return self._charger_status(c, p, delivery)

    # ----- ParkingTablePublication --------------------------------------------------------------------------

    def _place(self, p: dict[str, Any], record: OutboxRecord, delivery: str) -> str:
        updated = record.created_at.astimezone(LOCAL_TZ).isoformat(timespec="seconds")
        version = str(record.id)
        lot = p["lot_id"]
        kind = p["lot_kind"]
        return (
            f'<prk:hierarchyElementGeneral xsi:type="prk:Place" id={quoteattr(lot)} version="{version}">'
            f"{_text('fac:name', p['name'])}"
            f"{_el('fac:lastUpdated', updated)}"
            + (_text("fac:description", p["address"]) if p.get("address") else "")
            + self._hours(p, lot, version, updated)
            + f'<fac:locationReference xsi:type="loc:PointLocation">{_point(p["lat"], p["lon"])}'
            "</fac:locationReference>"
            + self._rates(p["price"], lot, version)
            + f"<fac:_facilityObjectExtension>{delivery}</fac:_facilityObjectExtension>"
            "<prk:layer>0</prk:layer><prk:type>place</prk:type>"
            f"<prk:supply>{_el('prk:quantity', p['total_spaces'])}<prk:viewType>spaceView</prk:viewType></prk:supply>"
            f"{_el('prk:layout', vocab.DATEX_LAYOUT[kind])}"
            "<prk:commonComponents><prk:additionalCharacteristics>"
            f"{_el('prk:occupancyDetection', vocab.DATEX_DETECTION[p['detection_type']])}"
            "</prk:additionalCharacteristics></prk:commonComponents>"
            "</prk:hierarchyElementGeneral>")

    def _hours(self, p: dict[str, Any], lot: str, version: str, updated: str) -> str:
        if p["always_open"]:
            return '<fac:operatingHours xsi:type="fac:OpenAllHours"/>'
        # One valid period per distinct (open, close), with the days it applies to.
        by_time: dict[tuple[int, int], list[int]] = {}
        for o in p.get("opening_periods") or []:
            by_time.setdefault((o["open_minute"], o["close_minute"]), []).append(o["weekday"])
        periods = "".join(
            "<com:validPeriod><com:recurringTimePeriodOfDay xsi:type=\"com:TimePeriodOfDay\">"
            f"{_el('com:startTimeOfPeriod', _time_of_day(start))}{_el('com:endTimeOfPeriod', _time_of_day(end))}"
            "</com:recurringTimePeriodOfDay><com:recurringDayWeekMonthPeriod>"
            + "".join(_el("com:applicableDay", _DAYS[d - 1]) for d in sorted(set(days)))
            + "</com:recurringDayWeekMonthPeriod></com:validPeriod>"
            for (start, end), days in by_time.items())
        return (f'<fac:operatingHours xsi:type="fac:OperatingHoursSpecification" id={quoteattr(lot + ":hours")} '
                f'version="{version}"><fac:overallPeriod>{_el("com:overallStartTime", updated)}{periods}'
                "</fac:overallPeriod></fac:operatingHours>")

    def _rates(self, price: dict[str, Any], lot: str, version: str) -> str:
        """The fee rule as a rate table: a free band, the first hour, then each further hour, capped per day."""
        free = int(price.get("free_minutes", 0))
        first = int(price.get("first_hour_fen", 0))
        hourly = int(price.get("per_hour_fen", 0))
        cap = int(price.get("daily_cap_fen", 0))
        if not (first or hourly):
            return ('<fac:rates xsi:type="fac:FreeOfCharge"><fac:applicableCurrency>CNY</fac:applicableCurrency>'
                    "</fac:rates>")
        collections = []
        bands: list[tuple[int, int | None, str]] = []
        if free:
            bands.append((0, free, '<fac:rateLine sequence="1"><fac:rateLineType>flatRate</fac:rateLineType>'
                                   "<fac:value>0.00</fac:value></fac:rateLine>"))
        if first:
            bands.append((free, max(60, free), '<fac:rateLine sequence="1"><fac:rateLineType>flatRate'
                                               f"</fac:rateLineType><fac:value>{_yuan(first)}</fac:value></fac:rateLine>"))
        if hourly:
            bands.append((max(60, free) if first else free, None,
                          '<fac:rateLine sequence="1"><fac:rateLineType>incrementingRate</fac:rateLineType>'
                          f"<fac:incrementPeriod>PT1H</fac:incrementPeriod><fac:value>{_yuan(hourly)}</fac:value>"
                          "</fac:rateLine>"))
        for i, (start, end, line) in enumerate(bands, 1):
            collections.append(
                f'<fac:rateLineCollection collectionSequence="{i}"><fac:applicableCurrency>CNY</fac:applicableCurrency>'
                + (f"<fac:maxValueCollection>{_yuan(cap)}</fac:maxValueCollection>" if cap else "")
                + f"<fac:minTime>PT{start}M</fac:minTime>"
                + (f"<fac:maxTime>PT{end}M</fac:maxTime>" if end is not None else "")
                + line + "</fac:rateLineCollection>")
        description = _text("fac:rateTableName", price["description"]) if price.get("description") else ""
        return (f'<fac:rates xsi:type="fac:RateTable" id={quoteattr(lot + ":rates")} version="{version}">'
                f"<fac:applicableCurrency>CNY</fac:applicableCurrency>{description}{''.join(collections)}"
                "</fac:rates>")

    # ----- ParkingStatusPublication -------------------------------------------------------------------------

    def _place_status(self, c: Checker, p: dict[str, Any], delivery: str) -> str:
        origin = local_time(p.get("observed_at") or p.get("received_at"))
        if origin is None:
            c.fail("observed_at", "DATEX II needs the time of the status (observed_at or received_at)")
        total = sum(p["capacity"].values())
        known = [v for v in p["free"].values() if v is not None]
        status = p["status"]
        occupancy = ""
        if known:
            vacant = sum(known)
            occupied = max(total - vacant, 0)
            occupancy = (f"<prk:occupancy>{_el('prk:numberOfSpacesOverride', total)}"
                         f"{_el('prk:numberOfVacantSpaces', vacant)}{_el('prk:numberOfOccupiedSpaces', occupied)}"
                         f"{_el('prk:occupancy', round(100.0 * occupied / total, 1) if total else 0.0)}"
                         "</prk:occupancy>")
        place_status = vocab.DATEX_PLACE_STATUS.get(status)
        return (
            '<prk:parkingStatusInformation xsi:type="prk:PlaceStatus">'
            f'<fac:reference targetClass="fac:FacilityObject" id={quoteattr(p["lot_id"])}/>'
            f"{_el('fac:lastUpdated', origin)}"
            f"{_el('fac:openingStatus', vocab.DATEX_OPENING_STATUS[status])}"
            f"<fac:_facilityObjectStatusExtension>{delivery}</fac:_facilityObjectStatusExtension>"
            f"{occupancy}"
            + (_el("prk:status", place_status) if place_status else "")
            + "</prk:parkingStatusInformation>")

    def _space_status(self, p: dict[str, Any], delivery: str) -> str:
        ref = quoteattr(f"{p['lot_id']}:{p['spot_id']}")
        status = p["status"]
        head = (f'<fac:reference targetClass="fac:FacilityObject" id={ref}/>'
                f"{_el('fac:lastUpdated', local_time(p['observed_at']))}")
        extension = f"<fac:_facilityObjectStatusExtension>{delivery}</fac:_facilityObjectStatusExtension>"
        occupied = vocab.DATEX_SPACE_OCCUPIED.get(status)
        if occupied is None:
            # Closed, or not known: the facility's opening status says it; SpaceStatus would need `occupied`.
            return ('<prk:parkingStatusInformation xsi:type="prk:ParkingStatusInformation">'
                    f"{head}{_el('fac:openingStatus', vocab.DATEX_SPACE_OPENING_STATUS[status])}{extension}"
                    "</prk:parkingStatusInformation>")
        return (f'<prk:parkingStatusInformation xsi:type="prk:SpaceStatus">{head}'
                f"<fac:openingStatus>open</fac:openingStatus>{extension}"
                f"{_el('prk:occupied', 'true' if occupied else 'false')}</prk:parkingStatusInformation>")

    # ----- EnergyInfrastructureTablePublication --------------------------------------------------------------

    def _charging_site(self, p: dict[str, Any], record: OutboxRecord, delivery: str) -> str:
        """The station as a site of its own (one station each: a record replaces the whole site at the receiver, so
        two stations in one parking lot must not share one), the lot it is in as its associated parking."""
        station = p["station_id"]
        version = str(record.id)
        updated = _el("fac:lastUpdated", local_time(p["updated_at"]))
        head = (f"{_text('fac:name', p['name'])}{updated}"
                + (_text("fac:description", p["address"]) if p.get("address") else "")
                + f'<fac:locationReference xsi:type="loc:PointLocation">{_point(p["lat"], p["lon"])}'
                "</fac:locationReference>"
                '<fac:operator xsi:type="fac:OrganisationByReference"><fac:organisationReference '
                f'targetClass="fac:OrganisationSpecification" id={quoteattr(p["operator_id"])}/></fac:operator>')
        lot = p.get("parking_lot_id")
        parking = ('<fac:associatedFacility xsi:type="egi:AssociatedParking"><fac:type>parkingSite</fac:type>'
                   f'<fac:facilityReference targetClass="fac:FacilityObject" id={quoteattr(lot)}/>'
                   "</fac:associatedFacility>") if lot else ""
        points = "".join(self._charging_point(station, lot, k, version, updated) for k in p["connectors"])
        return (
            f'<egi:energyInfrastructureSite id={quoteattr(station)} version="{version}">{head}{parking}'
            f"<fac:_facilityObjectExtension>{delivery}</fac:_facilityObjectExtension>"
            f'<egi:energyInfrastructureStation id={quoteattr(station)} version="{version}">{head}'
            f"{_el('egi:numberOfRefillPoints', len(p['connectors']))}{points}"
            "</egi:energyInfrastructureStation></egi:energyInfrastructureSite>")

    def _charging_point(self, station: str, lot: str | None, k: dict[str, Any], version: str, updated: str) -> str:
        """One connector as a refill point (the unit the status publication reports on), its EVSE as the external
        identifier (the connectors of one EVSE share it), the parking spot it charges as its vehicle space (id
        lot:spot, as the parking status publication names spots)."""
        standard = k["standard"]
        watts = round(float(k["max_power_kw"]) * 1000, 1)
        other = vocab.DATEX_OTHER_CONNECTOR.get(standard)
        mode = vocab.DATEX_CHARGING_MODE.get(standard)
        spot = k.get("parking_spot_id")
        return (
            f'<egi:refillPoint xsi:type="egi:ElectricChargingPoint" id={quoteattr(station + ":" + k["connector_id"])} '
            f'version="{version}">{_el("fac:externalIdentifier", k["evse_id"])}{updated}'
            "<egi:deliveryUnit>kWh</egi:deliveryUnit><egi:usageType>electricVehicle</egi:usageType>"
            f"{_el('egi:availableChargingPower', watts)}"
            f"<egi:connector>{_el('egi:connectorType', vocab.DATEX_CONNECTOR_TYPE[standard])}"
            + (_el("egi:otherConnector", other) if other else "")
            + (_el("egi:chargingMode", mode) if mode else "")
            + f"{_el('egi:maxPowerAtSocket', watts)}</egi:connector>"
            + (f'<egi:vehicleSpace id={quoteattr(f"{lot}:{spot}" if lot else spot)} version="{version}"/>'
               if spot else "")
            + "</egi:refillPoint>")

    # ----- EnergyInfrastructureStatusPublication -------------------------------------------------------------

    def _charger_status(self, c: Checker, p: dict[str, Any], delivery: str) -> str:
        # The site is the station's own, as the table declares it (see _charging_site).
        station = p["station_id"]
        observed = local_time(p.get("observed_at"))
        updated = _el("fac:lastUpdated", observed) if observed else ""
        status = vocab.DATEX_REFILL_POINT_STATUS[p["status"]]
        return (
            "<egi:energyInfrastructureSiteStatus>"
            f'<fac:reference targetClass="fac:FacilityObject" id={quoteattr(station)}/>{updated}'
            f"<fac:_facilityObjectStatusExtension>{delivery}</fac:_facilityObjectStatusExtension>"
            "<egi:energyInfrastructureStationStatus>"
            f'<fac:reference targetClass="fac:FacilityObject" id={quoteattr(station)}/>{updated}'
            "<egi:refillPointStatus>"
            f'<fac:reference targetClass="fac:FacilityObject" id={quoteattr(station + ":" + p["connector_id"])}/>'
            f"{updated}{_el('egi:status', status)}"
            "</egi:refillPointStatus></egi:energyInfrastructureStationStatus></egi:energyInfrastructureSiteStatus>")

    # ----- bodies --------------------------------------------------------------------------------------------

    def body(self, docs: Sequence[Any]) -> bytes:
        return self.body_of([self.wire(d) for d in docs])

    def wire(self, doc: Any) -> bytes:
        return str(doc).encode()

    def body_of(self, wires: Sequence[bytes]) -> bytes:
        """One `d2:payload` holding the documents, all of one publication (the lane never mixes them)."""
        if not wires:
            raise ValueError("a DATEX II payload needs at least one record")
        pub = publication_of(wires[0])
        if any(publication_of(w) != pub for w in wires[1:]):
            raise ValueError("a DATEX II payload holds one publication: its records were mixed")
        now = datetime.now(LOCAL_TZ).isoformat(timespec="seconds")
        creator = f"{_el('com:publicationTime', now)}{_CREATOR}"
        if pub == TABLE:
            version = _table_version(wires)
            head = (f'<d2:payload {_XMLNS} xsi:type="prk:ParkingTablePublication" lang="zh" modelBaseVersion="3">'
                    f'{creator}<prk:parkingTable id={quoteattr("v2x-" + self.destination.name)} '
                    f'version="{version}">{_el("prk:versionTime", now)}')
            tail = "</prk:parkingTable></d2:payload>"
        elif pub == STATUS:
            head = (f'<d2:payload {_XMLNS} xsi:type="prk:ParkingStatusPublication" lang="zh" modelBaseVersion="3">'
                    f"{creator}")
            tail = "</d2:payload>"
        elif pub == ENERGY_TABLE:
            version = _table_version(wires)
            head = (f'<d2:payload {_XMLNS} xsi:type="egi:EnergyInfrastructureTablePublication" lang="zh" '
                    f'modelBaseVersion="3">{creator}<egi:energyInfrastructureTable '
                    f'id={quoteattr("v2x-" + self.destination.name + "-charging")} version="{version}">')
            tail = "</egi:energyInfrastructureTable></d2:payload>"
        else:
            head = (f'<d2:payload {_XMLNS} xsi:type="egi:EnergyInfrastructureStatusPublication" lang="zh" '
                    f'modelBaseVersion="3">{creator}')
            tail = "</d2:payload>"
        return b'<?xml version="1.0" encoding="UTF-8"?>\n' + head.encode() + b"".join(wires) + tail.encode()
