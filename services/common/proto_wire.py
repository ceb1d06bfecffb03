"""Protobuf wire format, for answers assembled from cached encodings of their parts (FastPath.SPLICED_ANSWERS).

Concatenated encodings of a message are the encoding of the merged message, so a repeated field's
entries encoded once can be joined into any answer that holds them; the answer goes out as it is (the rpc's
pass-through serializer, services/common/server.passthrough).
"""

from __future__ import annotations

import struct

from google.protobuf.descriptor import Descriptor

_DOUBLE = struct.Struct("<d")
_LENGTH_DELIMITED = 2
_FIXED64 = 1


def varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def tag(message: Descriptor, field: str) -> bytes:
    """The key of a message or string field (`embedded`) or of a double field (`double`) of `message`."""
    f = message.fields_by_name[field]
    wire = _FIXED64 if f.type == f.TYPE_DOUBLE else _LENGTH_DELIMITED
    return varint((f.number << 3) | wire)


def embedded(key: bytes, body: bytes) -> bytes:
    """One entry of a length-delimited field."""
    return key + varint(len(body)) + body


def double(key: bytes, value: float) -> bytes:
    """A double field; proto3 leaves zero out."""
    return key + _DOUBLE.pack(value) if value else b""
