"""Conformance: global knowledge documents (chunked, replaced, deleted, recalled)."""

from __future__ import annotations

import pytest

from ...base import BaseMemoryDriver
from ...errors import ValidationError
from ...models import KnowledgeDocument
from ...text import chunk_text
from .base import ConformanceBase, MakeDriver

__all__ = ["KnowledgeTests"]


class KnowledgeTests(ConformanceBase):
    """Global knowledge."""

    # ================================================================== knowledge
    def test_knowledge_store_and_recall(self, driver: BaseMemoryDriver) -> None:
        doc = driver.store_global_knowledge(
            "Employees may work remotely two days a week",
            category="policies",
            title="Remote Work Policy",
            doc_id="POL-001",
            metadata={"version": 2},
        )
        assert isinstance(doc, KnowledgeDocument)
        assert (doc.doc_id, doc.category, doc.title, len(doc.chunks)) == (
            "POL-001",
            "policies",
            "Remote Work Policy",
            1,
        )
        driver.store_global_knowledge("Lunch is served at noon", category="facilities")
        hits = driver.recall_global_knowledge("work remotely", top_k=5)
        assert hits[0].chunk.doc_id == "POL-001"
        assert hits[0].chunk.title == "Remote Work Policy"
        assert hits[0].chunk.metadata == {"version": 2}
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        only = driver.recall_global_knowledge("work remotely", category="facilities")
        assert [h.chunk.category for h in only] == ["facilities"]
        assert len(driver.recall_global_knowledge("lunch", top_k=1)) == 1
        generated = driver.store_global_knowledge("no id given", category="misc")
        assert driver.get_global_knowledge(generated.doc_id) == generated

    def test_knowledge_long_document_is_chunked(self, make_driver: MakeDriver) -> None:
        """A long document is split into overlapping chunks (KNOWLEDGE_CHUNK_TOKENS and
        KNOWLEDGE_CHUNK_OVERLAP), each recallable and carrying the document's fields."""
        driver = make_driver(knowledge_chunk_tokens=40, knowledge_chunk_overlap=8)
        words = [f"word{i}" for i in range(200)]
        text = " ".join(words)
        doc = driver.store_global_knowledge(text, category="manual", title="Long", doc_id="D1")
        expected = chunk_text(text, 40, 8)
        assert [c.content for c in doc.chunks] == expected and len(expected) == 6
        assert [c.chunk_index for c in doc.chunks] == list(range(6))
        first, second = doc.chunks[0].content.split(), doc.chunks[1].content.split()
        assert first[-8:] == second[:8], "consecutive chunks overlap by 8 tokens"
        assert driver.get_global_knowledge("D1") == doc
        hit = driver.recall_global_knowledge("word150 word151 word152", top_k=1)[0]
        assert "word150" in hit.chunk.content
        assert (hit.chunk.doc_id, hit.chunk.title, hit.chunk.category) == ("D1", "Long", "manual")

    def test_knowledge_same_doc_id_replaces(self, make_driver: MakeDriver) -> None:
        """Storing a doc_id again replaces all of its chunks: old text is never recalled."""
        driver = make_driver(knowledge_chunk_tokens=20, knowledge_chunk_overlap=2)
        driver.store_global_knowledge(
            " ".join(f"old{i}" for i in range(100)), category="c", doc_id="D"
        )
        new = driver.store_global_knowledge("entirely new content", category="c2", doc_id="D")
        stored = driver.get_global_knowledge("D")
        assert stored == new and len(stored.chunks) == 1 and stored.category == "c2"
        hits = driver.recall_global_knowledge("old5 old6 old7", top_k=10)
        assert [h.chunk.content for h in hits] == ["entirely new content"]

    def test_knowledge_delete(self, driver: BaseMemoryDriver) -> None:
        driver.store_global_knowledge("to be removed", category="c", doc_id="D")
        assert driver.delete_global_knowledge("D") is True
        assert driver.delete_global_knowledge("D") is False
        assert driver.get_global_knowledge("D") is None
        assert driver.recall_global_knowledge("to be removed") == []

    def test_list_global_knowledge(self, driver: BaseMemoryDriver) -> None:
        """``list_global_knowledge`` lists each document once with its chunk count, by
        category then doc_id, and narrows to one category. A document counted once per chunk,
        or still listed after its replacement or deletion, means the listing reads a stale or
        per-chunk view of the store."""
        assert driver.list_global_knowledge() == []
        long_text = " ".join(f"word{i}" for i in range(driver.settings.knowledge_chunk_tokens * 2))
        chunks = len(driver.store_global_knowledge(long_text, "manuals", doc_id="M-1").chunks)
        assert chunks > 1
        driver.store_global_knowledge("Lunch at noon", "facilities", title="Lunch", doc_id="F-2")
        driver.store_global_knowledge("Parking on level 2", "facilities", doc_id="F-1")
        listed = driver.list_global_knowledge()
        assert [(d.category, d.doc_id, d.chunks) for d in listed] == [
            ("facilities", "F-1", 1),
            ("facilities", "F-2", 1),
            ("manuals", "M-1", chunks),
        ]
        assert listed[1].title == "Lunch" and listed[0].title is None
        assert [d.doc_id for d in driver.list_global_knowledge("manuals")] == ["M-1"]
        driver.store_global_knowledge("Short now", "manuals", doc_id="M-1")
        driver.delete_global_knowledge("F-2")
        assert [(d.doc_id, d.chunks) for d in driver.list_global_knowledge()] == [
            ("F-1", 1),
            ("M-1", 1),
        ]
        assert driver.list_global_knowledge("nothing-here") == []
        with pytest.raises(ValidationError, match="category"):
            driver.list_global_knowledge(category="")
