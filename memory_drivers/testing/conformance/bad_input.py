"""Conformance: invalid input is refused with ValidationError and writes nothing."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from ...base import BaseMemoryDriver
from ...errors import EmbeddingError, ValidationError
from ..embedders import FaultyEmbedder, fast_embedder
from .base import ConformanceBase, MakeDriver, at, contents

__all__ = ["BadInputTests"]


class BadInputTests(ConformanceBase):
    """Bad input, from callers and from the embedder."""

    # ================================================================== bad input
    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"content": ""}, "content"),
            ({"content": "   \n\t"}, "content"),
            ({"content": 42}, "content must be a string"),
            ({"content": "x" * 101}, "maximum is 100"),
            ({"user_id": ""}, "user_id"),
            ({"user_id": None}, "user_id"),
            ({"user_id": " padded "}, "whitespace"),
            ({"importance": 1.5}, "importance"),
            ({"importance": -0.1}, "importance"),
            ({"importance": float("nan")}, "importance"),
            ({"importance": "high"}, "importance"),
            ({"metadata": {"when": datetime.now()}}, "not JSON"),
            ({"metadata": {"x": float("inf")}}, "NaN or infinity"),
            ({"metadata": {1: "int key"}}, "keys must be strings"),
            ({"metadata": ["not", "a", "dict"]}, "metadata must be a dict"),
            ({"memory_type": "dream"}, "not a known memory type"),
            ({"tags": "single"}, "list of strings"),
            ({"tags": ["ok", ""]}, "tags"),
            ({"tags": ["ok", 3]}, "tags"),
            ({"conversation_id": 7}, "conversation_id"),
        ],
    )
    def test_store_rejects_bad_input(
        self, make_driver: MakeDriver, kwargs: dict[str, Any], message: str
    ) -> None:
        """Bad input raises ValidationError naming the problem, and nothing is written."""
        driver = make_driver(memory_max_content_length=100)
        driver.store("u1", "existing")
        args = {"user_id": "u1", "content": "valid content", **kwargs}
        with pytest.raises(ValidationError, match=message):
            driver.store(**args)
        self.assert_unchanged(driver, 1)

    def test_extra_memory_types_are_accepted(self, make_driver: MakeDriver) -> None:
        driver = make_driver(memory_extra_types=["dream", "goal"])
        assert driver.store("u1", "flying", memory_type="dream").memory_type == "dream"
        assert contents(driver.recall("u1", memory_types=["dream"])) == ["flying"]
        with pytest.raises(ValidationError):
            driver.store("u1", "x", memory_type="nightmare")

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"top_k": 0}, "top_k"),
            ({"top_k": -3}, "top_k"),
            ({"top_k": 2.5}, "top_k"),
            ({"top_k": True}, "top_k"),
            ({"query": ""}, "query"),
            ({"query": "  "}, "query"),
            ({"colour": "red"}, "unknown recall filter 'colour'"),
            ({"tag": ["x"]}, "Did you mean 'tags'"),
            ({"tag_mode": "some"}, "tag_mode"),
            ({"tags": "single"}, "list of strings"),
            ({"memory_types": ["dream"]}, "not a known memory type"),
            ({"min_importance": 2}, "min_importance"),
            ({"since": "yesterday"}, "ISO 8601"),
            ({"since": at(5), "until": at(1)}, "before until"),
            ({"metadata": {"x": [1, 2]}}, "scalar"),
            ({"metadata": "x=1"}, "metadata filter must be a dict"),
            ({"use_vector": "yes"}, "use_vector"),
            ({"user_id": ""}, "user_id"),
        ],
    )
    def test_recall_rejects_bad_input(
        self, driver: BaseMemoryDriver, kwargs: dict[str, Any], message: str
    ) -> None:
        """Bad recall arguments raise ValidationError; an unknown filter is never ignored."""
        driver.store("u1", "something")
        args = {"user_id": "u1", "query": "something", **kwargs}
        with pytest.raises(ValidationError, match=message):
            driver.recall(**args)

    def test_malformed_ids_are_rejected(self, driver: BaseMemoryDriver) -> None:
        m = driver.store("u1", "x")
        for call in (
            lambda: driver.get("123"),
            lambda: driver.get(42),  # type: ignore[arg-type]
            lambda: driver.delete("not-a-uuid"),
            lambda: driver.update("nope", content="y"),
            lambda: driver.associate(m.id, "nope"),
            lambda: driver.related("nope"),
        ):
            with pytest.raises(ValidationError, match=r"memory id|UUID"):
                call()
        assert driver.get(m.id) == m

    def test_update_rejects_bad_input(self, driver: BaseMemoryDriver) -> None:
        m = driver.store("u1", "original", importance=0.4)
        for kwargs in (
            {"content": " "},
            {"importance": 2.0},
            {"tags": "x"},
            {"metadata": {"x": {1, 2}}},
            {"memory_type": "dream"},
        ):
            with pytest.raises(ValidationError):
                driver.update(m.id, **kwargs)
        assert driver.get(m.id) == m

    def test_knowledge_rejects_bad_input(self, driver: BaseMemoryDriver) -> None:
        for kwargs in (
            {"content": " "},
            {"category": ""},
            {"category": None},
            {"title": ""},
            {"metadata": {"x": object()}},
            {"doc_id": " x"},
        ):
            args: dict[str, Any] = {"content": "text", "category": "c", **kwargs}
            with pytest.raises(ValidationError):
                driver.store_global_knowledge(**args)
        with pytest.raises(ValidationError):
            driver.recall_global_knowledge("q", top_k=0)
        with pytest.raises(ValidationError):
            driver.recall_global_knowledge("")
        assert driver.recall_global_knowledge("text") == []

    @pytest.mark.parametrize("fault", ["nan", "dimension", "zero", "raise"])
    def test_bad_vectors_from_the_embedder_write_nothing(
        self, make_driver: MakeDriver, fault: str
    ) -> None:
        """An embedder returning NaN, wrong-dimension or zero vectors (or failing) raises
        EmbeddingError, and nothing of the batch is written."""
        driver = make_driver(FaultyEmbedder(fast_embedder(), fault))  # type: ignore[arg-type]
        good = driver.store("u1", "fine text")
        with pytest.raises(EmbeddingError):
            driver.store("u1", "POISON text")
        with pytest.raises(EmbeddingError):
            driver.store_many(
                [{"user_id": "u1", "content": "ok"}, {"user_id": "u1", "content": "POISON"}]
            )
        with pytest.raises(EmbeddingError):
            driver.update(good.id, content="POISON now")
        with pytest.raises(EmbeddingError):
            driver.store_global_knowledge("POISON doc", category="c")
        with pytest.raises(EmbeddingError):
            driver.recall("u1", query="POISON query")
        assert driver.count() == 1 and driver.get(good.id) == good
        assert driver.recall_global_knowledge("doc") == []
