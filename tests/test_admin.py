"""proxy.control.admin in process: the admin app on a real loopback socket, with the real rollout
controller and a file state store (one that can be written, and one that cannot)."""
from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx
import uvicorn

from proxy.control.admin import MAX_ADMIN_BODY_BYTES, build_admin_app
from proxy.control.rollout_controller import RolloutController
from proxy.control.rollout_store import FileStateStore, StateFile
from proxy.dataplane.live import LiveConfig
from proxy.metrics import Metrics
from routing.config import parse_config
from tests.support import free_port

TOKEN = "admin-secret"


async def no_upstream(method: str, path: str, body: bytes):
    raise AssertionError("a plain split never asks the upstream")


@contextlib.asynccontextmanager
async def admin_app(state_path: Path, token: str | None = TOKEN):
    """(base url, controller, shutting_down): the admin app served on this loop."""
    admin = f"admin: {{token: {token}}}\n" if token else ""
    config = parse_config(admin + "routes:\n  docs: {blue: a, green: b, green_percent: 40}\n", environ={})
    live = LiveConfig.initial(config, "hash", str(state_path.parent / "bluegreen.yaml"))
    metrics = Metrics()
    controller = RolloutController(live, metrics, no_upstream, FileStateStore(StateFile(state_path)), {})
    shutting_down = asyncio.Event()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(
        build_admin_app(live, metrics, controller, shutting_down), host="127.0.0.1", port=port,
        lifespan="off", access_log=False, log_level="warning",
    ))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", controller, shutting_down
    finally:
        server.should_exit = True
        await serving
        await controller.flush()


def bearer(token: str = TOKEN) -> dict:
    return {"authorization": f"Bearer {token}"}


def test_a_rollback_with_the_token_is_applied_persisted_and_shown(tmp_path):
    async def scenario():
        async with admin_app(tmp_path / "state.json") as (url, controller, _), httpx.AsyncClient(base_url=url) as http:
            answer = await http.post("/admin/routes/docs/rollback", json={"reason": "bad answers"}, headers=bearer())
            routes = (await http.get("/admin/routes")).json()
            return answer, routes, controller.live.snapshot.thresholds["docs"]

    answer, routes, threshold = asyncio.run(scenario())
    assert answer.status_code == 200
    assert answer.json()["persisted"] is True and answer.json()["effective_green_percent"] == 0
    assert routes["routes"]["docs"]["state"] == "rolled_back" and routes["state_store"]["writable"] is True
    assert threshold == 0
    assert "bad answers" in (tmp_path / "state.json").read_text()


def test_admin_commands_need_the_right_token_and_a_known_route(tmp_path):
    async def scenario():
        async with admin_app(tmp_path / "state.json") as (url, controller, _), httpx.AsyncClient(base_url=url) as http:
            wrong = await http.post("/admin/routes/docs/rollback", headers=bearer("guess"))
            missing = await http.post("/admin/routes/docs/rollback")
            unknown = await http.post("/admin/routes/nope/resume", headers=bearer())
            too_large = await http.post("/admin/routes/docs/rollback", content=b"x" * (MAX_ADMIN_BODY_BYTES + 1), headers=bearer())
            not_json = await http.post("/admin/routes/docs/rollback", content=b"{reason", headers=bearer())
            return [wrong, missing, unknown, too_large, not_json], controller.live.snapshot.thresholds["docs"]

    answers, threshold = asyncio.run(scenario())
    assert [a.status_code for a in answers] == [401, 401, 404, 413, 400]
    assert "admin token" in answers[0].json()["status"]["error"]
    assert "no route named `nope`" in answers[2].json()["status"]["error"]
    assert threshold == 4000  # nothing was applied


def test_without_a_token_admin_commands_are_disabled(tmp_path):
    async def scenario():
        async with admin_app(tmp_path / "state.json", token=None) as (url, _, _), httpx.AsyncClient(base_url=url) as http:
            return await http.post("/admin/routes/docs/rollback", headers=bearer())

    answer = asyncio.run(scenario())
    assert answer.status_code == 403 and "set admin.token" in answer.json()["status"]["error"]


def test_a_decision_the_store_cannot_take_applies_here_and_says_it_is_not_persisted(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")

    async def scenario():
        async with admin_app(blocker / "state.json") as (url, controller, _), httpx.AsyncClient(base_url=url) as http:
            answer = await http.post("/admin/routes/docs/rollback", headers=bearer())
            ready = await http.get("/readyz")
            return answer, ready, controller.live.snapshot.thresholds["docs"]

    answer, ready, threshold = asyncio.run(scenario())
    assert answer.status_code == 503 and answer.json()["persisted"] is False
    assert "NOT persisted" in answer.json()["status"]["error"]
    assert threshold == 0  # in force on this replica all the same
    assert ready.status_code == 200 and ready.json()["state_store"]["writable"] is False


def test_readiness_turns_false_when_shutdown_begins(tmp_path):
    async def scenario():
        async with admin_app(tmp_path / "state.json") as (url, _, shutting_down), httpx.AsyncClient(base_url=url) as http:
            before = await http.get("/readyz")
            shutting_down.set()
            after = await http.get("/readyz")
            alive = await http.get("/healthz")
            return before, after, alive

    before, after, alive = asyncio.run(scenario())
    assert before.status_code == 200 and before.json()["ready"] is True
    assert after.status_code == 503 and after.json() == {"ready": False, "reason": "shutting down"}
    assert alive.status_code == 200 and alive.text == "ok"
