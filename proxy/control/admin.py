"""The admin listener: /metrics, /healthz, /readyz and /admin/... on a port of its own.

Qdrant owns /metrics, /healthz and /readyz on the data port; those pass through to it.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import time
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from proxy.dataplane.body import BodyTooLarge, read_body
from proxy.dataplane.live import LiveConfig
from proxy.metrics import CONTENT_TYPE, Metrics

if TYPE_CHECKING:
    from proxy.control.rollout_controller import RolloutController

MAX_ADMIN_BODY_BYTES = 64 * 1024  # a rollback reason is a sentence; a larger body gets a 413
NOT_PERSISTED_STATUS = 503  # the decision applies on this replica, but the state store did not take it


def route_status(live: LiveConfig, controller: "RolloutController", name: str) -> dict:
    route = live.snapshot.config.routes[name]
    status = controller.rollouts[name].status(controller.clock())
    return {
        "blue": route.blue,
        "green": route.green,
        "green_percent": route.green_percent,
        "effective_green_percent": status["effective_green_percent"],
        **{key: value for key, value in status.items() if key not in ("configured_green_percent", "effective_green_percent")},
    }


def routes_document(live: LiveConfig, controller: "RolloutController") -> dict:
    snapshot = live.snapshot
    reload = live.last_reload
    return {
        "generation": snapshot.generation,
        "last_reload": {"result": reload.result, "time": reload.at, "error": reload.error},
        "routes": {name: route_status(live, controller, name) for name in snapshot.table.routes},
        "state_store": state_store_status(controller, controller.shared.error),
    }


def state_store_status(controller: "RolloutController", error: str | None) -> dict:
    """The store, whether it takes decisions now, and how long ago it last answered a read or save."""
    last = controller.shared.last_sync
    age = None if last is None else round(max(0.0, time.time() - last), 3)
    return {**controller.store.details(), "writable": error is None, "error": error, "last_sync_age_s": age}


def readiness(controller: "RolloutController") -> dict:
    return {
        name: {"state": rollout.state, "reason": rollout.reason, "detail": rollout.detail}
        for name, rollout in controller.rollouts.items()
    }


# Long: each admin endpoint is a closure over the live config, metrics and controller, defined here.
def build_admin_app(live: LiveConfig, metrics: Metrics, controller: "RolloutController", shutting_down: asyncio.Event) -> Starlette:
    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(request: Request) -> Response:
        if shutting_down.is_set():  # load balancers take the proxy out before its data listener closes
            return JSONResponse({"ready": False, "reason": "shutting down"}, status_code=503)
        # Ready means "serving": a failed preflight only keeps green dark and an unwritable state
        # store only stops decisions from being kept, so both are reported, not fatal.
        error = await controller.state_store_problem()
        document = {"ready": True, "generation": live.snapshot.generation, "state_store": state_store_status(controller, error)}
        if controller.store.kind == "file":  # as before the Qdrant store
            document["state_file"] = {"path": controller.store.details()["path"], "writable": error is None, "error": error}
        return JSONResponse({**document, "routes": readiness(controller)})

    async def admin_routes(request: Request) -> Response:
        return JSONResponse(routes_document(live, controller))

    async def rollback(request: Request) -> Response:
        refusal = _authorize(request, live)
        if refusal is not None:
            return refusal
        name = request.path_params["route"]
        try:
            body = await read_body(request.scope, request.receive, MAX_ADMIN_BODY_BYTES)
        except BodyTooLarge:
            return _error(413, f"body larger than {MAX_ADMIN_BODY_BYTES // 1024} KiB; send {{\"reason\": \"...\"}}")
        reason = "manual"
        if body:
            try:
                document = json.loads(body)
            except ValueError:
                return _error(400, 'body must be JSON like {"reason": "..."}')
            if not isinstance(document, dict) or not isinstance(document.get("reason", ""), str):
                return _error(400, 'body must be JSON like {"reason": "..."}')
            reason = document.get("reason") or reason
        if name not in live.snapshot.table.routes:
            return _error(404, f"no route named `{name}`")
        await controller.sync()  # decide on what the other replicas saved
        controller.rollback(name, reason)
        return await _decided(name, "rollback")

    async def resume(request: Request) -> Response:
        refusal = _authorize(request, live)
        if refusal is not None:
            return refusal
        name = request.path_params["route"]
        try:
            await read_body(request.scope, request.receive, MAX_ADMIN_BODY_BYTES)
        except BodyTooLarge:
            return _error(413, f"body larger than {MAX_ADMIN_BODY_BYTES // 1024} KiB; resume takes no body")
        if name not in live.snapshot.table.routes:
            return _error(404, f"no route named `{name}`")
        await controller.sync()
        controller.resume(name)
        return await _decided(name, "resume")

    async def _decided(name: str, action: str) -> JSONResponse:
        """Acknowledged once it is in the state store; otherwise an error that says so."""
        error = await controller.persist(name)
        status = route_status(live, controller, name)
        if error is None:
            return JSONResponse({"route": name, "persisted": True, **status})
        message = (f"{action} applies on this replica now but is NOT persisted: {error}; it will not survive "
                   f"a restart nor reach other replicas until the {controller.store.describe()} can be written (retried every second)")
        return JSONResponse(
            {"status": {"error": message}, "route": name, "persisted": False, **status}, status_code=NOT_PERSISTED_STATUS,
        )

    return Starlette(
        routes=[
            Route("/metrics", metrics_endpoint),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/admin/routes", admin_routes),
            Route("/admin/routes/{route}/rollback", rollback, methods=["POST"]),
            Route("/admin/routes/{route}/resume", resume, methods=["POST"]),
        ]
    )


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"status": {"error": message}}, status_code=status)


def _authorize(request: Request, live: LiveConfig) -> Response | None:
    token = live.snapshot.config.admin.token
    if token is None:
        return _error(
            403,
            "admin commands are disabled: set admin.token in the config "
            "(e.g. token: ${BLUEGREEN_ADMIN_TOKEN}) and send `Authorization: Bearer <token>`",
        )
    sent = request.headers.get("authorization", "")
    scheme, _, credentials = sent.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(credentials.strip().encode(), token.encode()):
        return _error(401, "missing or wrong admin token: send `Authorization: Bearer <admin.token>`")
    return None
