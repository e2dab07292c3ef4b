"""An operator's command on one route through the admin listener (rollback, resume), and its one-line answer."""
from __future__ import annotations

import sys

from proxy.cli.admin_client import admin_client, safe_admin_url
from proxy.cli.exit_codes import EXIT_FAILED, EXIT_OK
from routing.config import ConfigError


def run_route_action(args, action: str, body: dict | None) -> int:
    try:
        status, document = admin_client(args).call("POST", f"/admin/routes/{args.route}/{action}", body)
    except (OSError, ConfigError) as exc:
        print(f"bluegreen-proxy: cannot reach the admin listener at {safe_admin_url(args)}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if status != 200:
        error = document.get("status", {}).get("error", document)
        verdict = "applied but not persisted" if document.get("persisted") is False else "refused"
        print(f"{action} {verdict} ({status}): {error}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{args.route}: state {document.get('state')}, effective green {document.get('effective_green_percent'):g}%")
    return EXIT_OK
