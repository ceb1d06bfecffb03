"""Every mapping between the suite's vocabulary (outbox payloads: proto enum names) and the
destination profiles' vocabularies, in one place. Each table has a test that it covers every value.

Sources: docs/DOMAIN.md (DATEX II site status and detection types, FIWARE ParkingSpot status, OCPP
connector states), the GB/T 29745 family of city platform uploads for the municipal JSON codes, and the
Chinese EV charging interconnection convention for connector status codes (0 offline, 1 idle,
2 occupied not charging, 3 charging, 4 reserved, 255 fault).
"""

from __future__ import annotations

from collections.abc import Mapping

# ----- space classes (payload names: general, ev, disabled, reserved) -------------------------------
SPACE_CLASSES = ("general", "ev", "disabled", "reserved")
MUNICIPAL_BERTH_CLASS: Mapping[str, int] = {"general": 1, "ev": 2, "disabled": 3, "reserved": 4}

# ----- lot kinds ---------------------------------------------------------------------------------------
LOT_KINDS = ("LOT_KIND_GARAGE", "LOT_KIND_SURFACE_LOT", "LOT_KIND_ON_STREET_SEGMENT")
MUNICIPAL_PARK_TYPE: Mapping[str, int] = {
    "LOT_KIND_GARAGE": 1, "LOT_KIND_SURFACE_LOT": 2, "LOT_KIND_ON_STREET_SEGMENT": 3}
# DATEX II v3 prk:LayoutEnum.
DATEX_LAYOUT: Mapping[str, str] = {
    "LOT_KIND_GARAGE": "building", "LOT_KIND_SURFACE_LOT": "openSpace", "LOT_KIND_ON_STREET_SEGMENT": "layBy"}
NGSI_LOT_TYPE: Mapping[str, str] = {
    "LOT_KIND_GARAGE": "OffStreetParking", "LOT_KIND_SURFACE_LOT": "OffStreetParking",
    "LOT_KIND_ON_STREET_SEGMENT": "OnStreetParking"}
# Smart Data Models category: OffStreetParking has parkingGarage / parkingLot; OnStreetParking has no category for
# being on the street (its type says it).
NGSI_LOT_CATEGORY: Mapping[str, str | None] = {
    "LOT_KIND_GARAGE": "parkingGarage", "LOT_KIND_SURFACE_LOT": "parkingLot", "LOT_KIND_ON_STREET_SEGMENT": None}
# OffStreetParking layout.
NGSI_LOT_LAYOUT: Mapping[str, str] = {
    "LOT_KIND_GARAGE": "multiStorey", "LOT_KIND_SURFACE_LOT": "surface", "LOT_KIND_ON_STREET_SEGMENT": "openSpace"}

# ----- detection types ----------------------------------------------------------------------------------
DETECTION_TYPES = ("DETECTION_TYPE_NONE", "DETECTION_TYPE_BALANCING", "DETECTION_TYPE_SINGLE_SPACE",
                   "DETECTION_TYPE_MODEL_BASED", "DETECTION_TYPE_MANUAL")
MUNICIPAL_DETECTION: Mapping[str, int] = {
    "DETECTION_TYPE_NONE": 0, "DETECTION_TYPE_BALANCING": 1, "DETECTION_TYPE_SINGLE_SPACE": 2,
    "DETECTION_TYPE_MODEL_BASED": 3, "DETECTION_TYPE_MANUAL": 4}
# DATEX II and FIWARE share these names (docs/DOMAIN.md "Parking").
STANDARD_DETECTION: Mapping[str, str] = {
    "DETECTION_TYPE_NONE": "none", "DETECTION_TYPE_BALANCING": "balancing",
    "DETECTION_TYPE_SINGLE_SPACE": "singleSpaceDetection", "DETECTION_TYPE_MODEL_BASED": "modelBased",
    "DETECTION_TYPE_MANUAL": "manual"}

# DATEX II v3 prk:ParkingSpaceOccupancyDetectionEnum: a sensor per space is spaceSensor; staff counting is visual.
DATEX_DETECTION: Mapping[str, str] = {
    "DETECTION_TYPE_NONE": "none", "DETECTION_TYPE_BALANCING": "balancing",
    "DETECTION_TYPE_SINGLE_SPACE": "spaceSensor", "DETECTION_TYPE_MODEL_BASED": "modelBased",
    "DETECTION_TYPE_MANUAL": "visual"}

