"""The fixed gRPC answer from a single-threaded HTTP/2 server: `python -m benchmarks.grpc_h2_upstream --port P`.

For the design study only (benchmarks/grpc-design.md): the same bytes as `benchmarks.grpc_upstream`,
served by the pure-Python `h2` state machine on one uvloop loop, with no grpc core threads. Its CPU
per call next to the grpc.aio server's tells how much of a gRPC side's cost is grpcio's threading
rather than HTTP/2 work. Unary calls only, no flow-control subtleties: not a server to deploy.
"""
from __future__ import annotations

import argparse
import asyncio

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, RequestReceived, StreamEnded

from benchmarks.grpc_upstream import QUERY_METHOD, grpc_frame, query_response

_RESPONSE_HEADERS = ((b":status", b"200"), (b"content-type", b"application/grpc"))
_OK_TRAILERS = ((b"grpc-status", b"0"),)
_UNIMPLEMENTED = ((b":status", b"200"), (b"content-type", b"application/grpc"), (b"grpc-status", b"12"))


class FixedAnswer(asyncio.Protocol):
    def __init__(self, answer: bytes):
        self.answer = answer
        self.paths: dict[int, bytes] = {}

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.connection = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        self.connection.initiate_connection()
        transport.write(self.connection.data_to_send())

    def data_received(self, data: bytes) -> None:
        connection = self.connection
        for event in connection.receive_data(data):
            if isinstance(event, RequestReceived):
                self.paths[event.stream_id] = dict(event.headers).get(b":path", b"")
            elif isinstance(event, DataReceived):
                connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, StreamEnded):
                stream = event.stream_id
                if self.paths.pop(stream, b"") == QUERY_METHOD.encode():
                    connection.send_headers(stream, _RESPONSE_HEADERS)
                    connection.send_data(stream, self.answer)
                    connection.send_headers(stream, _OK_TRAILERS, end_stream=True)
                else:
                    connection.send_headers(stream, _UNIMPLEMENTED, end_stream=True)
        self.transport.write(connection.data_to_send())


async def serve(port: int) -> None:
    answer = grpc_frame(query_response())
    server = await asyncio.get_running_loop().create_server(lambda: FixedAnswer(answer), "127.0.0.1", port)
    print(f"h2 fixed gRPC upstream on 127.0.0.1:{port}", flush=True)
    await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grpc_h2_upstream", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    import uvloop

    uvloop.run(serve(parser.parse_args(argv).port))


if __name__ == "__main__":
    main()
