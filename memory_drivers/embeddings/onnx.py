"""The sentence-transformers model run through ONNX Runtime: the same vectors, faster.

Environment::

    EMBEDDING_PROVIDER=sentence-transformers
    EMBEDDING_BACKEND=onnx        # default when onnxruntime is installed; "torch" for PyTorch;
                                  # "onnx-int8" for the int8-quantised variant (faster, approximate)
    EMBEDDING_CACHE_DIR=          # the exported model (default ~/.cache/memory-drivers)

On first use the model's own weights are exported to ONNX once (this needs PyTorch and the
``onnx`` package, both in ``memory-drivers[embeddings]``) and kept in the cache directory, keyed
by a hash of the weights. Afterwards only ONNX Runtime and the model's tokenizer are loaded: no
PyTorch import, a faster start, and about twice the throughput on a CPU. The vectors equal the
PyTorch ones to within 1e-6 (a test checks it), so the embedder keeps the model's name and a
store made with one backend opens with the other.

``EMBEDDING_BACKEND=onnx-int8`` runs the same export after ONNX Runtime's dynamic int8
quantisation of its weights (``quantize_dynamic``, per channel, made once and cached beside the
float file). Its vectors are close to the float model's but not equal, so its embedder has its
own name (the model's name with ``#onnx-int8``): the store guard keeps a store made with one
from being searched with the other. docs/benchmarks.md reports its speed and its retrieval
quality beside the float model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigurationError, EmbeddingError, MissingDependencyError
from .sentence_transformers import SentenceTransformerEmbedder

__all__ = ["OnnxEmbedder", "default_cache_dir"]

log = logging.getLogger(__name__)

#: Bump when the export changes, so old cached files are not reused.
EXPORT_VERSION = 1
OPSET = 17
#: Appended to the model's name by the quantised variant: a vector space of its own.
INT8_SUFFIX = "#onnx-int8"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "memory-drivers"


class OnnxEmbedder(SentenceTransformerEmbedder):
    """A local sentence-transformers model (Transformer + mean pooling + normalize) on ONNX
    Runtime. Other model layouts are refused with a message to use ``EMBEDDING_BACKEND=torch``.
    """

    def __init__(
        self,
        model: str = "sentence-transformers/all-MiniLM-L6-v2",
        *,
        batch_size: int = 32,
        cache_dir: Path | None = None,
        threads: int | None = None,
        quantized: bool = False,
    ) -> None:
        super().__init__(model, device="cpu", batch_size=batch_size)
        self._quantized = quantized
        if self._path is None:
            raise ConfigurationError(
                f"the ONNX backend needs the model on disk; {self._model_name!r} is not a local "
                "directory (nor the bundled all-MiniLM-L6-v2). Set EMBEDDING_BACKEND=torch."
            )
        self._cache_dir = cache_dir or default_cache_dir()
        self._threads = threads
        self._session: Any = None
        self._tokenizer: Any = None
        self._onnx_lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._model_name + (INT8_SUFFIX if self._quantized else "")

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self._check_layout()
            self._dimension = self._dimension_from_config()
            assert self._dimension is not None
        return self._dimension

    # ------------------------------------------------------------------ loading
    def _check_layout(self) -> int:
        """The max sequence length; refuses layouts other than Transformer, mean pooling."""
        assert self._path is not None
        modules = json.loads((self._path / "modules.json").read_text())
        kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
        pooling = next((m for m in modules if m.get("type", "").endswith("Pooling")), None)
        config = (
            json.loads((self._path / pooling["path"] / "config.json").read_text())
            if pooling
            else {}
        )
        if (
            kinds[:2] != ["Transformer", "Pooling"]
            or set(kinds[2:]) - {"Normalize"}
            or not config.get("pooling_mode_mean_tokens")
        ):
            raise ConfigurationError(
                f"the ONNX backend runs Transformer + mean pooling models; {self._model_name!r} "
                f"is {kinds}. Set EMBEDDING_BACKEND=torch."
            )
        bert = self._path / "sentence_bert_config.json"
        return (
            int(json.loads(bert.read_text()).get("max_seq_length", 512)) if bert.exists() else 512
        )

    def _exported(self) -> Path:
        """The ONNX file for these weights, exported now if it is not cached yet."""
        assert self._path is not None
        weights = self._path / "model.safetensors"
        if not weights.exists():
            weights = self._path / "pytorch_model.bin"
        digest = hashlib.sha256()
        with open(weights, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        target = (
            self._cache_dir
            / f"{self._path.name}-{digest.hexdigest()[:16]}-v{EXPORT_VERSION}"
            / "model.onnx"
        )
        if not target.exists():
            self._export(target)
        return self._quantize(target) if self._quantized else target

    def _quantize(self, source: Path) -> Path:
        """The int8 variant of an exported file, made now if it is not cached yet."""
        target = source.with_name("model-int8.onnx")
        if target.exists():
            return target
        try:
            from onnxruntime.quantization import QuantType, quantize_dynamic
        except ImportError as exc:
            raise MissingDependencyError(
                f"EMBEDDING_BACKEND=onnx-int8 needs onnxruntime's quantization tools ({exc}). "
                'Install with: pip install "memory-drivers[embeddings]"'
            ) from exc
        log.info("quantising %s to int8 (once) at %s", self._model_name, target)
        partial = target.with_name(f".model-int8.{os.getpid()}.onnx")
        # Per-channel scales keep each output's own range: on the default model, cosine to the
        # float vectors >= 0.987 (0.94 with one scale per tensor) and faster as well.
        quantize_dynamic(str(source), str(partial), weight_type=QuantType.QInt8, per_channel=True)
        os.replace(partial, target)
        return target

    def _export(self, target: Path) -> None:
        """Export the model's weights to ONNX at ``target`` (atomically)."""
        assert self._path is not None
        log.info("exporting %s to ONNX (once) at %s", self._model_name, target)
        try:
            import onnx  # noqa: F401  (the exporter needs it)
            import torch
            from transformers import AutoModel
        except ImportError as exc:
            raise MissingDependencyError(
                f"exporting the model to ONNX needs packages that are not installed ({exc}). "
                'Install with: pip install "memory-drivers[embeddings]", or set '
                "EMBEDDING_BACKEND=torch"
            ) from exc

        class LastHiddenState(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
                return self.inner(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    token_type_ids=token_type_ids,
                ).last_hidden_state

        model = AutoModel.from_pretrained(str(self._path)).eval()
        sample = torch.ones((2, 8), dtype=torch.int64)
        axes = {0: "batch", 1: "tokens"}
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".model.{os.getpid()}.onnx")
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on tracing, not problems
            torch.onnx.export(
                LastHiddenState(model),
                (sample, sample, torch.zeros_like(sample)),
                str(partial),
                input_names=["input_ids", "attention_mask", "token_type_ids"],
                output_names=["last_hidden_state"],
                dynamic_axes={
                    "input_ids": axes,
                    "attention_mask": axes,
                    "token_type_ids": axes,
                    "last_hidden_state": axes,
                },
                opset_version=OPSET,
                dynamo=False,
            )
        os.replace(partial, target)

    def _load(self) -> Any:
        with self._onnx_lock:
            if self._session is not None:
                return self._session
            try:
                import onnxruntime
                from tokenizers import Tokenizer
            except ImportError as exc:
                raise MissingDependencyError(
                    f"the ONNX backend needs packages that are not installed ({exc}). Install "
                    'with: pip install "memory-drivers[embeddings]", or set '
                    "EMBEDDING_BACKEND=torch"
                ) from exc
            assert self._path is not None
            max_length = self._check_layout()
            tokenizer = Tokenizer.from_file(str(self._path / "tokenizer.json"))
            tokenizer.enable_truncation(max_length)
            tokenizer.enable_padding()
            options = onnxruntime.SessionOptions()
            if self._threads:
                options.intra_op_num_threads = self._threads
            self._session = onnxruntime.InferenceSession(
                str(self._exported()), options, providers=["CPUExecutionProvider"]
            )
            self._tokenizer = tokenizer
            return self._session

    # ------------------------------------------------------------------ embedding
    def _run(self, texts: list[str]) -> np.ndarray:
        session = self._load()
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        types = np.array([e.type_ids for e in encodings], dtype=np.int64)
        try:
            hidden = session.run(
                None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            )[0]
        except Exception as exc:  # onnxruntime raises its own many kinds; report one
            raise EmbeddingError(f"embedding with {self._model_name!r} failed: {exc}") from exc
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)

    def _encode(self, texts: list[str]) -> np.ndarray:
        # Batch texts of similar length together (as sentence-transformers does): less padding.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        vectors = np.empty((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(texts), self._batch_size):
            chosen = order[start : start + self._batch_size]
            vectors[chosen] = self._run([texts[i] for i in chosen])
        return vectors

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self._encode(list(texts))

    def embed_query(self, text: str) -> np.ndarray:
        return self._run([text])[0]
