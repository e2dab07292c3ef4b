"""`migrate plan --from BLUE [--size N] [--quantization Q] [--rate N]`: the capacity check before a migration.

What the API tells: points, vector parameters, quantization, HNSW m, payload indexes and their point
counts. What is estimated: vector bytes (raw: points x size x bytes per value; quantized: int8 1 byte a
dimension, binary 1 bit (1.5 / 2 bits with those encodings), product x4..x64 of float32), the HNSW
graph (points x 2m links x 4 bytes on layer 0, the one that matters), the payload (mean JSON size of a
sample of points x points). GREEN is the same with the new size and quantization. The backfill time
is at --rate, or at the scroll rate measured on BLUE now (an upper bound: writes and embedding are slower).
"""
from __future__ import annotations

import argparse
import json
import time

from proxy.cli.exit_codes import EXIT_OK
from proxy.cli.migrate.connection import MigrateError, Target, positive_float, positive_int
from proxy.cli.migrate.green_layout import LayoutError, pick_vector
from proxy.cli.migrate.progress import format_duration
from proxy.cli.qdrant_rest import collection_path
from routing.layout import vector_names, vector_params, vectors_of

DATATYPE_BYTES = {"float32": 4, "float16": 2, "uint8": 1}
QUANTIZATION_CHOICES = ("none", "int8", "binary", "binary-1.5bit", "binary-2bit",
                        "product-x4", "product-x8", "product-x16", "product-x32", "product-x64")
PAYLOAD_SAMPLE = 256
RATE_SAMPLE = 512


def add_parser(commands, parents) -> None:
    parser = commands.add_parser("plan", parents=parents, help="sizes of BLUE and of GREEN with new parameters; backfill time")
    parser.add_argument("--from", dest="source", required=True, metavar="BLUE")
    parser.add_argument("--size", type=positive_int, help="GREEN's vector size (the new model's)")
    parser.add_argument("--quantization", choices=QUANTIZATION_CHOICES, help="GREEN's quantization (default: BLUE's)")
    parser.add_argument("--vector", metavar="NAME", help="the named vector --size applies to")
    parser.add_argument("--rate", type=positive_float, help="backfill rate in points/s (default: measured scroll rate of BLUE)")
    parser.set_defaults(run=run)


def quantization_name(config: dict | None) -> str:
    """A collection's or vector's quantization_config as one of QUANTIZATION_CHOICES."""
    if not config:
        return "none"
    if "scalar" in config:
        return "int8"
    if "product" in config:
        return f"product-{config['product'].get('compression', 'x16')}"
    encoding = (config.get("binary") or {}).get("encoding") or "one_bit"
    return {"one_and_half_bits": "binary-1.5bit", "two_bits": "binary-2bit"}.get(encoding, "binary")


def quantized_bytes(size: int, quantization: str) -> float:
    if quantization == "none":
        return 0.0
    if quantization == "int8":
        return float(size)
    if quantization.startswith("binary"):
        bits = {"binary": 1.0, "binary-1.5bit": 1.5, "binary-2bit": 2.0}[quantization]
        return size * bits / 8
    return size * 4 / int(quantization.split("-x")[1])


def human_bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def estimate(points: int, vectors: dict[str, dict], m: int, payload_bytes: float) -> dict:
    """{vector name: (raw, quantized)}, hnsw and payload bytes, and the total in RAM-relevant bytes."""
    out = {"vectors": {}, "hnsw": 0.0, "payload": points * payload_bytes}
    for name, (size, datatype, quantization) in vectors.items():
        raw = points * size * DATATYPE_BYTES.get(datatype, 4)
        out["vectors"][name] = (raw, points * quantized_bytes(size, quantization), quantization, size)
        out["hnsw"] += points * 2 * m * 4
    out["total"] = sum(raw + q for raw, q, _, _ in out["vectors"].values()) + out["hnsw"] + out["payload"]
    return out


def _print_estimate(label: str, points: int, figures: dict) -> None:
    print(f"{label}:")
    for name, (raw, quantized, quantization, size) in figures["vectors"].items():
        line = f"  vector {name or '(unnamed)'}: {size} dims, raw {human_bytes(raw)}"
        line += f", quantized ({quantization}) {human_bytes(quantized)}" if quantization != "none" else ", not quantized"
        print(line)
    print(f"  hnsw graph (layer 0): ~{human_bytes(figures['hnsw'])}")
    print(f"  payload: ~{human_bytes(figures['payload'])}")
    print(f"  total: ~{human_bytes(figures['total'])} for {points} points")


async def run(args: argparse.Namespace, target: Target) -> int:
    async with target.client() as qdrant:
        info = await qdrant.info(args.source)
        points = await qdrant.count(args.source)
        sample = await qdrant.call("POST", collection_path(args.source, "points/scroll"),
                                   {"limit": PAYLOAD_SAMPLE, "with_payload": True, "with_vector": False})
        measured_rate = None
        if not args.rate:
            started = time.perf_counter()
            page = await qdrant.call("POST", collection_path(args.source, "points/scroll"),
                                     {"limit": RATE_SAMPLE, "with_payload": True, "with_vector": True})
            elapsed = time.perf_counter() - started
            read = len(page.get("points") or [])
            measured_rate = read / elapsed if read and elapsed > 0 else None
    config = info.get("config") or {}
    vectors = vectors_of(info) or {}
    m = (config.get("hnsw_config") or {}).get("m") or 16
    payloads = [len(json.dumps(p.get("payload") or {}, separators=(",", ":"))) for p in sample.get("points") or []]
    payload_bytes = sum(payloads) / len(payloads) if payloads else 0.0
    collection_quantization = quantization_name(config.get("quantization_config"))
    blue_vectors = {}
    for name in vector_names(vectors):
        p = vector_params(vectors, name)
        own = p.get("quantization_config")
        blue_vectors[name] = (p["size"], p.get("datatype") or "float32", quantization_name(own) if own else collection_quantization)
    green_vectors = dict(blue_vectors)
    if args.size or args.quantization or args.vector:
        try:
            chosen = pick_vector(vectors, args.vector, args.source) if (args.size or args.vector) else None
        except LayoutError as exc:
            raise MigrateError(str(exc)) from None
        for name, (size, datatype, quantization) in blue_vectors.items():
            green_vectors[name] = (args.size if name == chosen and args.size else size, datatype,
                                   args.quantization or quantization)
    print(f"plan for {args.source}: {points} points, hnsw m={m}, mean payload {payload_bytes:.0f} bytes (sample of {len(payloads)})")
    schema = info.get("payload_schema") or {}
    for field, index in sorted(schema.items()):
        print(f"  payload index {field} ({index.get('data_type')}): {index.get('points', '?')} points")
    _print_estimate(f"{args.source} (blue) now", points, estimate(points, blue_vectors, m, payload_bytes))
    _print_estimate("green with the new parameters", points, estimate(points, green_vectors, m, payload_bytes))
    rate = args.rate or measured_rate
    if rate:
        source = "given" if args.rate else "measured scroll rate of blue: an upper bound, writes and embedding are slower"
        print(f"backfill: {points} points at {rate:.0f} points/s ({source}): ~{format_duration(points / rate)}")
    else:
        print("backfill: no rate (empty collection); pass --rate N")
    return EXIT_OK
