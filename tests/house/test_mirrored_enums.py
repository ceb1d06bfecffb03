"""Domain enums that mirror proto enums hold the proto's numbers and names (less the prefix and UNSPECIFIED)."""

from __future__ import annotations

import re
from enum import IntEnum

import pytest
from google.protobuf.descriptor import EnumDescriptor, FileDescriptor
from v2x.charging.v1 import charging_pb2
from v2x.idps.v1 import idps_pb2
from v2x.parking.v1 import parking_pb2

from services.charging import vocab as charging_vocab
from services.idps import vocab as idps_vocab
from services.parking import vocab as parking_vocab

VOCABS: list[tuple[object, FileDescriptor]] = [(parking_vocab, parking_pb2.DESCRIPTOR),
                                               (charging_vocab, charging_pb2.DESCRIPTOR),
                                               (idps_vocab, idps_pb2.DESCRIPTOR)]
MIRRORS: list[tuple[type[IntEnum], EnumDescriptor]] = [
    (cls, file.enum_types_by_name[cls.__name__])
    for module, file in VOCABS for cls in vars(module).values()
    if isinstance(cls, type) and issubclass(cls, IntEnum) and cls is not IntEnum
]


def _prefix(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper() + "_"


@pytest.mark.parametrize(("mirror", "proto"), MIRRORS, ids=[f"{p.file.package}.{m.__name__}" for m, p in MIRRORS])
def test_a_domain_enum_mirrors_its_proto_enum(mirror: type[IntEnum], proto: EnumDescriptor) -> None:
    prefix = _prefix(proto.name)
    wanted = {v.name.removeprefix(prefix): v.number for v in proto.values if v.number != 0}
    assert all(v.name.startswith(prefix) for v in proto.values)
    assert {m.name: m.value for m in mirror} == wanted


@pytest.mark.parametrize(("module", "file"), VOCABS, ids=[f.package for _, f in VOCABS])
def test_every_top_level_enum_of_a_service_proto_is_mirrored(module: object, file: FileDescriptor) -> None:
    assert {m.__name__ for m, p in MIRRORS if p.file is file} == set(file.enum_types_by_name)
