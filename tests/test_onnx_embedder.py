"""The ONNX Runtime backend gives the PyTorch backend's vectors (within 1e-6) for the default
model, and is what EMBEDDING_BACKEND=auto picks."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from memory_drivers.config import build_settings
from memory_drivers.embeddings import get_embedder
from memory_drivers.embeddings.onnx import OnnxEmbedder
from memory_drivers.embeddings.sentence_transformers import SentenceTransformerEmbedder
from memory_drivers.errors import ConfigurationError

WORDS = (
    "the user likes blue green tea coffee hiking in the mountains writes Python and Rust "
    "meeting tomorrow at nine project deadline family dog named Rex allergic to peanuts "
    "café naïve Zürich 東京 emoji 🎉 numbers 42 3.14 e-mail a@b.c URLs https://x.y/z"
).split()


def sentences(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 60))) for _ in range(count)]


@pytest.fixture(scope="module")
def onnx_embedder(tmp_path_factory: pytest.TempPathFactory) -> OnnxEmbedder:
    return OnnxEmbedder(cache_dir=tmp_path_factory.mktemp("onnx-cache"))


def test_onnx_vectors_equal_the_pytorch_ones(onnx_embedder: OnnxEmbedder) -> None:
    """Same model, same tokenizer, same pooling: vectors within 1e-6 of sentence-transformers on
    PyTorch, for short and long (truncated at 256 word pieces) texts, in batches and alone."""
    torch_embedder = SentenceTransformerEmbedder()
    texts = [*sentences(150), " ".join(WORDS * 20), "x", "What color does the user like?"]
    expected = np.asarray(torch_embedder.embed_documents(texts))
    got = onnx_embedder.embed_documents(texts)
    assert got.shape == expected.shape == (len(texts), 384)
    assert np.abs(got - expected).max() < 1e-6
    query = "What color does the user like?"
    assert np.abs(onnx_embedder.embed_query(query) - expected[-1]).max() < 1e-6
    assert onnx_embedder.name == torch_embedder.name, "one vector space, one name"
    assert onnx_embedder.dimension == 384


def test_the_export_is_cached(onnx_embedder: OnnxEmbedder) -> None:
    onnx_embedder.embed_query("warm up")
    files = list(Path(onnx_embedder._cache_dir).rglob("model.onnx"))
    assert len(files) == 1 and files[0].stat().st_size > 10_000_000
    again = OnnxEmbedder(cache_dir=onnx_embedder._cache_dir)
    assert again._exported() == files[0]


def test_auto_picks_onnx_and_torch_stays_available(tmp_path: Path) -> None:
    auto = get_embedder(build_settings(_env_file=None, embedding_cache_dir=tmp_path))
    torch = get_embedder(build_settings(_env_file=None, embedding_backend="torch"))
    assert isinstance(auto, OnnxEmbedder)
    assert type(torch) is SentenceTransformerEmbedder


def test_a_model_that_is_not_on_disk_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="EMBEDDING_BACKEND=torch"):
        OnnxEmbedder("some-org/some-model-not-on-disk")


# ---------------------------------------------------------------------- int8 variant
@pytest.fixture(scope="module")
def int8_embedder(onnx_embedder: OnnxEmbedder) -> OnnxEmbedder:
    return OnnxEmbedder(cache_dir=onnx_embedder._cache_dir, quantized=True)


def test_int8_is_its_own_vector_space_close_to_the_float_one(
    onnx_embedder: OnnxEmbedder, int8_embedder: OnnxEmbedder
) -> None:
    """Quantised weights give vectors near the float model's (cosine > 0.97 each), but not
    equal: the name differs, so no store mixes the two."""
    texts = [*sentences(40, seed=1), "What color does the user like?"]
    exact = onnx_embedder.embed_documents(texts)
    approx = int8_embedder.embed_documents(texts)
    assert approx.shape == exact.shape == (len(texts), 384)
    assert np.allclose(np.linalg.norm(approx, axis=1), 1.0, atol=1e-5)
    cosines = (exact * approx).sum(axis=1)
    assert cosines.min() > 0.97
    assert np.abs(exact - approx).max() > 1e-4, "int8 weights must actually be in use"
    assert int8_embedder.name == onnx_embedder.name + "#onnx-int8"
    assert int8_embedder.dimension == 384
    int8_file = int8_embedder._exported()
    assert int8_file.name == "model-int8.onnx"
    assert int8_file.stat().st_size < onnx_embedder._exported().stat().st_size / 2


def test_int8_ranks_by_meaning(int8_embedder: OnnxEmbedder) -> None:
    docs = ["The user's favorite color is blue", "The meeting is moved to Tuesday at nine"]
    vectors = int8_embedder.embed_documents(docs)
    query = int8_embedder.embed_query("Which colour does the user like best?")
    assert int(np.argmax(vectors @ query)) == 0


def test_int8_setting_builds_it_and_the_store_guard_keeps_it_apart(
    tmp_path: Path, onnx_embedder: OnnxEmbedder
) -> None:
    from memory_drivers.drivers.sqlite import SQLiteDriver
    from memory_drivers.errors import EmbedderMismatchError

    cache = onnx_embedder._cache_dir
    settings = build_settings(
        _env_file=None, embedding_backend="onnx-int8", embedding_cache_dir=cache
    )
    int8 = get_embedder(settings)
    assert isinstance(int8, OnnxEmbedder) and int8.name.endswith("#onnx-int8")
    store = build_settings(_env_file=None, memory_db_url=f"sqlite:///{tmp_path}/m.db")
    with SQLiteDriver(store, embedder=onnx_embedder) as driver:
        driver.store("u1", "made with the float model")
    with pytest.raises(EmbedderMismatchError, match="onnx-int8"):
        SQLiteDriver(store, embedder=int8)
