"""The admin listener: /metrics, /healthz, /readyz and /admin/... on a port of its own.

Qdrant owns /metrics, /healthz and /readyz on the data port; those pass through to it.
"""
from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from proxy.metrics import CONTENT_TYPE, Metrics
from proxy.state import ProxyState

if TYPE_CHECKING:
    from proxy.safety import SafetyController


def routes_document(state: ProxyState, safety: "SafetyController") -> dict:
    snapshot = state.snapshot
    reload = state.last_reload
    return {
        "generation": snapshot.generation,
        "last_reload": {"result": reload.result, "time": reload.at, "error": reload.error},
        "routes": {name: safety.route_status(name) for name in snapshot.table.routes},
    }


def build_admin_app(state: ProxyState, metrics: Metrics, safety: "SafetyController") -> Starlette:
    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(request: Request) -> Response:
        # Ready means "serving": a failed preflight only keeps green dark, so it is reported, not fatal.
        return JSONResponse({"ready": True, "generation": state.snapshot.generation, "routes": safety.readiness()})

    async def admin_routes(request: Request) -> Response:
        return JSONResponse(routes_document(state, safety))

    async def rollback(request: Request) -> Response:
        refusal = _authorize(request, state)
        if refusal is not None:
            return refusal
        name = request.path_params["route"]
        reason = "manual"
        if await request.body():
            try:
                document = await request.json()
            except ValueError:
                return _error(400, 'body must be JSON like {"reason": "..."}')
            if not isinstance(document, dict) or not isinstance(document.get("reason", ""), str):
                return _error(400, 'body must be JSON like {"reason": "..."}')
            reason = document.get("reason") or reason
        if name not in state.snapshot.table.routes:
            return _error(404, f"no route named `{name}`")
        safety.rollback(name, reason)
        await safety.flush()  # acknowledged once it survives a restart
        return JSONResponse({"route": name, **safety.route_status(name)})

    async def resume(request: Request) -> Response:
        refusal = _authorize(request, state)
        if refusal is not None:
            return refusal
        name = request.path_params["route"]
        if name not in state.snapshot.table.routes:
            return _error(404, f"no route named `{name}`")
        safety.resume(name)
        await safety.flush()  # acknowledged once it survives a restart
        return JSONResponse({"route": name, **safety.route_status(name)})

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


def _authorize(request: Request, state: ProxyState) -> Response | None:
    token = state.snapshot.config.admin.token
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
