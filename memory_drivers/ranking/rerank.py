"""Rerankers: an optional last stage that re-scores the best candidates of a recall.

A reranker reads the query and each candidate's text together (a cross-encoder), which ranks
better than comparing two vectors, but costs a model call per candidate, so it only sees the
``RERANK_DEPTH`` best candidates of the first stage (at least ``top_k``). Every hit a reranked
recall returns carries the reranker's score; none is configured by default.

Environment::

    RERANKER=cross-encoder
    RERANKER_MODEL=/models/ms-marco-MiniLM-L-6-v2     # a local sentence-transformers CrossEncoder
    RERANK_DEPTH=30

Python: any object with ``name`` and ``score(query, documents)`` (:class:`Reranker`), given as
``Driver(reranker=...)``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from ..errors import ConfigurationError, MissingDependencyError

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["CrossEncoderReranker", "Reranker", "get_reranker"]


@runtime_checkable
class Reranker(Protocol):
    """Scores how well each document answers the query; higher is better."""

    @property
    def name(self) -> str:
        """A name for logs and reports."""
        ...

    def score(self, query: str, documents: Sequence[str]) -> Sequence[float]:
        """One score per document, in their order."""
        ...


class CrossEncoderReranker:
    """A sentence-transformers ``CrossEncoder`` loaded from a local path (nothing downloaded)."""

    def __init__(self, model: str, *, batch_size: int = 32, device: str | None = None) -> None:
        self.model_path = model
        self.batch_size = batch_size
        self._device = device
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"cross-encoder:{self.model_path}"

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                try:
                    from sentence_transformers import CrossEncoder
                except ImportError as exc:
                    raise MissingDependencyError(
                        f"the cross-encoder reranker needs sentence-transformers ({exc}). "
                        'Install with: pip install "memory-drivers[embeddings]"'
                    ) from exc
                try:
                    self._model = CrossEncoder(
                        self.model_path, device=self._device, local_files_only=True
                    )
                except Exception as exc:
                    raise ConfigurationError(
                        f"RERANKER_MODEL {self.model_path!r} could not be loaded as a "
                        f"sentence-transformers CrossEncoder: {exc}. Give the path of a local "
                        "model directory."
                    ) from exc
            return self._model

    def score(self, query: str, documents: Sequence[str]) -> Sequence[float]:
        if not documents:
            return []
        model = self._load()
        pairs = [(query, document) for document in documents]
        scores = model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False)
        return [float(s) for s in np.asarray(scores, dtype=np.float64).reshape(-1)]


def get_reranker(settings: Settings) -> Reranker | None:
    """The reranker the settings name (``RERANKER``), or None."""
    if settings.reranker == "none":
        return None
    if not settings.reranker_model:
        raise ConfigurationError(
            "RERANKER=cross-encoder needs RERANKER_MODEL, the path of a local "
            "sentence-transformers CrossEncoder model"
        )
    return CrossEncoderReranker(str(settings.reranker_model))
