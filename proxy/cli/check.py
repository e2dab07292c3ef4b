"""`bluegreen-proxy check`: validate a config file and print the route table."""
from __future__ import annotations

from proxy.cli.config_file import load_config
from proxy.cli.exit_codes import EXIT_OK, EXIT_USAGE
from routing.config import Config, url_without_credentials
from routing.table import RouteTable

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def add_parser(commands) -> None:
    parser = commands.add_parser("check", help="validate a config file and print the route table")
    parser.add_argument("--config", required=True)
    parser.set_defaults(func=run)


def run(args) -> int:
    config = load_config(args.config)
    if config is None:
        return EXIT_USAGE
    print(f"{args.config}: valid")
    print(f"listen {config.listen.host}:{config.listen.port}  admin {config.admin.host}:{config.admin.port}  upstream {config.upstream.url}"
          + grpc_listener(config))
    print(clients_line(config))
    table = RouteTable(config)
    if not table.routes:
        print("no routes: every request passes through unchanged")
        return EXIT_OK
    print(f"{'route':24} {'blue':24} {'green':24} {'green%':>7}  {'writes':6} {'fallback':8} {'safety':32} key")
    for name, route in table.routes.items():
        s = route.settings
        safety = ",".join(part for part in ("preflight", "guard", "rollout", "failover", "shadow") if getattr(s, part)) or "-"
        print(f"{name:24} {s.blue:24} {s.green:24} {s.green_percent:>7g}  {s.writes:6} {s.fallback:8} {safety:32} {','.join(s.key)}")
    print_embedding(config)
    return EXIT_OK


def grpc_listener(config: Config) -> str:
    """The gRPC listener and where it forwards, or nothing without a `grpc` block."""
    if config.grpc is None:
        return ""
    target = "embedded" if config.upstream.is_embedded else config.upstream.grpc_target
    return f"  grpc {config.grpc.host}:{config.grpc.port} -> {target}"


def clients_line(config: Config) -> str:
    """What `clients` checks, without a secret; a warning per reachable data port (REST, gRPC) that checks nothing."""
    clients = config.clients
    if clients is None:
        line = "clients: not authenticated by the proxy (their own credentials pass through; nothing added)"
        listeners = [("listen.host", config.listen.host)] + ([("grpc.host", config.grpc.host)] if config.grpc else [])
        for key, host in listeners:
            if host not in LOCAL_HOSTS:
                line += f"\nWARNING: {key} {host} reaches beyond this machine: add a `clients` block"
        return line
    jwt = "jwt HS256" if clients.jwt else "no jwt"
    return f"clients: {len(clients.api_keys)} api key(s), {jwt}, anonymous {clients.anonymous}"


def print_embedding(config: Config) -> None:
    """Which model embeds text for each colour of each route with `embed`."""
    for name, embedder in config.embedders.items():
        where = "in process" if embedder.type == "local" else url_without_credentials(embedder.url)
        size = f"{embedder.dimensions} dims" if embedder.dimensions else "dims from its first answer"
        print(f"embedder {name}: {embedder.type} {embedder.model} ({where}, {size})")
    for name, route in config.routes.items():
        if route.embed is not None:
            print(f"route {name} embeds text with: " + ", ".join(f"{where} {embedder}" for where, embedder in route.embed.names()))
