"""Embedding models (`embedders:` in the config): text in, vectors out.

`build_embedders(config.embedders)` gives one `Embedder` per name. `await embedder.embed(texts, kind)`
returns one vector per text, with the embedder's `query_prefix` or `document_prefix` applied per
`kind`. Behind it:
- micro-batching: texts asked for while the model is busy wait and go together in the next call (up to
  `batch_size`); an idle model is called on the next turn of the event loop, so texts asked for together
  share a call and a lone query waits for nothing. Query texts go before document texts, so a bulk
  upsert does not hold up searches;
- an LRU cache of query embeddings (`cache_size`; documents are not cached: they are rarely repeated);
- the backends: `type: local` (proxy/embedding/local.py) and `type: openai` (proxy/embedding/openai.py);
- every answer's length is checked against `dimensions` (for openai without `dimensions`, against the
  first answer's);
- metrics per embedder: duration per call, texts, errors by kind, cache hits.
Failures raise `EmbedderError` (its `kind` is the metric label).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any, Mapping

from proxy.embedding.backend import Backend, EmbedderError, TextKind, Vector
from proxy.embedding.local import LocalBackend
from proxy.embedding.openai import OpenAIBackend
from routing.config import EmbedderSettings

if TYPE_CHECKING:
    from proxy.metrics import Metrics

log = logging.getLogger("bluegreen.embed")

RETIRE_AFTER_SECONDS = 30.0  # a replaced embedder serves requests in flight this long, then closes
WARN_EVERY_SECONDS = 10.0  # failures of one kind are logged at most this often per embedder (an outage floods)


class Embedder:
    """One named embedding model; safe to share between requests (and helpers) on one event loop."""

    def __init__(self, name: str, settings: EmbedderSettings, backend: Backend, metrics: "Metrics | None" = None):
        self.name = name
        self.settings = settings
        self._backend = backend
        self.dimensions: int | None = settings.dimensions  # None until the first answer (openai)
        self._cache: OrderedDict[str, Vector] = OrderedDict()
        self._queries: deque[tuple[str, asyncio.Future]] = deque()
        self._documents: deque[tuple[str, asyncio.Future]] = deque()
        self._in_flight = 0
        self._dispatch_scheduled = False
        self._closed = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._metrics = _EmbedderMetrics(metrics, name) if metrics is not None else None
        self._warned: dict[str, tuple[float, int]] = {}  # failure kind -> (last logged, failures since)

    async def embed(self, texts: list[str], kind: TextKind) -> list[Vector]:
        """One vector per text, in order. Raises EmbedderError."""
        if not texts:
            return []
        if self._closed:
            raise EmbedderError(self.name, "closed", "was removed from the config")
        prefix = self.settings.query_prefix if kind == "query" else self.settings.document_prefix
        cache = self._cache if kind == "query" and self.settings.cache_size else None
        vectors: list[Vector | None] = [None] * len(texts)
        wanted: dict[str, list[int]] = {}  # prefixed text -> its positions (a text asked twice is embedded once)
        hits = 0
        for index, text in enumerate(texts):
            full = prefix + text
            if cache is not None and (cached := cache.get(full)) is not None:
                cache.move_to_end(full)
                vectors[index] = cached
                hits += 1
            else:
                wanted.setdefault(full, []).append(index)
        if hits and self._metrics is not None:
            self._metrics.cache_hits.inc(hits)
        if wanted:
            queue = self._queries if kind == "query" else self._documents
            loop = asyncio.get_running_loop()
            futures = []
            for full in wanted:
                future = loop.create_future()
                queue.append((full, future))
                futures.append(future)
            self._schedule()
            embedded = await asyncio.gather(*futures)
            for (full, positions), vector in zip(wanted.items(), embedded):
                for index in positions:
                    vectors[index] = vector
                if cache is not None:
                    cache[full] = vector
            if cache is not None:
                while len(cache) > self.settings.cache_size:
                    cache.popitem(last=False)
        return vectors  # type: ignore[return-value]

    def warm(self) -> asyncio.Future | None:
        """Start loading a local model now rather than on the first request; None for a service."""
        return self._backend.warm()

    async def close(self, wait: float = 0.0) -> None:
        """Stop taking texts; give calls in flight up to `wait` seconds; fail what is still queued."""
        self._closed = True
        if wait and not self._idle.is_set():
            try:
                await asyncio.wait_for(self._idle.wait(), wait)
            except asyncio.TimeoutError:
                pass
        for queue in (self._queries, self._documents):
            while queue:
                _, future = queue.popleft()
                if not future.done():
                    future.set_exception(EmbedderError(self.name, "closed", "was removed from the config"))
        await self._backend.close()

    # ------------------------------------------------------------ batching

    def _schedule(self) -> None:
        if not self._dispatch_scheduled and self._in_flight < self._backend.calls_in_flight:
            self._dispatch_scheduled = True
            asyncio.get_running_loop().call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._dispatch_scheduled = False
        while self._in_flight < self._backend.calls_in_flight:
            batch = self._take(self.settings.batch_size)
            if not batch:
                break
            self._in_flight += 1
            self._idle.clear()
            asyncio.get_running_loop().create_task(self._call(batch))

    def _take(self, limit: int) -> list[tuple[str, asyncio.Future]]:
        batch = []
        for queue in (self._queries, self._documents):
            while queue and len(batch) < limit:
                item = queue.popleft()
                if not item[1].done():  # its request is gone (client disconnected)
                    batch.append(item)
        return batch

    async def _call(self, batch: list[tuple[str, asyncio.Future]]) -> None:
        texts = [text for text, _ in batch]
        started = time.perf_counter()
        try:
            try:
                vectors = await self._backend.encode(texts)
            finally:
                if self._metrics is not None:
                    self._metrics.duration.observe(time.perf_counter() - started)
            self._check(vectors, len(texts))
        except EmbedderError as error:
            self._fail(batch, error)
        except Exception as exc:  # noqa: BLE001 - whatever a model raises is this embedder's failure
            log.exception("embedder %s failed", self.name)
            self._fail(batch, EmbedderError(self.name, "model", f"failed: {type(exc).__name__}: {exc}"))
        else:
            if self._metrics is not None:
                self._metrics.texts.inc(len(texts))
            for (_, future), vector in zip(batch, vectors):
                if not future.done():
                    future.set_result(vector)
        finally:
            self._in_flight -= 1
            if self._queries or self._documents:
                self._schedule()
            elif self._in_flight == 0:
                self._idle.set()

    def _check(self, vectors: list[Vector], count: int) -> None:
        if len(vectors) != count:
            raise EmbedderError(self.name, "response", f"answered {len(vectors)} vectors for {count} texts")
        expected = self.dimensions
        for vector in vectors:
            if expected is None:
                expected = self.dimensions = len(vector)
            if len(vector) != expected:
                raise EmbedderError(self.name, "dimensions", f"answered a {len(vector)}-dimensional vector, expected {expected}")

    def _fail(self, batch: list[tuple[str, asyncio.Future]], error: EmbedderError) -> None:
        if self._metrics is not None:
            self._metrics.errors(error.kind).inc()
        now = time.monotonic()
        last, unlogged = self._warned.get(error.kind, (float("-inf"), 0))
        if now - last >= WARN_EVERY_SECONDS:
            log.warning("%s%s", error, f" ({unlogged} more failures of this kind since the last report)" if unlogged else "")
            self._warned[error.kind] = (now, 0)
        else:
            self._warned[error.kind] = (last, unlogged + 1)
        for _, future in batch:
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved here: a caller that went away must not log it again


class _EmbedderMetrics:
    __slots__ = ("duration", "texts", "cache_hits", "_errors", "_name")

    def __init__(self, metrics: "Metrics", name: str):
        self._name = name
        self.duration = metrics.embed_duration.labels(name)
        self.texts = metrics.embed_texts.labels(name)
        self.cache_hits = metrics.embed_cache_hits.labels(name)
        self._errors = metrics.embed_errors

    def errors(self, kind: str):
        return self._errors.labels(self._name, kind)


def build_embedder(name: str, settings: EmbedderSettings, metrics: "Metrics | None" = None) -> Embedder:
    backend = OpenAIBackend(name, settings) if settings.type == "openai" else LocalBackend(name, settings)
    return Embedder(name, settings, backend, metrics)


def build_embedders(settings: Any, metrics: "Metrics | None" = None) -> dict[str, Embedder]:
    """One Embedder per configured name; `settings` is `config.embedders` (or the Config itself).
    Call it on the event loop that will use them."""
    settings = getattr(settings, "embedders", settings)
    return {name: build_embedder(name, each, metrics) for name, each in settings.items()}


class EmbedderSet:
    """The proxy's live embedders, kept in step with config reloads: unchanged ones are kept (with their
    cache), changed and removed ones retire after the requests in flight are done."""

    def __init__(self, metrics: "Metrics | None" = None):
        self.metrics = metrics
        self._by_name: dict[str, Embedder] = {}
        self._retiring: set[asyncio.Task] = set()

    def get(self, name: str) -> Embedder | None:
        return self._by_name.get(name)

    def apply(self, settings: Mapping[str, EmbedderSettings]) -> dict[str, asyncio.Future]:
        """Take a config's `embedders`; returns the loading of each new local model (by name)."""
        current, self._by_name = self._by_name, {}
        loading = {}
        for name, each in settings.items():
            kept = current.pop(name, None)
            if kept is not None and kept.settings == each:
                self._by_name[name] = kept
                continue
            if kept is not None:
                current[f"{name} (replaced)"] = kept
            embedder = self._by_name[name] = build_embedder(name, each, self.metrics)
            warming = embedder.warm()
            if warming is not None:
                _log_warm_failure(warming, name)
                loading[name] = warming
        for old in current.values():
            task = asyncio.get_running_loop().create_task(old.close(wait=RETIRE_AFTER_SECONDS))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        return loading

    async def close(self) -> None:
        for task in list(self._retiring):
            task.cancel()
        embedders, self._by_name = list(self._by_name.values()), {}
        for embedder in embedders:
            await embedder.close()


def _log_warm_failure(future: asyncio.Future, name: str) -> None:
    def done(f: asyncio.Future) -> None:
        if not f.cancelled() and f.exception() is not None:
            log.error("embedder %s: its model did not load: %s", name, f.exception())

    future.add_done_callback(done)
