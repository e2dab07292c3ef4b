"""A Qdrant-REST-compatible development upstream on qdrant-edge, the Qdrant engine as a library.

One EdgeShard per collection under a data directory, aliases in a JSON file beside them. The real
qdrant-client (REST) works against it unchanged; the proxy's tests, benchmarks and demo use it where
no Qdrant server can run. Production points the proxy at a real Qdrant.

    python -m bluegreen_dev.embedded --data DIR [--host 127.0.0.1] [--port 6334] [--grpc-port N]

With --grpc-port it also speaks Qdrant's gRPC API (qdrant-client with prefer_grpc=True) on that port.
"""
from __future__ import annotations

import argparse
import sys

from bluegreen_dev.embedded.app import QDRANT_VERSION, EmbeddedQdrant, create_app

__all__ = ["QDRANT_VERSION", "EmbeddedQdrant", "create_app", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bluegreen_dev.embedded", description="Qdrant-REST-compatible development upstream on qdrant-edge.",
    )
    parser.add_argument("--data", required=True, help="data directory (one shard per collection)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6334)
    parser.add_argument("--grpc-port", type=int, help="also serve Qdrant's gRPC API on this port (default: no gRPC)")
    args = parser.parse_args(argv)

    import uvicorn

    try:
        app = create_app(args.data, None if args.grpc_port is None else (args.host, args.grpc_port))
    except RuntimeError as exc:  # e.g. the data directory is in use by another server
        print(f"embedded upstream: {exc}", file=sys.stderr)
        return 1
    uvicorn.run(app, host=args.host, port=args.port, loop="uvloop", http="httptools", log_level="warning", lifespan="on")
    return 0
