"""The LangChain integration: ``MemoryVectorStore`` passes langchain-tests' standard
``VectorStoreIntegrationTests`` (sync and async) on sqlite, pgvector and chroma;
``MemoryRetriever`` passes ``RetrieversIntegrationTests``; and tests of our own check what the
standard suite does not: scores as docs/semantics.md defines them, our filters and search
modes, ids kept per user, typed errors, and meaning with the real model."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require_module

require_module("langchain_core", 'pip install "memory-drivers[langchain]"')
require_module("langchain_tests", 'pip install "memory-drivers[dev]"')

from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_tests.integration_tests import (
    RetrieversIntegrationTests,
    VectorStoreIntegrationTests,
)

from memory_drivers.base import BaseMemoryDriver
from memory_drivers.config import Settings, build_settings
from memory_drivers.drivers.sqlite import SQLiteDriver
from memory_drivers.errors import ValidationError
from memory_drivers.integrations.langchain import (
    ID_TAG_PREFIX,
    LangChainEmbedder,
    MemoryRetriever,
    MemoryVectorStore,
    memory_id_for,
)
from memory_drivers.testing import default_embedder

pytestmark = pytest.mark.usefixtures("clean_env")


def settings() -> Settings:
    return build_settings()


def sqlite_driver(directory: Path, embedder: Any) -> BaseMemoryDriver:
    return SQLiteDriver(
        settings().replace(memory_db_url=f"sqlite:///{directory}/memories.db"), embedder=embedder
    )


def pgvector_driver(url: str, embedder: Any) -> BaseMemoryDriver:
    from memory_drivers.drivers.pgvector import PgVectorDriver

    return PgVectorDriver(
        settings().replace(database_url=url, memory_auto_migrate=True), embedder=embedder
    )


def chroma_driver(directory: Path, embedder: Any) -> BaseMemoryDriver:
    try:
        from memory_drivers.drivers.chroma import ChromaDriver
    except ImportError as exc:  # chromadb is in the "all" extra
        from conftest import require_server

        require_server(f"chromadb is not installed: {exc}")
    return ChromaDriver(
        settings().replace(chroma_path=directory / "chroma", chroma_url=None), embedder=embedder
    )


# ---------------------------------------------------------------------- the standard suites
class TestSQLiteVectorStore(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, tmp_path: Path) -> Iterator[MemoryVectorStore]:
        driver = sqlite_driver(tmp_path, LangChainEmbedder(self.get_embeddings()))
        try:
            yield MemoryVectorStore(driver, user_id="lc-user")
        finally:
            driver.close()


class TestPgVectorVectorStore(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, pg_database: str) -> Iterator[MemoryVectorStore]:
        driver = pgvector_driver(pg_database, LangChainEmbedder(self.get_embeddings()))
        try:
            yield MemoryVectorStore(driver, user_id="lc-user")
        finally:
            driver.close()


class TestChromaVectorStore(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, tmp_path: Path) -> Iterator[MemoryVectorStore]:
        driver = chroma_driver(tmp_path, LangChainEmbedder(self.get_embeddings()))
        try:
            yield MemoryVectorStore(driver, user_id="lc-user")
        finally:
            driver.close()


RETRIEVER_TEXTS = [
    "Alice drinks green tea every morning",
    "Alice brews black tea on Sundays",
    "Tea shops in Kyoto are Alice's favourite",
    "Alice went hiking in the Alps",
    "Alice's tea kettle is blue",
]


class TestMemoryRetriever(RetrieversIntegrationTests):
    @pytest.fixture(autouse=True)
    def seeded_driver(self, tmp_path: Path) -> Iterator[None]:
        self.driver = sqlite_driver(tmp_path, LangChainEmbedder(DeterministicFakeEmbedding(size=6)))
        MemoryVectorStore(self.driver, user_id="alice").add_texts(RETRIEVER_TEXTS)
        try:
            yield
        finally:
            self.driver.close()

    @property
    def retriever_constructor(self) -> type[MemoryRetriever]:
        return MemoryRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"driver": self.driver, "user_id": "alice", "k": 4}

    @property
    def retriever_query_example(self) -> str:
        return "tea"


# ---------------------------------------------------------------------- our own
@pytest.fixture
def store(tmp_path: Path) -> Iterator[MemoryVectorStore]:
    """A store for user alice over a sqlite driver with LangChain's deterministic embeddings."""
    driver = sqlite_driver(tmp_path, LangChainEmbedder(DeterministicFakeEmbedding(size=16)))
    try:
        yield MemoryVectorStore(driver, user_id="alice")
    finally:
        driver.close()


def test_scores_are_recalls_and_relevance_is_cosine(store: MemoryVectorStore) -> None:
    """similarity_search_with_score gives recall's scores in every mode; relevance scores
    are the cosine similarities of vector recall. Failing: a score from another mode, or
    one turned around."""
    store.add_texts(["green tea in the morning", "hiking in the Alps", "tea and biscuits"])
    driver = store.driver
    for search in (None, "hybrid", "vector", "keyword"):
        options = {} if search is None else {"search": search}
        expected = driver.recall("alice", query="tea", top_k=3, **options)
        got = store.similarity_search_with_score("tea", k=3, **options)
        assert [(d.page_content, s) for d, s in got] == [
            (h.memory.content, h.score) for h in expected
        ], search
    cosine = driver.recall("alice", query="tea", top_k=3, search="vector")
    with warnings.catch_warnings():  # LangChain warns about negative cosines, rightly
        warnings.simplefilter("ignore", UserWarning)
        relevance = store.similarity_search_with_relevance_scores("tea", k=3)
    assert [s for _, s in relevance] == [h.score for h in cosine]
    with pytest.raises(ValidationError, match="cosine"):
        store.similarity_search_with_relevance_scores("tea", k=3, search="keyword")
    with pytest.raises(NotImplementedError, match='search="vector"'):
        store.similarity_search_by_vector([0.1] * 16)


