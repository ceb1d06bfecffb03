"""An OCPP-J charge point over a blocking WebSocket (websocket-client), for the gevent-patched locust process: the
`ocpp` package's asyncio ChargePoint cannot run there, but its message classes and (de)serialisation are plain
functions: payload dataclasses (`ocpp.v16.call`, `ocpp.v201.call`), camelCase conversion, the Call / CallResult /
CallError frames and the JSON-schema validation of what goes out and what comes back.
"""

from __future__ import annotations

import base64
import itertools
from dataclasses import dataclass
from typing import Any

import websocket
from ocpp.charge_point import camel_to_snake_case, remove_nones, serialize_as_dict, snake_to_camel_case
from ocpp.messages import Call, CallError, CallResult, _validate_payload, unpack

SUBPROTOCOLS = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1"}
VALIDATION = {"1.6": "1.6", "2.0.1": "2.0.1"}


class OcppCallError(Exception):
    """The central system answered a CALLERROR."""


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass
class SyncChargePoint:
    """One WebSocket connection of a charge point; `call` sends a request and returns the response's payload."""

    cp_id: str
    version: str  # "1.6" or "2.0.1"
    ws: websocket.WebSocket
    _ids: Any = None

    @classmethod
    def connect(cls, url: str, cp_id: str, password: str, version: str, timeout_s: float = 10.0) -> SyncChargePoint:
        ws = websocket.create_connection(
            f"{url}/{cp_id}",
            timeout=timeout_s,
            subprotocols=[SUBPROTOCOLS[version]],
            header=[f"Authorization: {basic(cp_id, password)}"],
        )
        if ws.getsubprotocol() != SUBPROTOCOLS[version]:
            ws.close()
            raise ConnectionError(f"the gateway chose subprotocol {ws.getsubprotocol()!r}, not {SUBPROTOCOLS[version]}")
        return cls(cp_id, version, ws, itertools.count(1))

    def call(self, payload: Any) -> dict[str, Any]:
        """Sends `payload` (an ocpp.v16.call / ocpp.v201.call dataclass), validated against the OCPP schema, and
        returns the CallResult's payload (snake_case), validated too. Requests the central system sends meanwhile
        are answered NotImplemented (the load test's chargers take no remote commands)."""
        action = type(payload).__name__
        call = Call(
            unique_id=f"{self.cp_id}-{next(self._ids)}",
            action=action,
            payload=remove_nones(snake_to_camel_case(serialize_as_dict(payload))),
        )
        _validate_payload(call, VALIDATION[self.version])
        self.ws.send(call.to_json())
        while True:
            raw = self.ws.recv()
            if not raw:
                raise ConnectionError("the gateway closed the connection")
            msg = unpack(raw)
            if isinstance(msg, Call):
                self.ws.send(CallError(msg.unique_id, "NotImplemented", f"{msg.action} is not supported", {}).to_json())
                continue
            if msg.unique_id != call.unique_id:
                continue  # a late answer to an earlier call that timed out
            if isinstance(msg, CallError):
                raise OcppCallError(f"{action}: {msg.error_code} {msg.error_description}")
            assert isinstance(msg, CallResult)
            msg.action = action
            _validate_payload(msg, VALIDATION[self.version])
            return dict(camel_to_snake_case(msg.payload))

    def drop(self) -> None:
        """The charger loses power or network: the socket goes without a close handshake."""
        self.ws.shutdown()  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self.ws.close()
