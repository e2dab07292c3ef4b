"""`type: openai`: `POST {url}/embeddings` in OpenAI's shape, with httpx (imported when one is configured)."""
from __future__ import annotations

from proxy.embedding.backend import Backend, EmbedderError, Vector
from routing.config import EmbedderSettings, url_without_credentials

OPENAI_CALLS_IN_FLIGHT = 4  # concurrent requests to one embedding service


class OpenAIBackend(Backend):
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
