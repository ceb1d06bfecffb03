"""How a plate leaves the suite for a destination (its `plate_policy`), and the platform's plate rule.

- full: the plate as read (only to https destinations; config refuses otherwise), and it must be a
  mainland plate number, which is what the platform's entry/exit record requires;
- masked: province and issuing-authority letters and the last two characters, e.g. 沪A***45;
- hashed: HMAC-SHA256 of the plate under the destination's secret (hex, 32 characters), so the platform
  can match an entry with its exit without learning the plate;
- none: no plate at all.
Dead-letter previews always mask.
"""

from __future__ import annotations

import hashlib
import hmac

from services.common.plate_numbers import MAINLAND_PLATE as MAINLAND_PLATE


def is_mainland_plate(plate: str) -> bool:
    return MAINLAND_PLATE.fullmatch(plate.replace("·", "").replace("-", "")) is not None


def mask(plate: str) -> str:
    p = plate.replace("·", "").replace("-", "")
    if len(p) <= 4:
        return "*" * len(p)
    return p[:2] + "*" * (len(p) - 4) + p[-2:]


def hashed(plate: str, secret: str) -> str:
    p = plate.replace("·", "").replace("-", "").upper()
    return hmac.new(secret.encode(), p.encode(), hashlib.sha256).hexdigest()[:32]


def apply(policy: str, plate: str, secret: str) -> str | None:
    if policy == "full":
        return plate.replace("·", "").replace("-", "")
    if policy == "masked":
        return mask(plate)
    if policy == "hashed":
        return hashed(plate, secret)
    return None
