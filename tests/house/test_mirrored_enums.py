"""Domain enums that mirror proto enums hold the proto's numbers and names (less the prefix and UNSPECIFIED)."""

from __future__ import annotations

import re
from enum import IntEnum

import pytest
from google.protobuf.descriptor import EnumDescriptor
from v2x.parking.v1 import parking_pb2

from services.parking import vocab as parking_vocab

MIRRORS: list[tuple[type[IntEnum], EnumDescriptor]] = [
    (cls, parking_pb2.DESCRIPTOR.enum_types_by_name[cls.__name__])
    for cls in vars(parking_vocab).values() if isinstance(cls, type) and issubclass(cls, IntEnum)
    and cls is not IntEnum
]


def _prefix(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper() + "_"


@pytest.mark.parametrize(("mirror", "proto"), MIRRORS, ids=[m.__name__ for m, _ in MIRRORS])
def test_a_domain_enum_mirrors_its_proto_enum(mirror: type[IntEnum], proto: EnumDescriptor) -> None:
    prefix = _prefix(proto.name)
    wanted = {v.name.removeprefix(prefix): v.number for v in proto.values if v.number != 0}
    assert all(v.name.startswith(prefix) for v in proto.values)
    assert {m.name: m.value for m in mirror} == wanted


def test_every_top_level_parking_enum_is_mirrored() -> None:
    assert {m.__name__ for m, _ in MIRRORS} == set(parking_pb2.DESCRIPTOR.enum_types_by_name)
