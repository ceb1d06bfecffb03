"""DATEX II (v3, Parking namespace) XML profile: static lot data as a ParkingTablePublication, lot
dynamic data and spot status as a ParkingStatusPublication. Entry/exit records (with their corrections and
voids) and charger status have no DATEX II parking form and are not carried; nor are a lot's fast/slow charging
pile counts (DATEX II knows charging only as an `electricChargingStation` facility, without that split:
destinations that need the counts take the municipal JSON or NGSI-LD profile).

One POST carries a batch: <v2x:batch> with one <v2x:record> per record (its idempotency key, kind,
sequence, subject and change time as attributes), each holding one DATEX II <d2:payload>. Coordinates
are WGS-84 (DATEX II pointCoordinates), times UTC+8 with offset. The element names follow the DATEX II v3
parking model; the official XSD is not bundled here, so each record is checked by the rules below and
each body is checked to be well-formed XML in the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from services.municipal import vocab
from services.municipal.checks import Checker
from services.municipal.model import LOCAL_TZ, OutboxRecord
from services.municipal.profiles.base import Profile, RenderContext, local_time

NAMESPACES = {
    "v2x": "urn:v2x-suite:delivery:1",
    "d2": "http://datex2.eu/schema/3/d2Payload",
    "com": "http://datex2.eu/schema/3/common",
    "prk": "http://datex2.eu/schema/3/parking",
    "loc": "http://datex2.eu/schema/3/locationReferencing",
    "xsi": "http://www.w3.org/2001/XMLSchema-instance",
}
_HEAD = ('<?xml version="1.0" encoding="UTF-8"?>\n<v2x:batch '
         + " ".join(f'xmlns:{k}="{v}"' for k, v in NAMESPACES.items()) + ">")
_CREATOR = ("<com:publicationCreator><com:country>cn</com:country>"
            "<com:nationalIdentifier>v2x-suite</com:nationalIdentifier></com:publicationCreator>")


def _el(name: str, value: object) -> str:
    return f"<{name}>{escape(str(value))}</{name}>"


class Datex2Xml(Profile):
    name = "datex2_xml"
    carries = frozenset({"lot_static", "lot_dynamic", "spot_status"})
    content_type = "application/xml; charset=utf-8"

    def _map(self, c: Checker, record: OutboxRecord, key: str, ctx: RenderContext) -> Any:
        env = self.envelope(record, key)
        attrs = " ".join(f"{k}={quoteattr(str(v))}" for k, v in env.items())
        published = record.created_at.astimezone(LOCAL_TZ).isoformat(timespec="seconds")
        p = record.payload
        if record.kind == "lot_static":
            inner = self._table(p, record, published)
        elif record.kind == "lot_dynamic":
            inner = self._site_status(c, p, published)
        else:
            inner = self._space_status(p, published)
        return f"<v2x:record {attrs}>{inner}</v2x:record>"

    def _table(self, p: dict[str, Any], record: OutboxRecord, published: str) -> str:
        return (
            '<d2:payload xsi:type="prk:ParkingTablePublication" lang="zh" modelBaseVersion="3">'
            f"{_el('com:publicationTime', published)}{_CREATOR}"
            f'<prk:parkingTable id={quoteattr("v2x-" + self.destination.name)} version="1">'
            f'<prk:parkingRecord xsi:type="prk:UrbanParkingSite" id={quoteattr(p["lot_id"])} '
            f'version="{record.id}">'
            f'<prk:parkingName><com:values><com:value lang="zh">{escape(p["name"])}</com:value></com:values>'
            "</prk:parkingName>"
            f"{_el('prk:parkingRecordVersionTime', published)}"
            f"{_el('prk:parkingNumberOfSpaces', p['total_spaces'])}"
            '<prk:parkingLocation xsi:type="loc:PointLocation"><loc:pointByCoordinates><loc:pointCoordinates>'
            f"{_el('loc:latitude', round(p['lat'], 6))}{_el('loc:longitude', round(p['lon'], 6))}"
            "</loc:pointCoordinates></loc:pointByCoordinates></prk:parkingLocation>"
            f"{_el('prk:occupancyDetectionType', vocab.STANDARD_DETECTION[p['detection_type']])}"
            f"{_el('prk:urbanParkingSiteType', vocab.DATEX_SITE_TYPE[p['lot_kind']])}"
            "</prk:parkingRecord></prk:parkingTable></d2:payload>")

    def _site_status(self, c: Checker, p: dict[str, Any], published: str) -> str:
        total = sum(p["capacity"].values())
        known = [v for v in p["free"].values() if v is not None]
        origin = local_time(p.get("observed_at") or p.get("received_at"))
        if origin is None:
            c.fail("observed_at", "DATEX II needs a status origin time (observed_at or received_at)")
        occupancy = f"{_el('prk:parkingNumberOfSpacesOverride', total)}"
        if known:
            vacant = sum(known)
            occupancy += (f"{_el('prk:parkingNumberOfVacantSpaces', vacant)}"
                          f"{_el('prk:parkingNumberOfOccupiedSpaces', max(total - vacant, 0))}"
                          f"{_el('prk:parkingOccupancy', round(100.0 * (total - vacant) / total, 1))}")
        return (
            '<d2:payload xsi:type="prk:ParkingStatusPublication" lang="zh" modelBaseVersion="3">'
            f"{_el('com:publicationTime', published)}{_CREATOR}"
            '<prk:parkingRecordStatus xsi:type="prk:ParkingSiteStatus">'
            f'<prk:parkingRecordReference targetClass="prk:ParkingRecord" id={quoteattr(p["lot_id"])} version="1"/>'
            f"{_el('prk:parkingStatusOriginTime', origin)}"
            f"<prk:parkingOccupancy>{occupancy}</prk:parkingOccupancy>"
            f"{_el('prk:parkingSiteStatus', vocab.DATEX_SITE_STATUS[p['status']])}"
            "</prk:parkingRecordStatus></d2:payload>")

    def _space_status(self, p: dict[str, Any], published: str) -> str:
        ref = f"{p['lot_id']}:{p['spot_id']}"
        return (
            '<d2:payload xsi:type="prk:ParkingStatusPublication" lang="zh" modelBaseVersion="3">'
            f"{_el('com:publicationTime', published)}{_CREATOR}"
            '<prk:parkingRecordStatus xsi:type="prk:ParkingSpaceStatus">'
            f'<prk:parkingRecordReference targetClass="prk:ParkingSpace" id={quoteattr(ref)} version="1"/>'
            f"{_el('prk:parkingStatusOriginTime', local_time(p['observed_at']))}"
            f"{_el('prk:parkingSpaceStatus', vocab.DATEX_SPACE_STATUS[p['status']])}"
            "</prk:parkingRecordStatus></d2:payload>")

    def body(self, docs: Sequence[Any]) -> bytes:
        return (_HEAD + "".join(docs) + "</v2x:batch>").encode()

    def wire(self, doc: Any) -> bytes:
        return str(doc).encode()

    def body_of(self, wires: Sequence[bytes]) -> bytes:
        return _HEAD.encode() + b"".join(wires) + b"</v2x:batch>"
