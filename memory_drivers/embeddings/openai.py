"""Embedder for any OpenAI-compatible ``/embeddings`` endpoint, over httpx.

OpenAI, Mistral, Ollama (``/v1``) and Hugging Face TEI speak the same request::

    EMBEDDING_PROVIDER=openai
    EMBEDDING_API_URL=https://api.openai.com/v1      # Ollama: http://127.0.0.1:11434/v1
    EMBEDDING_API_KEY=sk-...
    EMBEDDING_MODEL=text-embedding-3-small
    EMBEDDING_DIMENSION=1536     # optional; asked of the server once when not set

Network errors, 429 and 5xx answers are retried with exponential backoff; any other failure is an
:class:`~memory_drivers.errors.EmbeddingError` (or ``BackendUnavailableError`` when the server
cannot be reached) naming the URL and the server's message.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from ..errors import BackendUnavailableError, EmbeddingError

__all__ = ["OpenAIEmbedder", "server_message"]

RETRY_STATUS = {408, 429, 500, 502, 503, 504}


class OpenAIEmbedder:
    """Calls ``POST {api_url}/embeddings`` with ``{"model": ..., "input": [...]}``."""

    def __init__(
        self,
        model: str,
        *,
        api_url: str = "https://api.openai.com/v1",
        api_key: str | None = None,
        dimension: int | None = None,
        batch_size: int = 64,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._model = model
        self._url = api_url.rstrip("/") + "/embeddings"
        self._dimension = dimension
        self._batch_size = batch_size
        self._retries = retries
        self._backoff = backoff
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers, transport=transport)
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"openai:{self._model}"

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            with self._lock:
                if self._dimension is None:
                    self._dimension = len(self._request(["dimension probe"])[0])
        return self._dimension

    def close(self) -> None:
        self._client.close()

    def _post(self, texts: list[str]) -> httpx.Response:
        payload = {"model": self._model, "input": texts}
        for attempt in range(self._retries + 1):
            last = attempt == self._retries
            try:
                response = self._client.post(self._url, json=payload)
            except httpx.TimeoutException as exc:
                if last:
                    raise BackendUnavailableError(
                        f"the embedding server at {self._url} did not answer in time ({exc})"
                    ) from exc
            except httpx.TransportError as exc:
                if last:
                    raise BackendUnavailableError(
                        f"cannot reach the embedding server at {self._url}: {exc}. "
                        "Check EMBEDDING_API_URL and that the server is running."
                    ) from exc
            else:
                if response.status_code not in RETRY_STATUS or last:
                    return response
            time.sleep(self._backoff * 2**attempt)
        raise AssertionError("unreachable")

    def _request(self, texts: list[str]) -> list[list[float]]:
        response = self._post(texts)
        if response.status_code != 200:
            raise EmbeddingError(
                f"the embedding server at {self._url} answered {response.status_code}: "
                f"{server_message(response)}"
            )
        try:
            data = sorted(response.json()["data"], key=lambda item: item["index"])
            vectors = [item["embedding"] for item in data]
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingError(
                f"the embedding server at {self._url} sent an answer that is not an "
                f"OpenAI-style embeddings response ({exc!r}): {response.text[:200]}"
            ) from None
        if len(vectors) != len(texts):
            raise EmbeddingError(
                f"the embedding server at {self._url} returned {len(vectors)} vectors "
                f"for {len(texts)} texts"
            )
        return vectors

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self._batch_size):
            vectors.extend(self._request(texts[start : start + self._batch_size]))
        if not vectors:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.asarray(vectors, dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return np.asarray(self._request([text])[0], dtype=np.float32)


def server_message(response: httpx.Response) -> str:
    """The error an OpenAI-compatible server sent (``{"error": {"message": ...}}`` or text),
    shortened for a message; also used by the summariser, which speaks the same API."""
    try:
        body: Any = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return str(error.get("message") or error)[:300]
        return str(error)[:300]
    return str(body)[:300]
