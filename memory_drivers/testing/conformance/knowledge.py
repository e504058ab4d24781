"""Conformance: global knowledge documents (chunked, replaced, deleted, recalled)."""

from __future__ import annotations

import pytest

from ...base import BaseMemoryDriver
from ...errors import ValidationError
from ...models import KnowledgeDocument
from ...text import chunk_text
from ..embedders import RecordingEmbedder, fast_embedder
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

    def test_semantic_knowledge_chunks_fit_the_model(
        self, semantic_driver: BaseMemoryDriver
    ) -> None:
        """With the real model (all-MiniLM-L6-v2 reads 256 word pieces), a document is chunked
        by the model's own tokens: no chunk is longer than the model reads, consecutive chunks
        overlap, and a fact in what used to be the unread second half of a 512-token chunk is
        found by vector search. A failure means chunks are cut by another count than the
        embedder's tokenizer (BaseMemoryDriver._split_document, embeddings.TokenCounter)."""
        embedder = semantic_driver.embedder
        filler = [
            "The community garden committee met on Tuesday to discuss seed orders.",
            "Volunteers repainted the fence and sorted the compost bins by size.",
            "Tomatoes and beans need staking before the summer rains arrive.",
            "The tool shed key now hangs on the hook beside the watering cans.",
        ]
        fact = "The Eyjafjallajokull volcano in Iceland erupted and grounded flights in Europe."
        sentences = [filler[i % 4] for i in range(24)]
        sentences.insert(20, fact)  # about word piece 300, past what the model reads of 512
        sentences += [filler[i % 4] for i in range(40)]
        text = " ".join(sentences)
        doc = semantic_driver.store_global_knowledge(text, category="notes", doc_id="garden")
        limit = embedder.max_tokens  # type: ignore[attr-defined]
        assert limit < semantic_driver.settings.knowledge_chunk_tokens
        for chunk in doc.chunks:
            assert len(embedder.token_spans(chunk.content)) <= limit  # type: ignore[attr-defined]
        for before, after in zip(doc.chunks, doc.chunks[1:], strict=False):
            assert after.content.split()[0] in before.content.split()[-60:], "chunks overlap"
        assert text.startswith(doc.chunks[0].content) and text.endswith(doc.chunks[-1].content)
        hits = semantic_driver.recall_global_knowledge(
            "Which volcano erupted in Iceland?", top_k=1, search="vector"
        )
        assert fact in hits[0].chunk.content

    def test_knowledge_is_embedded_in_batches_with_progress(self, make_driver: MakeDriver) -> None:
        """A document's chunks are embedded EMBEDDING_BATCH_SIZE at a time, and ``progress``
        hears of each batch with the number of chunks; the document is stored whole."""
        embedder = RecordingEmbedder(fast_embedder())
        driver = make_driver(
            embedder, knowledge_chunk_tokens=20, knowledge_chunk_overlap=0, embedding_batch_size=4
        )
        steps: list[tuple[int, int]] = []
        text = " ".join(f"w{i}" for i in range(200))
        doc = driver.store_global_knowledge(
            text, "c", doc_id="D", progress=lambda *a: steps.append(a)
        )
        assert embedder.document_calls == [4, 4, 2]
        assert steps == [(4, 10), (4, 10), (2, 10)]
        assert driver.get_global_knowledge("D") == doc and len(doc.chunks) == 10

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
