"""Feature-hashing embedder: deterministic, instant, no model.

Texts that share terms get similar vectors; there is no meaning beyond that. The conformance
suite uses it for speed, and it serves offline experiments (``EMBEDDING_PROVIDER=hashing``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from ..text import terms

__all__ = ["HashingEmbedder"]


class HashingEmbedder:
    """Each term adds a weight in ±[0.5, 1.5) to one of ``dimension`` buckets, all chosen by its
    hash. Distinct weights keep different texts from tying exactly in similarity."""

    def __init__(self, dimension: int = 256) -> None:
        if dimension < 2:
            raise ValueError("dimension must be at least 2")
        self._dimension = dimension

    @property
    def name(self) -> str:
        return f"hashing-{self._dimension}"

    @property
    def dimension(self) -> int:
        return self._dimension

    def _vector(self, text: str) -> np.ndarray:
        vector = np.zeros(self._dimension, dtype=np.float64)
        # Texts made only of stop words still need a direction: fall back to their words.
        features = terms(text) or text.casefold().split() or [text]
        for feature in features:
            digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=16).digest()
            bucket = int.from_bytes(digest[:8], "little") % self._dimension
            weight = 0.5 + int.from_bytes(digest[8:15], "little") / 2**56
            vector[bucket] += weight if digest[15] & 1 else -weight
        if not vector.any():
            vector[0] = 1.0
        return (vector / np.linalg.norm(vector)).astype(np.float32)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        return np.stack([self._vector(t) for t in texts])

    def embed_query(self, text: str) -> np.ndarray:
        return self._vector(text)
