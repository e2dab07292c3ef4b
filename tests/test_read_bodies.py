"""proxy.dataplane.read_bodies: large read bodies parsed in the worker process, the same answers as inline."""
from __future__ import annotations

import asyncio

import pytest

from proxy.dataplane.read_bodies import ReadBodies
from routing.rewrite import UnreadableBody

# One loop for the module: the read-body worker belongs to the loop that started it, as in the proxy.
LOOP = asyncio.new_event_loop()

BODY = b'{"query":[0.5,0.25],"lookup_from":{"collection":"docs"},"with_lookup":"other"}'


def run(read_bodies: ReadBodies, call):
    async def go():
        return await call(read_bodies)

    return LOOP.run_until_complete(go())


@pytest.mark.parametrize("large", [1 << 20, 8], ids=["inline", "worker"])
def test_the_same_answers_inline_and_in_the_worker(large):
    read_bodies = ReadBodies(large=large)
    try:
        assert sorted(run(read_bodies, lambda r: r.collections_named(BODY))) == ["docs", "other"]
        rewritten = run(read_bodies, lambda r: r.rewrite(BODY, {"docs": "docs_v2"}))
        assert b'"collection":"docs_v2"' in rewritten and b'"with_lookup":"other"' in rewritten
        assert run(read_bodies, lambda r: r.rewrite(BODY, {"nothing": "x"})) is None
        alias = b'{"actions":[{"create_alias":{"collection_name":"docs","alias_name":"a"}}]}'
        assert "docs_b" in run(read_bodies, lambda r: r.alias_refusal(alias, {"docs": ("docs_b", "docs_g")}))
        with pytest.raises(UnreadableBody):
            run(read_bodies, lambda r: r.collections_named(BODY[:-1] + b"\xff}"))
    finally:
        read_bodies.close()


def test_a_worker_that_died_is_replaced():
    read_bodies = ReadBodies(large=8)

    async def go():
        assert await read_bodies.collections_named(BODY)
        read_bodies._worker.kill()
        await read_bodies._worker.wait()
        return await read_bodies.collections_named(BODY)

    try:
        assert LOOP.run_until_complete(go())
    finally:
        read_bodies.close()
