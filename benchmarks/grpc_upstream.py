"""The gRPC fixed-response upstream: `python -m benchmarks.grpc_upstream --port P`.

Answers every `/qdrant.Points/Query` with the same bytes of a realistic `QueryResponse` (10 scored
points with the payloads of the REST benchmark's fixed answer); any other method is UNIMPLEMENTED.
A grpc.aio server on uvloop with a raw-bytes handler: nothing is parsed, so its cost per call is
small and constant, and what a proxy adds in front of it is forwarding cost. The request bodies the
load sends are built here too (`query_request`), from the REST benchmark's query vectors.
"""
from __future__ import annotations

import argparse
import asyncio

import grpc
from grpc import aio

from benchmarks import workload

QUERY_METHOD = "/qdrant.Points/Query"
COLLECTION = "docs"


def _value(python_value):
    from qdrant_client import grpc as qgrpc

    if isinstance(python_value, str):
        return qgrpc.Value(string_value=python_value)
    return qgrpc.Value(integer_value=python_value)


def query_response() -> bytes:
    """A QueryResponse as Qdrant sends it: the same 10 points, scores and payloads as the REST fixed answer."""
    from qdrant_client import grpc as qgrpc

    points = []
    for rank in range(workload.SEARCH_LIMIT):
        point_id = 4100 + rank * 37
        points.append(qgrpc.ScoredPoint(
            id=qgrpc.PointId(num=point_id), version=3, score=round(0.8731 - rank * 0.0117, 4),
            payload={key: _value(value) for key, value in workload.payload(point_id).items()},
        ))
    return qgrpc.QueryResponse(result=points, time=0.001).SerializeToString(deterministic=True)


def query_request(seed: int = 7, collection: str = COLLECTION) -> bytes:
    """A QueryPoints as qdrant-client sends it: a 384-dim query vector, limit 10, with payload."""
    from qdrant_client import grpc as qgrpc

    [vector] = workload.unit_vectors(1, workload.DIMENSIONS, seed)
    return qgrpc.QueryPoints(
        collection_name=collection,
        query=qgrpc.Query(nearest=qgrpc.VectorInput(dense=qgrpc.DenseVector(data=vector))),
        limit=workload.SEARCH_LIMIT,
        with_payload=qgrpc.WithPayloadSelector(enable=True),
    ).SerializeToString()


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message (uncompressed), the body of an HTTP/2 request."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


async def serve(port: int) -> None:
    answer = query_response()

    async def query(request: bytes, context) -> bytes:
        return answer

    server = aio.server(options=(("grpc.so_reuseport", 0),))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "qdrant.Points", {"Query": grpc.unary_unary_rpc_method_handler(query)}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"gRPC fixed upstream on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grpc_upstream", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    import uvloop

    uvloop.run(serve(args.port))


if __name__ == "__main__":
    main()
