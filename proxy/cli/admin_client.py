"""The proxy's admin listener as the commands call it: the address from the flags, JSON calls, the token."""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

from routing.config import ADMIN_DEFAULT_PORT, ConfigError

DEFAULT_TIMEOUT = 10.0


class AdminClient:
    """Calls to one admin listener; no answer at all raises OSError (urllib's errors are OSErrors)."""

    def __init__(self, url: str, token: str | None = None, timeout: float = DEFAULT_TIMEOUT):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        """(status, JSON document) of any answer, error statuses included."""
        headers = {"content-type": "application/json"}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.loads(exc.read() or b"{}")
            except ValueError:
                return exc.code, {"status": {"error": exc.reason}}

    def get(self, path: str) -> bytes:
        """The body of a GET; an error status raises (HTTPError, an OSError)."""
        with urllib.request.urlopen(self.url + path, timeout=self.timeout) as response:
            return response.read()


def add_admin_flags(parser) -> None:
    parser.add_argument("--admin", help=f"admin URL (default: from --config, else http://127.0.0.1:{ADMIN_DEFAULT_PORT})")
    parser.add_argument("--config", help="config file whose admin address to use")
    parser.add_argument("--token", help="admin token (default: $BLUEGREEN_ADMIN_TOKEN)")


def admin_url(args) -> str:
    """--admin, else the config's admin address, else the default; ConfigError for an invalid config."""
    if args.admin:
        return args.admin.rstrip("/")
    if getattr(args, "config", None):
        from proxy.control.reload import read_config

        config, _ = read_config(args.config)
        return f"http://{config.admin.host}:{config.admin.port}"
    return f"http://127.0.0.1:{ADMIN_DEFAULT_PORT}"


def safe_admin_url(args) -> str:
    """admin_url for a message, whatever the config holds."""
    try:
        return admin_url(args)
    except ConfigError:
        return "(admin address from an invalid config)"


def admin_client(args) -> AdminClient:
    """The admin client the flags describe, with --token or $BLUEGREEN_ADMIN_TOKEN; ConfigError as admin_url."""
    return AdminClient(admin_url(args), args.token or os.environ.get("BLUEGREEN_ADMIN_TOKEN"))