# ----- site status (DATEX II vocabulary in the suite) ---------------------------------------------------
SITE_STATUSES = ("SITE_STATUS_SPACES_AVAILABLE", "SITE_STATUS_ALMOST_FULL", "SITE_STATUS_FULL_AT_ENTRANCE",
                 "SITE_STATUS_FULL", "SITE_STATUS_CLOSED", "SITE_STATUS_UNKNOWN")
MUNICIPAL_PARK_STATUS: Mapping[str, int] = {
    "SITE_STATUS_SPACES_AVAILABLE": 1, "SITE_STATUS_ALMOST_FULL": 2, "SITE_STATUS_FULL_AT_ENTRANCE": 3,
    "SITE_STATUS_FULL": 4, "SITE_STATUS_CLOSED": 5, "SITE_STATUS_UNKNOWN": 9}
# DATEX II v3 prk:ParkingPlaceStatusEnum has no "closed": a closed lot is fac:openingStatus closed (and no
# place status); every status also sets the facility's opening status (fac:OpeningStatusEnum).
DATEX_PLACE_STATUS: Mapping[str, str] = {
    "SITE_STATUS_SPACES_AVAILABLE": "spacesAvailable", "SITE_STATUS_ALMOST_FULL": "almostFull",
    "SITE_STATUS_FULL_AT_ENTRANCE": "fullAtEntrance", "SITE_STATUS_FULL": "full", "SITE_STATUS_UNKNOWN": "unknown"}
DATEX_OPENING_STATUS: Mapping[str, str] = {
    "SITE_STATUS_SPACES_AVAILABLE": "open", "SITE_STATUS_ALMOST_FULL": "open", "SITE_STATUS_FULL_AT_ENTRANCE": "open",
    "SITE_STATUS_FULL": "open", "SITE_STATUS_CLOSED": "closed", "SITE_STATUS_UNKNOWN": "statusUnknown"}
# Smart Data Models OffStreetParking/OnStreetParking `status` (a list): each status as the model names it. The enum
# has no "unknown": a lot whose state is not known is open as its opening times say (openingTimesInForce), and its
# occupancy is not sent (the last one keeps its observedAt, which dates it).
NGSI_SITE_STATUS: Mapping[str, str] = {
    "SITE_STATUS_SPACES_AVAILABLE": "spacesAvailable", "SITE_STATUS_ALMOST_FULL": "almostFull",
    "SITE_STATUS_FULL_AT_ENTRANCE": "fullAtEntrance", "SITE_STATUS_FULL": "full", "SITE_STATUS_CLOSED": "closed",
    "SITE_STATUS_UNKNOWN": "openingTimesInForce"}

# ----- spot status ---------------------------------------------------------------------------------------
SPOT_STATUSES = ("SPOT_STATUS_FREE", "SPOT_STATUS_OCCUPIED", "SPOT_STATUS_CLOSED", "SPOT_STATUS_UNKNOWN")
MUNICIPAL_BERTH_STATUS: Mapping[str, int] = {
    "SPOT_STATUS_FREE": 0, "SPOT_STATUS_OCCUPIED": 1, "SPOT_STATUS_CLOSED": 2, "SPOT_STATUS_UNKNOWN": 9}
# DATEX II v3 prk:SpaceStatus says occupied true/false; a closed spot or one whose state is not known is said with
# fac:openingStatus instead (SpaceStatus requires `occupied`).
DATEX_SPACE_OCCUPIED: Mapping[str, bool] = {"SPOT_STATUS_FREE": False, "SPOT_STATUS_OCCUPIED": True}
DATEX_SPACE_OPENING_STATUS: Mapping[str, str] = {"SPOT_STATUS_CLOSED": "closed", "SPOT_STATUS_UNKNOWN": "statusUnknown"}
NGSI_SPOT_STATUS: Mapping[str, str] = {
    "SPOT_STATUS_FREE": "free", "SPOT_STATUS_OCCUPIED": "occupied", "SPOT_STATUS_CLOSED": "closed",
    "SPOT_STATUS_UNKNOWN": "unknown"}

