"""grpc core's socket I/O mode for the proxy process, chosen before anything imports grpc.

grpc core reads GRPC_EXPERIMENTS once, when grpc is first imported; an operator's own value wins.
INLINE_IO has grpc.aio's poller thread do the socket I/O itself rather than hand it to EventEngine
threads (15-20 % less CPU per forwarded call: benchmarks/grpc-design.md). Unknown to a later grpcio,
these names are logged and ignored (grpc then uses EventEngine I/O). Imported first by the server
wiring (which loads the gRPC face only when configured, while other modules, such as qdrant-client's,
may import grpc before it) and by the transport. Imports nothing heavy.
"""
from __future__ import annotations

import os
import sys

INLINE_IO = "-event_engine_client,-event_engine_listener,-event_engine_for_all_other_endpoints"
if "grpc" not in sys.modules:
    os.environ.setdefault("GRPC_EXPERIMENTS", INLINE_IO)
