"""The last delivery error as the admin rpcs report it (google.rpc.Status)."""

from __future__ import annotations

import pytest

from services.municipal.convert import rpc_status


@pytest.mark.parametrize(("http_status", "message", "code", "text"), [
    (500, "HTTP 500: injected failure", 13, "HTTP 500: injected failure"),  # the delivery's own message
    (503, "platform outage", 14, "HTTP 503: platform outage"),
    (429, "", 8, "HTTP 429: "),
    (0, "ClientConnectorError: refused", 14, "ClientConnectorError: refused"),  # no answer at all
    (None, None, 14, ""),
])
def test_the_status_is_named_once_with_its_rpc_code(http_status: int | None, message: str | None, code: int,
                                                     text: str) -> None:
    status = rpc_status(http_status, message)
    assert (status.code, status.message) == (code, text)
