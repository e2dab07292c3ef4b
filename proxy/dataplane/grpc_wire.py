"""A request's collection name read and replaced in protobuf's wire format, every other byte as sent.

Most requests name one collection, in their `collection_name` (field 1 of every Qdrant request about a
collection). Reading it from the top-level fields and splicing a new one in costs a few microseconds
whatever the request's size, where parsing the whole message and serialising it again costs time in
proportion to it (vectors, points, payloads). A request that can name a second collection (a batch's
inner requests, a lookup below any of its fields) is parsed instead: `deep_fields` says, per request
message, which top-level fields those are. Only the top level and the name are checked here; what lies
below them goes as sent, and the upstream refuses what it cannot parse (INVALID_ARGUMENT), as for any
call the proxy passes through unparsed.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor, FieldDescriptor

NAME_FIELD = 1  # `collection_name` in every request message about a collection
_LENGTH_DELIMITED = 2


@dataclass(frozen=True, slots=True)
class WireName:
    """The request's one collection name and where its field sits (tag to end of value)."""

    name: str
    start: int
    end: int

    def replaced(self, request: bytes, name: str) -> bytes:
        """`request` with this field naming `name` instead; every other byte kept, in place."""
        return request[: self.start] + name_field(name) + request[self.end :]


@functools.lru_cache(maxsize=1024)
def name_field(name: str) -> bytes:
    """Field 1 as a length-delimited string: tag, varint length, UTF-8 bytes (physical names repeat: cached)."""
    value = name.encode()
    return bytes((NAME_FIELD << 3 | _LENGTH_DELIMITED,)) + _varint_bytes(len(value)) + value


def deep_fields(request: Descriptor, batch: str | None, holders: frozenset[str]) -> frozenset[int]:
    """The top-level field numbers of `request` under which a second collection name can sit: the
    batch field, and every message field whose type reaches a message named in `holders` (maps, which
    hold payload values, excepted: the face's lookup walk never enters them either)."""
    numbers = set()
    for field in request.fields:
        if field.name == batch or (_is_message(field) and _reaches(field.message_type, holders, set())):
            numbers.add(field.number)
    return frozenset(numbers)


def read_name(request: bytes, deep: frozenset[int]) -> WireName | None:
    """The request's field 1, when it is the request's one collection name: None when a field in `deep`
    is present, field 1 is absent, repeated or not a UTF-8 string, or the top level is not well-formed
    wire format (the caller then parses the message, which names what is wrong)."""
    size = len(request)
    position = 0
    found = None
    try:
        while position < size:
            start = position
            tag, position = _varint(request, position)
            number, wire_type = tag >> 3, tag & 7
            if number == 0 or number in deep:
                return None
            if wire_type == _LENGTH_DELIMITED:
                length, position = _varint(request, position)
                if number == NAME_FIELD:
                    if found is not None:
                        return None
                    found = (start, position, position + length)
                position += length
            elif number == NAME_FIELD:
                return None
            elif wire_type == 0:
                _, position = _varint(request, position)
            elif wire_type == 1:
                position += 8
            elif wire_type == 5:
                position += 4
            else:  # groups (3, 4) and the undefined types 6, 7
                return None
        if found is None or position != size:
            return None
        start, value_start, end = found
        return WireName(request[value_start:end].decode(), start, end)
    except (IndexError, UnicodeDecodeError):
        return None


def _varint(data: bytes, position: int) -> tuple[int, int]:
    byte = data[position]
    if byte < 0x80:
        return byte, position + 1
    value, shift = byte & 0x7F, 7
    while True:
        position += 1
        byte = data[position]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position + 1
        shift += 7
        if shift > 63:
            raise IndexError("varint longer than 10 bytes")


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _is_message(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and not field.message_type.GetOptions().map_entry


def _reaches(message: Descriptor, holders: frozenset[str], seen: set[str]) -> bool:
    if message.name in holders:
        return True
    if message.full_name in seen:
        return False
    seen.add(message.full_name)
    return any(_is_message(field) and _reaches(field.message_type, holders, seen) for field in message.fields)
