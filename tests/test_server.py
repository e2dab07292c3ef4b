"""proxy.server's wiring, on a real process: `upstream.url: embedded` starts the embedded upstream as
a child and stops it with the proxy (nothing left running)."""
from __future__ import annotations

import signal
import socket
import urllib.request

from tests.support import RunningProxy, free_port, qdrant_client


def test_embedded_upstream_starts_with_the_proxy_and_stops_with_it(tmp_path):
    port = free_port()
    options = f"data_dir: '{tmp_path / 'data'}', embedded_port: {port}"
    proxy = RunningProxy(tmp_path / "proxy", "embedded", "  docs: {blue: docs_v1, green: docs_v2}\n", upstream_options=options)
    with proxy:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/collections", timeout=5) as answer:
            assert answer.status == 200
        client = qdrant_client(proxy.url)
        assert client.get_collections().collections == []  # through the proxy, to the child
        client.close()
        proxy.server.process.send_signal(signal.SIGTERM)
        assert proxy.server.process.wait(30) == 0
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "the embedded upstream stopped with the proxy"
    # The log says where the data went, as an absolute path (the config may name a relative one).
    assert f"embedded upstream (development only) on http://127.0.0.1:{port}, data in {tmp_path / 'data'}" in proxy.server.log()
