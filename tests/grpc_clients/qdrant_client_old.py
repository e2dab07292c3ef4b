"""An older qdrant-client (1.12, in a venv of its own) as an application uses it, over gRPC only: a fixed
sequence of calls on one collection, every answer printed as JSON on stdout. Standalone: it runs in that
venv, where neither the project nor its qdrant-client 1.20 is installed.

Usage: python qdrant_client_old.py '{"grpc_port": 6334, "collection": "docs", "api_key": "..."}'
Its REST address is a closed port, so a call that fell back to REST would fail instead of passing unseen.
"""
import json
import socket
import sys
import warnings
from importlib.metadata import version

from qdrant_client import QdrantClient, models


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def plain(value):
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, tuple):
        return [plain(item) for item in value]
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def calls(client: QdrantClient, name: str) -> dict:
    vector = [1.0, 0.2, 0.1, 0.0]
    return {
        "query_points": client.query_points(name, query=vector, limit=3, with_payload=True),
        "search": client.search(name, query_vector=vector, limit=3, with_payload=True),
        "search_filtered": client.search(
            name, query_vector=vector, limit=3,
            query_filter=models.Filter(must=[models.FieldCondition(key="n", range=models.Range(gte=2))]),
        ),
        "upsert": client.upsert(name, [models.PointStruct(id=30, vector=[0.5, 0.5, 0.5, 0.5], payload={"n": 30, "from": "1.12"})], wait=True),
        "scroll": client.scroll(name, limit=10, with_payload=True, with_vectors=True),
        "count": client.count(name, exact=True),
        "retrieve": client.retrieve(name, ids=[1, 30], with_payload=True, with_vectors=True),
        "query_batch_points": client.query_batch_points(name, [
            models.QueryRequest(query=vector, limit=2), models.QueryRequest(query=[0.4, 0.3, 0.2, 0.1], limit=2, with_payload=True),
        ]),
        "search_batch": client.search_batch(name, [
            models.SearchRequest(vector=vector, limit=2), models.SearchRequest(vector=[0.4, 0.3, 0.2, 0.1], limit=2),
        ]),
        "delete": client.delete(name, models.PointIdsList(points=[30]), wait=True),
        "count_after_delete": client.count(name, exact=True),
    }


def main() -> None:
    options = json.loads(sys.argv[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Api key is used with an insecure connection": loopback, on purpose
        client = QdrantClient(
            url=f"http://127.0.0.1:{closed_port()}", grpc_port=options["grpc_port"], prefer_grpc=True,
            api_key=options.get("api_key"), timeout=20,
        )
    answers = {name: plain(answer) for name, answer in calls(client, options["collection"]).items()}
    client.close()
    print(json.dumps({"version": version("qdrant-client"), "answers": answers}))


if __name__ == "__main__":
    main()