# ----- passages --------------------------------------------------------------------------------------------
DIRECTIONS = ("PASSAGE_DIRECTION_ENTRY", "PASSAGE_DIRECTION_EXIT")
MUNICIPAL_DIRECTION: Mapping[str, int] = {"PASSAGE_DIRECTION_ENTRY": 1, "PASSAGE_DIRECTION_EXIT": 2}
PLATE_COLOURS = ("PLATE_COLOUR_BLUE", "PLATE_COLOUR_YELLOW", "PLATE_COLOUR_GREEN", "PLATE_COLOUR_WHITE",
                 "PLATE_COLOUR_BLACK", "PLATE_COLOUR_OTHER")
# Plate colour codes as Chinese traffic-management systems number them (GA/T 16 family).
MUNICIPAL_PLATE_COLOUR: Mapping[str, int] = {
    "PLATE_COLOUR_BLUE": 0, "PLATE_COLOUR_YELLOW": 1, "PLATE_COLOUR_BLACK": 2, "PLATE_COLOUR_WHITE": 3,
    "PLATE_COLOUR_GREEN": 4, "PLATE_COLOUR_OTHER": 9}

# ----- charging connectors ----------------------------------------------------------------------------------
CONNECTOR_STATUSES = (
    "CONNECTOR_STATUS_AVAILABLE", "CONNECTOR_STATUS_OCCUPIED", "CONNECTOR_STATUS_PREPARING",
    "CONNECTOR_STATUS_CHARGING", "CONNECTOR_STATUS_SUSPENDED_EV", "CONNECTOR_STATUS_SUSPENDED_EVSE",
    "CONNECTOR_STATUS_FINISHING", "CONNECTOR_STATUS_RESERVED", "CONNECTOR_STATUS_BLOCKED",
    "CONNECTOR_STATUS_UNAVAILABLE", "CONNECTOR_STATUS_FAULTED", "CONNECTOR_STATUS_UNKNOWN")
# 0 offline, 1 idle, 2 occupied (not charging), 3 charging, 4 reserved, 255 fault. A charger that stopped
# talking reads UNKNOWN in the suite and offline (0) here, never as its last status.
MUNICIPAL_CONNECTOR_STATUS: Mapping[str, int] = {
    "CONNECTOR_STATUS_AVAILABLE": 1, "CONNECTOR_STATUS_OCCUPIED": 2, "CONNECTOR_STATUS_PREPARING": 2,
    "CONNECTOR_STATUS_CHARGING": 3, "CONNECTOR_STATUS_SUSPENDED_EV": 2, "CONNECTOR_STATUS_SUSPENDED_EVSE": 2,
    "CONNECTOR_STATUS_FINISHING": 2, "CONNECTOR_STATUS_RESERVED": 4, "CONNECTOR_STATUS_BLOCKED": 2,
    "CONNECTOR_STATUS_UNAVAILABLE": 255, "CONNECTOR_STATUS_FAULTED": 255, "CONNECTOR_STATUS_UNKNOWN": 0}
# DATEX II v3 egi:RefillPointStatusEnum.
DATEX_REFILL_POINT_STATUS: Mapping[str, str] = {
    "CONNECTOR_STATUS_AVAILABLE": "available", "CONNECTOR_STATUS_OCCUPIED": "occupied",
    "CONNECTOR_STATUS_PREPARING": "occupied", "CONNECTOR_STATUS_CHARGING": "charging",
    "CONNECTOR_STATUS_SUSPENDED_EV": "occupied", "CONNECTOR_STATUS_SUSPENDED_EVSE": "occupied",
    "CONNECTOR_STATUS_FINISHING": "occupied", "CONNECTOR_STATUS_RESERVED": "reserved",
    "CONNECTOR_STATUS_BLOCKED": "blocked", "CONNECTOR_STATUS_UNAVAILABLE": "unavailable",
    "CONNECTOR_STATUS_FAULTED": "faulted", "CONNECTOR_STATUS_UNKNOWN": "unknown"}
# OCPP 1.6 names for NGSI-LD (FIWARE EVChargingStation carries no per-connector vocabulary of its own).
NGSI_CONNECTOR_STATUS: Mapping[str, str] = {
    "CONNECTOR_STATUS_AVAILABLE": "Available", "CONNECTOR_STATUS_OCCUPIED": "Occupied",
    "CONNECTOR_STATUS_PREPARING": "Preparing", "CONNECTOR_STATUS_CHARGING": "Charging",
    "CONNECTOR_STATUS_SUSPENDED_EV": "SuspendedEV", "CONNECTOR_STATUS_SUSPENDED_EVSE": "SuspendedEVSE",
    "CONNECTOR_STATUS_FINISHING": "Finishing", "CONNECTOR_STATUS_RESERVED": "Reserved",
    "CONNECTOR_STATUS_BLOCKED": "Blocked", "CONNECTOR_STATUS_UNAVAILABLE": "Unavailable",
    "CONNECTOR_STATUS_FAULTED": "Faulted", "CONNECTOR_STATUS_UNKNOWN": "Unknown"}
