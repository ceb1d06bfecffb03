"""Pages of a list rpc: the page size a request may ask for, and page tokens.

A token is the cursor of the last row of a page (an id, a row number, or a few of them joined), base64url-encoded so
that clients treat it as opaque. A token comes back from a client, so it is decoded strictly and its cursor must
match what the rpc issues: anything else is INVALID_ARGUMENT on `page.page_token`, never a first page.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from v2x.common.v1 import common_pb2 as cpb

from services.common.errors import FieldViolation, InvalidArgument
from services.common.validation import Validator

DEFAULT_PAGE = 100
MAX_PAGE = 1000
MAX_TOKEN_CHARS = 200
# A row number as a cursor (positive, fits in a bigint).
ROW_CURSOR = re.compile(r"[1-9][0-9]{0,17}")


@dataclass(frozen=True)
class Page:
    size: int
    cursor: str  # "" for the first page


def page(p: cpb.PageRequest, cursor: re.Pattern[str], v: Validator | None = None) -> Page:
    """The page a request asks for: its size (0 = DEFAULT_PAGE, at most MAX_PAGE) and the cursor in its token. With
    the request's own validator `v`, a bad size joins the request's other violations (one INVALID_ARGUMENT)."""
    own = v is None
    v = v or Validator()
    v.integer("page.page_size", p.page_size, 0, MAX_PAGE)
    v.text("page.page_token", p.page_token, MAX_TOKEN_CHARS)
    if own or v.violations:
        v.check()
    return Page(p.page_size or DEFAULT_PAGE, decode(p.page_token, cursor))


def token(cursor: str) -> str:
    """The next page's token for the cursor of this page's last row."""
    return base64.urlsafe_b64encode(cursor.encode()).decode() if cursor else ""


def decode(token_: str, cursor: re.Pattern[str]) -> str:
    if not token_:
        return ""
    try:
        # Strict: the lenient decoder drops unknown characters, so garbage could read as "first page".
        value = base64.b64decode(token_, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        value = ""
    if not cursor.fullmatch(value):
        raise InvalidArgument(FieldViolation("page.page_token", "is not a token this service issued"))
    return value
