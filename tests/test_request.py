"""proxy.dataplane.request: one reading of each header."""
from __future__ import annotations

from proxy.dataplane.request import first_values


def test_each_header_is_read_by_its_first_value():
    headers = [(b"x-user-id", b"first"), (b"origin", b"https://a"), (b"x-user-id", b"second")]
    assert first_values(headers) == {b"x-user-id": b"first", b"origin": b"https://a"}
    assert first_values([]) == {}