def test_filters_and_write_options_reach_recall(store: MemoryVectorStore) -> None:
    """filter (metadata), recall's filters and add_texts' tags/memory_type/importance are the
    memory API's; an unknown one is a ValidationError naming the closest."""
    store.add_texts(["tea at home", "tea at work"], [{"place": "home"}, {"place": "work"}])
    store.add_texts(["tea on the train"], tags=["travel"], memory_type="episodic", importance=0.9)
    assert [d.page_content for d in store.similarity_search("tea", filter={"place": "work"})] == [
        "tea at work"
    ]
    assert [d.page_content for d in store.similarity_search("tea", tags=["travel"])] == [
        "tea on the train"
    ]
    assert {d.page_content for d in store.similarity_search("tea", min_importance=0.8)} == {
        "tea on the train"
    }
    memory = store.driver.recall("alice", query="train", top_k=1, search="keyword")[0].memory
    assert (memory.tags, memory.memory_type, memory.importance) == (["travel"], "episodic", 0.9)
    with pytest.raises(ValidationError, match="Did you mean 'tags'"):
        store.similarity_search("tea", tagz=["travel"])
    with pytest.raises(ValidationError, match="unknown argument 'colour'"):
        store.add_texts(["x y"], colour="red")
    assert store.driver.count("alice") == 3  # nothing of the refused call was written


def test_ids_are_kept_per_user(store: MemoryVectorStore) -> None:
    """A canonical UUID is the memory id; another id is kept in a tag and derived per user,
    so two users' stores never collide on "1"; replacing an id replaces the memory."""
    uid = "3f2b8c1e-4d5a-4b6c-9d7e-8f9a0b1c2d3e"
    bob = MemoryVectorStore(store.driver, user_id="bob")
    assert store.add_texts(["alice one", "alice uuid"], ids=["1", uid]) == ["1", uid]
    assert bob.add_texts(["bob one"], ids=["1"]) == ["1"]
    memory = store.driver.get(memory_id_for("alice", "1"), "alice")
    assert memory is not None and memory.tags == [ID_TAG_PREFIX + "1"]
    assert store.driver.get(uid, "alice").tags == []
    assert [d.page_content for d in bob.get_by_ids(["1", uid])] == ["bob one"]
    assert store.get_by_ids(["1"]) == [Document(id="1", page_content="alice one", metadata={})]
    store.add_texts(["alice one again"], [{"v": 2}], ids=["1"])
    again = store.driver.get(memory_id_for("alice", "1"), "alice")
    assert again is not None and again.created_at == memory.created_at
    assert (again.content, again.metadata) == ("alice one again", {"v": 2})
    store.delete(["1"])
    assert store.get_by_ids(["1"]) == [] and bob.get_by_ids(["1"]) != []
    with pytest.raises(ValidationError, match="needs the ids"):
        store.delete()
    with pytest.raises(ValidationError, match="appears twice"):
        store.add_texts(["a b", "c d"], ids=["7", "7"])


def test_a_bad_replacement_writes_nothing(store: MemoryVectorStore) -> None:
    """A batch mixing new and existing ids is checked whole before anything is written."""
    store.add_texts(["first text"], ids=["a"])
    with pytest.raises(ValidationError, match="nothing was stored"):
        store.add_texts(["brand new", "   "], ids=["b", "a"])
    assert [d.page_content for d in store.get_by_ids(["a", "b"])] == ["first text"]


def test_async_methods(store: MemoryVectorStore) -> None:
    async def scenario() -> list[Document]:
        await store.aadd_texts(["tea", "coffee"], ids=["t", "c"])
        await store.adelete(["c"])
        return await store.asimilarity_search("tea", k=2)

    assert [d.id for d in asyncio.run(scenario())] == ["t"]


def test_retriever_filters_and_search_modes(store: MemoryVectorStore) -> None:
    store.add_texts(["tea at home", "tea on the train", "coffee at work"], tags=None)
    store.add_texts(["tea in the garden"], tags=["outside"])
    retriever = MemoryRetriever(driver=store.driver, user_id="alice", k=10, search="keyword")
    assert {d.page_content for d in retriever.invoke("tea")} == {
        "tea at home",
        "tea on the train",
        "tea in the garden",
    }
    assert [d.page_content for d in retriever.invoke("tea", tags=["outside"])] == [
        "tea in the garden"
    ]
    assert len(retriever.invoke("tea", k=1, search="vector")) == 1
    tagged = MemoryRetriever(driver=store.driver, user_id="alice", filters={"tags": ["outside"]})
    assert [d.page_content for d in tagged.invoke("garden")] == ["tea in the garden"]
    with pytest.raises(ValidationError, match="search must be one of"):
        retriever.invoke("tea", search="fuzzy")


@pytest.mark.slow
def test_meaning_with_the_default_model(tmp_path: Path) -> None:
    """With the real default model, a question finds the memory that answers it although
    they share no word."""
    driver = sqlite_driver(tmp_path, default_embedder())
    with driver:
        store = MemoryVectorStore(driver, user_id="alice")
        store.add_texts(
            [
                "The user's favourite beverage is oolong",
                "The user owns a red bicycle",
                "The user works as a nurse",
            ]
        )
        top = store.similarity_search("What does the user like to drink?", k=1, search="vector")
        assert top[0].page_content == "The user's favourite beverage is oolong"
        assert isinstance(store.embeddings.embed_query("tea")[0], float)
