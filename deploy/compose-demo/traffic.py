"""Demo data and traffic for deploy/compose.yaml (`docker compose --profile demo up`).

Builds the blue and green collections of the compose config's route on Qdrant directly (same ids;
green's vectors slightly perturbed, as a re-embedding or a new index layout would make them), then
sends searches to the proxy from many users, so that the dashboard, the alerts and
`bluegreen-proxy status --watch` have something to show. Standard library only: it runs in the
proxy's image.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import urllib.error
import urllib.request
from collections import Counter


def call(method: str, url: str, body: dict | None = None, headers: dict | None = None, timeout: float = 30.0):
    """(status, parsed JSON or None, response headers)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null"), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, None, exc.headers


def wait_for(url: str, seconds: float, headers: dict | None = None) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if call("GET", url, headers=headers, timeout=5)[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"{url} did not answer within {seconds:.0f}s")
        time.sleep(1)


def vector(rng: random.Random, dim: int) -> list[float]:
    return [rng.gauss(0, 1) for _ in range(dim)]


def build(qdrant: str, blue: str, green: str, points: int, dim: int, seed: int) -> None:
    for name, noise in ((blue, 0.0), (green, 0.15)):
        status, document, _ = call("GET", f"{qdrant}/collections/{name}/exists")
        if status == 200 and document["result"]["exists"]:
            print(f"{name}: exists, left as it is", flush=True)
            continue
        status, document, _ = call("PUT", f"{qdrant}/collections/{name}", {"vectors": {"size": dim, "distance": "Cosine"}})
        if status != 200:
            sys.exit(f"cannot create {name}: {status} {document}")
        rng = random.Random(seed)  # the same base vectors for both colours
        for start in range(0, points, 256):
            batch = []
            for point_id in range(start, min(start + 256, points)):
                base = vector(rng, dim)
                batch.append({"id": point_id, "vector": [x + noise * rng.gauss(0, 1) for x in base],
                              "payload": {"collection": name}})
            status, document, _ = call("PUT", f"{qdrant}/collections/{name}/points?wait=true", {"points": batch})
            if status != 200:
                sys.exit(f"cannot write points to {name}: {status} {document}")
        print(f"{name}: {points} points of {dim} dimensions", flush=True)


def traffic(proxy: str, route: str, dim: int, rate: float, users: int, duration: float, seed: int, api_key: str) -> Counter:
    rng = random.Random(seed + 1)
    served: Counter = Counter()
    started = last_report = time.monotonic()
    sent = 0
    while duration <= 0 or time.monotonic() - started < duration:
        user = f"user-{rng.randrange(users)}"
        try:
            status, _, headers = call("POST", f"{proxy}/collections/{route}/points/query",
                                      {"query": vector(rng, dim), "limit": 10}, {"x-user-id": user, **key_header(api_key)}, timeout=10)
            served[headers.get("x-bluegreen-color") if status == 200 else f"http {status}"] += 1
        except OSError as exc:
            served[f"no answer ({type(exc).__name__})"] += 1
        sent += 1
        now = time.monotonic()
        if now - last_report >= 10:
            last_report = now
            print(f"{sent} searches: " + ", ".join(f"{key} {count}" for key, count in sorted(served.items())), flush=True)
        time.sleep(max(0.0, started + sent / rate - time.monotonic()))
    return served


def key_header(api_key: str) -> dict:
    return {"api-key": api_key} if api_key else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qdrant", default="http://qdrant:6336", help="Qdrant's REST URL (direct, for the collections)")
    parser.add_argument("--proxy", default="http://proxy:6333", help="the proxy's data URL (for the searches)")
    parser.add_argument("--route", default="docs")
    parser.add_argument("--blue", default="docs_v1")
    parser.add_argument("--green", default="docs_v2")
    parser.add_argument("--points", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--rate", type=float, default=20.0, help="searches per second")
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--duration", type=float, default=0.0, help="seconds of traffic; 0: until stopped")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--api-key", default=os.environ.get("BLUEGREEN_API_KEY", ""),
                        help="the key the searches send to the proxy (default: $BLUEGREEN_API_KEY)")
    args = parser.parse_args(argv)

    wait_for(f"{args.qdrant}/", 120)
    build(args.qdrant, args.blue, args.green, args.points, args.dim, args.seed)
    wait_for(f"{args.proxy}/", 120, key_header(args.api_key))
    served = traffic(args.proxy, args.route, args.dim, args.rate, args.users, args.duration, args.seed, args.api_key)
    print("served: " + json.dumps(dict(served), sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
