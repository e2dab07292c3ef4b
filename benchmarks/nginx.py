"""nginx configured by the harness: the fixed-response upstream, and the split proxy it is compared with.

Each instance lives in a prefix directory of its own (config, pid, logs, temp files), listens on
loopback only and runs in the foreground (`daemon off`) as a child of the harness.
One worker each: the proxy under test is one process, and the machine may have two cores.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from benchmarks.children import LOOPBACK, Child, Children

_CANDIDATE_PATHS = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")

_MAIN = """\
daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    # Clients keep their connections for the whole run (nginx closes after 1000 requests by default).
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    # Search bodies (~3 KB) stay in memory: no temp files on the measured path.
    client_body_buffer_size 64k;
    client_max_body_size 32m;
{server}
}}
"""

_FIXED_RESPONSE_SERVER = """\
    server {{
        listen {host}:{port} backlog=4096;
        default_type application/json;
        # Only physical collections exist here, so a request the split left unrouted fails loudly.
        location ~ ^/collections/[^/]+_(blue|green)(/|$) {{
            return 200 '{search_result}';
        }}
        location = / {{
            return 200 '{{"title":"qdrant - vector search engine (fixed-response stand-in)","version":"1.12.0"}}';
        }}
        location / {{
            return 404 '{{"status":{{"error":"Not found: no such collection"}},"time":0.0}}';
        }}
    }}
"""

_SPLIT_SERVER = """\
    # The same job as the proxy's route: a sticky share of x-user-id values reads from green.
    split_clients "{logical}:${{http_x_user_id}}" $bluegreen_collection {{
        {green_percent}% {green};
        * {blue};
    }}
    upstream qdrant {{
        server {upstream_host}:{upstream_port};
        keepalive 128;
    }}
    server {{
        listen {host}:{port} backlog=4096;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_buffer_size 16k;
        proxy_buffers 16 16k;
        location ~ ^/collections/{logical}(?<below>/.*)?$ {{
            proxy_pass http://qdrant/collections/$bluegreen_collection$below$is_args$args;
        }}
        location / {{
            proxy_pass http://qdrant;
        }}
    }}
"""


def find_nginx() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return next((path for path in _CANDIDATE_PATHS if Path(path).is_file()), None)


def fixed_response_server(port: int, search_result: str) -> str:
    if any(char in search_result for char in "$'\\"):
        raise ValueError("the fixed search result must not hold $, ' or \\ (nginx string syntax)")
    return _FIXED_RESPONSE_SERVER.format(host=LOOPBACK, port=port, search_result=search_result)


def split_server(port: int, upstream_port: int, logical: str, blue: str, green: str, green_percent: float) -> str:
    return _SPLIT_SERVER.format(
        host=LOOPBACK, port=port, upstream_host=LOOPBACK, upstream_port=upstream_port,
        logical=logical, blue=blue, green=green, green_percent=f"{green_percent:g}",
    )


def start_nginx(children: Children, name: str, prefix: Path, server: str, port: int) -> Child:
    prefix.mkdir(parents=True, exist_ok=True)
    config = prefix / "nginx.conf"
    config.write_text(_MAIN.format(prefix=prefix, server=server))
    args = [find_nginx() or "nginx", "-p", str(prefix), "-c", str(config), "-e", str(prefix / "error.log")]
    return children.start(name, args, ready_url=f"http://{LOOPBACK}:{port}/")
