"""Mainland plate numbers: the pattern of a plate as read, and masking plates typed into free text.

`MAINLAND_PLATE` is the platform's rule for a plate number (what the municipal adapter checks with
fullmatch). Free text (a report's description, a note) is typed by people, who write 沪A·12345,
沪a 12345 or 沪A1234O for 沪A12340: `PLATE_IN_TEXT` admits one separator after the province and after the
issuing-authority letter, either case, and any letter or digit in the serial. It matches every string
`MAINLAND_PLATE` matches; masking a few characters too many is harmless, missing a plate is a leak.
"""

from __future__ import annotations

import re

_PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
_SPECIAL_LAST = "挂学警港澳使领"
_SEPARATORS = "·・•.-"

# Province abbreviation, issuing-authority letter (no I or O), then 5 characters (6 for new-energy
# plates), the last of which may be a special-use character.
MAINLAND_PLATE = re.compile(
    rf"[{_PROVINCES}][A-HJ-NP-Z]"
    rf"[A-HJ-NP-Z0-9]{{4,5}}[A-HJ-NP-Z0-9{_SPECIAL_LAST}]")

_SEP = rf"(?:\s|[{re.escape(_SEPARATORS)}])"
# ASCII: case-folding and \s stay ASCII, so `may_contain_plate` below can check the UTF-8 bytes exactly.
PLATE_IN_TEXT = re.compile(
    rf"[{_PROVINCES}]{_SEP}?[A-Z]{_SEP}?[A-Z0-9]{{4,5}}[A-Z0-9{_SPECIAL_LAST}]", re.IGNORECASE | re.ASCII)

PLATE_MASK = "[plate]"

# The start of every PLATE_IN_TEXT match as UTF-8: a province, an optional separator, a letter.
_MAY_START = re.compile(
    b"(?:" + b"|".join(re.escape(p.encode()) for p in _PROVINCES) + b")"
    + b"(?:\\s|" + b"|".join(re.escape(s.encode()) for s in _SEPARATORS) + b")?[A-Za-z]")


def mask_plates(text: str) -> str:
    """The text with every plate number replaced by PLATE_MASK."""
    return PLATE_IN_TEXT.sub(PLATE_MASK, text) if text else text


def may_contain_plate(data: bytes) -> bool:
    """False when UTF-8 data (e.g. a serialized message) cannot hold a plate that `mask_plates` would mask:
    a cheap test that spares decoding what has no plate."""
    return _MAY_START.search(data) is not None
