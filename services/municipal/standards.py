"""The standards' own published schemas, read from the folder beside the checkout (never copied into the project).

`../shared/standards/` (relative to the repository root; `V2X_STANDARDS_DIR` names another folder) holds the
DATEX II v3.5 XSD set and the FIWARE Smart Data Models JSON Schemas (see its README). The platform emulator
checks DATEX II bodies against the XSD with them; the conformance tests check every profile's bodies.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from pathlib import Path
from typing import cast

from lxml import etree

STANDARDS_ENV = "V2X_STANDARDS_DIR"
ROOT = Path(__file__).resolve().parents[2]
DATEX2_DIR = "datex2-v3.5"
DATEX2_ROOT = "DATEXII_3_D2Payload.xsd"
SMART_DATA_MODELS_DIR = "smart-data-models"
# Validation errors quoted in an answer, at most.
MAX_ERRORS = 5


class MissingStandards(Exception):
    """The schema folder (or a schema in it) is not there."""


def standards_dir(env: dict[str, str] | None = None) -> Path:
    """Where the published schemas are: $V2X_STANDARDS_DIR, else ../shared/standards beside the checkout."""
    value = (env if env is not None else os.environ).get(STANDARDS_ENV, "")
    return Path(value) if value else ROOT.parent / "shared" / "standards"


def require(path: Path) -> Path:
    if not path.exists():
        raise MissingStandards(
            f"{path} is missing: the published schemas live in ../shared/standards beside the checkout "
            f"(or set {STANDARDS_ENV})")
    return path


@functools.cache
def datex2_schema(folder: Path) -> etree.XMLSchema:
    """The DATEX II v3.5 schema set, rooted at the d2Payload schema (compiled once per process: ~1 s)."""
    root = require(require(folder / DATEX2_DIR) / DATEX2_ROOT)
    return etree.XMLSchema(etree.parse(str(root)))


def datex2_errors(schema: etree.XMLSchema, body: bytes) -> list[str]:
    """What is wrong with a DATEX II document (not well-formed, or invalid against the XSD); empty when valid."""
    try:
        doc = etree.fromstring(body, parser=etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as exc:
        return [f"not well-formed XML: {exc}"]
    if schema.validate(doc):
        return []
    # (lxml-stubs does not know that an error log iterates over its entries.)
    entries = cast("Iterable[etree._LogEntry]", schema.error_log)
    return [f"line {e.line}: {e.message}" for e in entries][:MAX_ERRORS]
