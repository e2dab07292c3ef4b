"""proxy.server's wiring, on a real process: `upstream.url: embedded` starts the embedded upstream as
a child and stops it with the proxy (nothing left running)."""
from __future__ import annotations

import signal
import socket
import urllib.request

from qdrant_client import models

from tests.support import RunningProxy, free_port, qdrant_client, qdrant_grpc_client


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


def test_embedded_upstream_serves_the_proxys_grpc_listener(tmp_path):
    """`upstream.url: embedded` with `grpc`: a prefer_grpc client through the proxy reaches the child's gRPC face."""
    grpc_port = free_port()
    options = f"data_dir: '{tmp_path / 'data'}'"
    routes = "  docs: {blue: docs_v1, green: docs_v2, writes: both}\n"
    proxy = RunningProxy(tmp_path / "proxy", "embedded", routes, upstream_options=options,
                         extra_yaml=f"grpc: {{host: 127.0.0.1, port: {grpc_port}}}\n")
    with proxy:
        over_rest = qdrant_client(proxy.url)
        for name in ("docs_v1", "docs_v2"):
            over_rest.create_collection(name, vectors_config=models.VectorParams(size=2, distance=models.Distance.DOT))
        over_grpc = qdrant_grpc_client(proxy.url, grpc_port)
        over_grpc.upsert("docs", [models.PointStruct(id=1, vector=[1.0, 0.0])], wait=True)
        assert over_rest.count("docs_v1").count == over_rest.count("docs_v2").count == 1  # written to both colours
        assert [p.id for p in over_grpc.query_points("docs", query=[1.0, 0.0]).points] == [1]
        over_grpc.close()
        over_rest.close()
    assert "gRPC 127.0.0.1:%d" % grpc_port in proxy.server.log()


def test_a_grpc_port_in_use_is_a_failed_start_that_names_it(tmp_path):
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "bluegreen.yaml"
        config.write_text(
            f"listen: {{host: 127.0.0.1, port: {free_port()}}}\nadmin: {{host: 127.0.0.1, port: {free_port()}}}\n"
            f"grpc: {{host: 127.0.0.1, port: {port}}}\nupstream: {{url: 'http://127.0.0.1:{free_port()}'}}\nroutes: {{}}\n"
        )
        run = subprocess.run([sys.executable, "-m", "proxy.cli", "serve", "--config", str(config)],
                             capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert f"grpc: cannot listen on 127.0.0.1:{port}" in run.stderr
