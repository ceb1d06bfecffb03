"""FindChargers answers assembled from connectors encoded once.

An answer holds ~100 connectors, and building each one's message costs more than the query that found
it. A connector reads the same until its data changes or its reading expires, so its encoding is kept,
keyed by the values it is made of and whether it is fresh (the only thing the moment changes), and the
answer's connectors are joined and parsed in one go. Keys and values are tuples of plain values and
bytes: the garbage collector stops tracking them, so a full cache does not lengthen its pauses.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from v2x.charging.v1 import charging_pb2 as pb

from services.charging import convert
from services.charging.model import ConnectorView, StationMatch
from services.charging.status import visible_status
from services.common import proto_wire

_CONNECTORS = proto_wire.tag(pb.ChargerMatch.DESCRIPTOR, "connectors")
# Beyond this many encodings (old states pile up as connectors change) the cache starts over.
MAX_ENTRIES = 100_000


class AnswerCache:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._encoded: dict[tuple[Any, ...], tuple[bytes, bool]] = {}

    def _connector(self, view: ConnectorView, now: datetime) -> tuple[bytes, bool]:
        """(the connector as an entry of ChargerMatch.connectors, whether it reads AVAILABLE)."""
        c, s = view.spec, view.state
        # Everything convert.connector_proto reads (spelled out: hashing the dataclasses costs twice this).
        key = (c.id, c.standard, c.max_power_kw, c.price_per_kwh_fen, c.service_fee_per_kwh_fen, c.parking_spot_id,
               c.ocpp_connector_id, s.status, s.error_code, s.info, s.source, s.observed_at, s.received_at,
               s.status_since, s.ttl_s, s.expires_at, s.is_fresh(now))
        hit = self._encoded.get(key)
        if hit is None:
            if len(self._encoded) >= self.max_entries:
                self._encoded.clear()
            body = convert.connector_proto(c, s, now).SerializeToString()
            hit = self._encoded[key] = (proto_wire.embedded(_CONNECTORS, body),
                                        visible_status(s, now) == pb.CONNECTOR_STATUS_AVAILABLE)
        return hit

    def answer(self, matches: Sequence[StationMatch], now: datetime) -> pb.FindChargersResponse:
        """Every match as convert.match_proto makes it, with its connectors from the cache."""
        out = pb.FindChargersResponse()
        for m in matches:
            parts = [self._connector(v, now) for v in m.connectors]
            convert.match_proto(m, b"".join(p[0] for p in parts), sum(1 for p in parts if p[1]), out.stations.add())
        return out