# Smart Data Models EVChargingStation `status` of one charging point: working (usable, in use or not), withIncidence
# (faulted, blocked), outOfService (unavailable, or not heard from: UNKNOWN); availableCapacity says if it is free.
NGSI_CHARGER_STATUS: Mapping[str, str] = {
    "CONNECTOR_STATUS_AVAILABLE": "working", "CONNECTOR_STATUS_OCCUPIED": "working",
    "CONNECTOR_STATUS_PREPARING": "working", "CONNECTOR_STATUS_CHARGING": "working",
    "CONNECTOR_STATUS_SUSPENDED_EV": "working", "CONNECTOR_STATUS_SUSPENDED_EVSE": "working",
    "CONNECTOR_STATUS_FINISHING": "working", "CONNECTOR_STATUS_RESERVED": "working",
    "CONNECTOR_STATUS_BLOCKED": "withIncidence", "CONNECTOR_STATUS_UNAVAILABLE": "outOfService",
    "CONNECTOR_STATUS_FAULTED": "withIncidence", "CONNECTOR_STATUS_UNKNOWN": "outOfService"}
# EVChargingStation `socketType`: the model names no GB/T plug (China's standard): Other.
NGSI_SOCKET_TYPE: Mapping[str, str] = {
    "CONNECTOR_STANDARD_GBT_AC": "Other", "CONNECTOR_STANDARD_GBT_DC": "Other", "CONNECTOR_STANDARD_CCS2": "CCS/SAE",
    "CONNECTOR_STANDARD_TYPE2": "Type2", "CONNECTOR_STANDARD_CHADEMO": "CHAdeMO"}
# The plugs (charger_static payload: proto ConnectorStandard names).
CONNECTOR_STANDARDS = ("CONNECTOR_STANDARD_GBT_AC", "CONNECTOR_STANDARD_GBT_DC", "CONNECTOR_STANDARD_CCS2",
                       "CONNECTOR_STANDARD_TYPE2", "CONNECTOR_STANDARD_CHADEMO")
# DATEX II v3 egi:ConnectorTypeEnum: IEC 62196 type 2 (and its combo, CCS2), CHAdeMO; the enum names no GB/T plug
# (China's GB/T 20234): `other`, with the standard's name in egi:otherConnector.
DATEX_CONNECTOR_TYPE: Mapping[str, str] = {
    "CONNECTOR_STANDARD_GBT_AC": "other", "CONNECTOR_STANDARD_GBT_DC": "other",
    "CONNECTOR_STANDARD_CCS2": "iec62196T2COMBO", "CONNECTOR_STANDARD_TYPE2": "iec62196T2",
    "CONNECTOR_STANDARD_CHADEMO": "chademo"}
DATEX_OTHER_CONNECTOR: Mapping[str, str] = {
    "CONNECTOR_STANDARD_GBT_AC": "GB/T 20234.2 AC", "CONNECTOR_STANDARD_GBT_DC": "GB/T 20234.3 DC"}
# egi:ChargingModeEnum where the plug says it: DC plugs charge in mode 4 (an AC plug's phases are not known).
DATEX_CHARGING_MODE: Mapping[str, str] = {
    "CONNECTOR_STANDARD_GBT_DC": "mode4DC", "CONNECTOR_STANDARD_CCS2": "mode4DC",
    "CONNECTOR_STANDARD_CHADEMO": "mode4DC"}
# The Chinese EV charging interconnection convention's connector type (T/CEC 102): 3 AC plug with cable (mode 3,
# connection C), 4 DC plug with cable (mode 4).
MUNICIPAL_CONNECTOR_TYPE: Mapping[str, int] = {
    "CONNECTOR_STANDARD_GBT_AC": 3, "CONNECTOR_STANDARD_GBT_DC": 4, "CONNECTOR_STANDARD_CCS2": 4,
    "CONNECTOR_STANDARD_TYPE2": 3, "CONNECTOR_STANDARD_CHADEMO": 4}
