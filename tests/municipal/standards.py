"""The published schemas for conformance tests: DATEX II v3.5 (XSD, lxml) and the Smart Data Models (JSON Schema,
every `$ref` resolved to the local files, `common-schema.json` included: nothing is fetched).

The folder is ../shared/standards beside the checkout (or V2X_STANDARDS_DIR). CI always has it: when it is missing
the tests fail, saying where it was looked for; they never skip.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from lxml import etree
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from services.municipal.standards import MissingStandards, datex2_errors, datex2_schema, standards_dir

SDM_MODELS = ("OffStreetParking", "OnStreetParking", "ParkingSpot", "ParkingGroup", "EVChargingStation")
COMMON_SCHEMA_ID = "https://smart-data-models.github.io/data-models/common-schema.json"


def folder() -> Path:
    path = standards_dir()
    if not path.is_dir():
        pytest.fail(f"the published schemas are missing: {MissingStandards(str(path))}", pytrace=False)
    return path


def datex2() -> etree.XMLSchema:
    return datex2_schema(folder())


def datex2_problems(body: bytes) -> list[str]:
    return datex2_errors(datex2(), body)


@functools.cache
def _sdm(root: Path) -> dict[str, Draft202012Validator]:
    sdm = root / "smart-data-models"
    resources: list[tuple[str, Resource[Any]]] = []
    schemas = {}
    common = json.loads((sdm / "common-schema.json").read_text())
    resources.append((COMMON_SCHEMA_ID, DRAFT202012.create_resource(common)))
    if common.get("$id"):
        resources.append((common["$id"], DRAFT202012.create_resource(common)))
    for model in SDM_MODELS:
        schema = json.loads((sdm / model / "schema.json").read_text())
        schemas[model] = schema
        resources.append((schema["$id"], DRAFT202012.create_resource(schema)))
    registry: Registry[Any] = Registry().with_resources(resources)
    return {model: Draft202012Validator(schema, registry=registry,
                                        format_checker=Draft202012Validator.FORMAT_CHECKER)
            for model, schema in schemas.items()}


def sdm_validator(model: str) -> Draft202012Validator:
    return _sdm(folder())[model]


def key_values(entity: dict[str, Any]) -> dict[str, Any]:
    """A normalized NGSI-LD entity in the keyValues form the Smart Data Models schemas describe: each Property
    reduced to its value, each Relationship to its object, each GeoProperty to its GeoJSON."""
    out: dict[str, Any] = {}
    for name, attr in entity.items():
        if name == "@context":
            continue
        if isinstance(attr, dict) and attr.get("type") in ("Property", "GeoProperty"):
            value = attr["value"]
            # A typed literal ({"@type": "DateTime", "@value": ...}) is its value.
            out[name] = value["@value"] if isinstance(value, dict) and "@value" in value else value
        elif isinstance(attr, dict) and attr.get("type") == "Relationship":
            out[name] = attr["object"]
        elif isinstance(attr, list):  # a multi-attribute: its instances' values
            out[name] = [a.get("value", a.get("object")) if isinstance(a, dict) else a for a in attr]
        else:
            out[name] = attr
    return out


def sdm_problems(entity: dict[str, Any]) -> list[str]:
    """What the entity's Smart Data Model says is wrong with it (its type names the model)."""
    model = str(entity.get("type"))
    if model not in SDM_MODELS:
        return [f"type {model!r} is not one of the models {SDM_MODELS}"]
    return [f"{'/'.join(map(str, e.absolute_path)) or '(entity)'}: {e.message}"
            for e in sdm_validator(model).iter_errors(key_values(entity))]
