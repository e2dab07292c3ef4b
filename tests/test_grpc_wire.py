"""proxy.dataplane.grpc_wire: a request's collection name read and replaced in protobuf's wire format.

Checked against protobuf's own parser on Qdrant's messages (the proxy's generated schema): what the wire
reader returns, a parse finds; what it writes, a parse reads back with only the name changed.
"""
from __future__ import annotations

from proxy.dataplane.grpc_wire import WireName, deep_fields, name_field, read_name
from proxy.grpc_schema import METHODS
from routing.grpc_methods import LOOKUP_FIELDS

QueryPoints = METHODS["/qdrant.Points/Query"].request
UpsertPoints = METHODS["/qdrant.Points/Upsert"].request
QUERY_DEEP = deep_fields(QueryPoints.DESCRIPTOR, None, frozenset(LOOKUP_FIELDS))
UNKNOWN_FIELD = b"\xc0\x3e\x07"  # field 1000, varint 7: in no schema


def query(collection: str = "docs", **fields) -> bytes:
    return QueryPoints(collection_name=collection, limit=10, **fields).SerializeToString()


def test_the_name_is_read_and_replaced_in_place_every_other_byte_kept():
    vector = {"query": {"nearest": {"dense": {"data": [0.25] * 384}}}}
    request = UNKNOWN_FIELD + query(**vector) + UNKNOWN_FIELD
    found = read_name(request, QUERY_DEEP)
    assert found is not None and found.name == "docs"
    rewritten = found.replaced(request, "docs_blue")
    assert rewritten == UNKNOWN_FIELD + query("docs_blue", **vector) + UNKNOWN_FIELD  # same order, only the name changed
    assert QueryPoints.FromString(rewritten).collection_name == "docs_blue"


def test_a_large_write_is_rewritten_without_losing_a_byte():
    points = [{"id": {"num": n}, "vectors": {"vector": {"data": [n / 7] * 64}}, "payload": {"n": {"integer_value": n}}}
              for n in range(300)]
    request = UpsertPoints(collection_name="docs", wait=True, points=points).SerializeToString()
    found = read_name(request, deep_fields(UpsertPoints.DESCRIPTOR, None, frozenset(LOOKUP_FIELDS)))
    name = "n" * 200  # a length that needs two varint bytes
    rewritten = found.replaced(request, name)
    assert rewritten == UpsertPoints(collection_name=name, wait=True, points=points).SerializeToString()


def test_fields_that_can_name_a_second_collection_are_left_to_a_parse():
    names = {QueryPoints.DESCRIPTOR.fields_by_number[n].name for n in QUERY_DEEP}
    assert names == {"prefetch", "lookup_from"}
    assert read_name(query(lookup_from={"collection_name": "other"}), QUERY_DEEP) is None
    assert read_name(query(prefetch=[{"limit": 5}]), QUERY_DEEP) is None
    batch = METHODS["/qdrant.Points/QueryBatch"].request.DESCRIPTOR
    assert {batch.fields_by_number[n].name for n in deep_fields(batch, "query_points", frozenset(LOOKUP_FIELDS))} == {"query_points"}


def test_anything_but_one_plain_name_is_left_to_a_parse():
    request = query()
    assert read_name(request + query("second"), QUERY_DEEP) is None  # field 1 twice: protobuf takes the last
    assert read_name(QueryPoints(limit=3).SerializeToString(), QUERY_DEEP) is None  # no name
    assert read_name(b"\x0a\x02\xff\xfe", QUERY_DEEP) is None  # not UTF-8
    assert read_name(request[:-1], QUERY_DEEP) is None  # truncated
    assert read_name(b"\x0a\x10docs", QUERY_DEEP) is None  # a length past the end
    assert read_name(request + b"\x0b\x0c", QUERY_DEEP) is None  # a group (wire types 3, 4)
    assert read_name(b"\x08\x01", QUERY_DEEP) is None  # field 1 as a varint
    assert read_name(b"\x00\x01" + request, QUERY_DEEP) is None  # field number 0
    assert read_name(request + b"\x98" + b"\xff" * 10, QUERY_DEEP) is None  # an endless varint


def test_name_field_encoding():
    assert name_field("docs") == b"\x0a\x04docs"
    assert name_field("é") == b"\x0a\x02" + "é".encode()
    assert WireName("a", 0, 3).replaced(b"\x0a\x01a\x10\x05", "bc") == b"\x0a\x02bc\x10\x05"
