"""Embedders for tests: the real default model (loaded once), a call recorder, a faulty one."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from ..embeddings import Embedder
from ..embeddings.hashing import HashingEmbedder

__all__ = ["FaultyEmbedder", "RecordingEmbedder", "default_embedder", "fast_embedder"]


@functools.cache
def default_embedder() -> Embedder:
    """The real default model (all-MiniLM-L6-v2, on the default backend), shared by every test
    in the process."""
    from ..config import build_settings
    from ..embeddings import get_embedder

    return get_embedder(build_settings(_env_file=None))


def fast_embedder() -> Embedder:
    """A deterministic feature-hashing embedder: instant, meaning only through shared words."""
    return HashingEmbedder(256)


class RecordingEmbedder:
    """Wraps an embedder and records each call (to prove batching)."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.document_calls: list[int] = []
        self.query_calls = 0

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def embed_documents(self, texts: Sequence[str]) -> Any:
        self.document_calls.append(len(texts))
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> Any:
        self.query_calls += 1
        return self.inner.embed_query(text)


class FaultyEmbedder:
    """Like its inner embedder, except for texts containing ``trigger``: those get a vector with
    NaN, one of the wrong dimension, an all-zero one, or an exception."""

    def __init__(
        self,
        inner: Embedder,
        fault: Literal["nan", "dimension", "zero", "raise"],
        trigger: str = "POISON",
    ) -> None:
        self.inner = inner
        self.fault = fault
        self.trigger = trigger

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def _spoil(self, text: str, vector: np.ndarray) -> np.ndarray:
        if self.trigger not in text:
            return vector
        if self.fault == "raise":
            raise RuntimeError("the model crashed")
        if self.fault == "nan":
            vector = vector.copy()
            vector[0] = np.nan
            return vector
        if self.fault == "zero":
            return np.zeros_like(vector)
        return np.append(vector, 0.5).astype(np.float32)

    def embed_documents(self, texts: Sequence[str]) -> Any:
        vectors = np.asarray(self.inner.embed_documents(texts), dtype=np.float32)
        spoiled = [self._spoil(t, v) for t, v in zip(texts, vectors, strict=True)]
        if self.fault == "dimension" and any(self.trigger in t for t in texts):
            return [list(v) for v in spoiled]
        return np.stack(spoiled) if spoiled else vectors

    def embed_query(self, text: str) -> Any:
        return self._spoil(text, np.asarray(self.inner.embed_query(text), dtype=np.float32))
