"""The LangGraph store (``MemoryStore``) on sqlite, pgvector and chroma.

LangGraph ships no behaviour tests for ``BaseStore`` implementations, so these are the
equivalent: get/put/delete/search/list_namespaces, batch and async, checked against what
LangGraph's own ``InMemoryStore`` answers where the two must agree (items, namespaces), and
against the memory API where ours says more (users, scores, filters). Plus a compiled graph
whose node reads and writes the store."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require_module

require_module("langgraph", 'pip install "memory-drivers[langchain]"')

from langgraph.store.base import (
    BaseStore,
    GetOp,
    InvalidNamespaceError,
    ListNamespacesOp,
    MatchCondition,
    PutOp,
    SearchOp,
)
from langgraph.store.memory import InMemoryStore

from memory_drivers.base import BaseMemoryDriver
from memory_drivers.config import build_settings
from memory_drivers.errors import ValidationError
from memory_drivers.integrations.langgraph import MemoryStore, item_id
from memory_drivers.testing import fast_embedder

pytestmark = pytest.mark.usefixtures("clean_env")

BACKENDS = ("sqlite", "pgvector", "chroma")


@pytest.fixture(params=BACKENDS)
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BaseMemoryDriver]:
    """An empty driver of each backend, with the fast hashing embedder."""
    settings = build_settings()
    if request.param == "sqlite":
        from memory_drivers.drivers.sqlite import SQLiteDriver

        made: BaseMemoryDriver = SQLiteDriver(
            settings.replace(memory_db_url=f"sqlite:///{tmp_path}/m.db"), embedder=fast_embedder()
        )
    elif request.param == "pgvector":
        from memory_drivers.drivers.pgvector import PgVectorDriver

        url = request.getfixturevalue("pg_database")
        made = PgVectorDriver(
            settings.replace(database_url=url, memory_auto_migrate=True), embedder=fast_embedder()
        )
    else:
        try:
            from memory_drivers.drivers.chroma import ChromaDriver
        except ImportError as exc:
            from conftest import require_server

            require_server(f"chromadb is not installed: {exc}")
        made = ChromaDriver(
            settings.replace(chroma_path=tmp_path / "chroma", chroma_url=None),
            embedder=fast_embedder(),
        )
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def store(driver: BaseMemoryDriver) -> MemoryStore:
    return MemoryStore(driver, fields=["text"])


ITEMS: list[tuple[tuple[str, ...], str, dict[str, Any]]] = [
    (("alice", "food"), "tea", {"text": "Alice drinks green tea", "kind": "drink", "n": 1}),
    (("alice", "food"), "soup", {"text": "Alice cooks miso soup", "kind": "dish", "n": 2}),
    (("alice", "trips"), "alps", {"text": "Alice hiked in the Alps", "kind": "trip", "n": 3}),
    (("bob", "food"), "tea", {"text": "Bob drinks black tea", "kind": "drink", "n": 4}),
    (("bob", "food", "drafts"), "x", {"text": "Bob's draft note", "kind": "note", "n": 5}),
]


def fill(*stores: BaseStore) -> None:
    for s in stores:
        for namespace, key, value in ITEMS:
            s.put(namespace, key, value)


def test_get_put_delete(store: MemoryStore, driver: BaseMemoryDriver) -> None:
    """Values read back exactly; a put over an item keeps created_at and moves updated_at;
    the item is a memory of the user its first label names; delete removes it."""
    fill(store)
    item = store.get(("alice", "food"), "tea")
    assert item is not None
    assert (item.namespace, item.key, item.value) == (("alice", "food"), "tea", ITEMS[0][2])
    assert store.get(("alice", "trips"), "tea") is None  # same key, other namespace
    assert store.get(("carol",), "tea") is None
    memory = driver.get(item_id(("alice", "food"), "tea"), "alice")
    assert memory is not None and memory.content == "Alice drinks green tea"
    assert driver.count("alice") == 3 and driver.count("bob") == 2

    store.put(("alice", "food"), "tea", {"text": "Alice now prefers oolong", "kind": "drink"})
    again = store.get(("alice", "food"), "tea")
    assert again is not None and again.value == {
        "text": "Alice now prefers oolong",
        "kind": "drink",
    }
    assert again.created_at == item.created_at and again.updated_at > item.updated_at
    assert driver.count("alice") == 3

    store.delete(("alice", "food"), "tea")
    store.delete(("alice", "food"), "never-there")
    assert store.get(("alice", "food"), "tea") is None
    assert driver.count("alice") == 2


def test_search_without_query_lists_like_in_memory_store(store: MemoryStore) -> None:
    """Which items a prefix and a filter select is LangGraph's answer (InMemoryStore's);
    ours lists them newest first."""
    reference = InMemoryStore()
    fill(store, reference)
    cases: list[tuple[tuple[str, ...], dict[str, Any] | None]] = [
        (("alice",), None),
        (("alice", "food"), None),
        (("bob",), None),
        (("bob", "food"), {"kind": "drink"}),
        (("alice",), {"kind": {"$eq": "trip"}}),
        ((), None),
        ((), {"kind": "drink"}),
        (("carol",), None),
    ]
    for prefix, flt in cases:
        ours = store.search(prefix, filter=flt, limit=10)
        theirs = reference.search(prefix, filter=flt, limit=10)
        assert {(i.namespace, i.key) for i in ours} == {(i.namespace, i.key) for i in theirs}, (
            prefix,
            flt,
        )
        assert [i.created_at for i in ours] == sorted((i.created_at for i in ours), reverse=True)
        assert all(i.score is None for i in ours)
    page = store.search(("alice",), limit=2, offset=1)
    assert [i.key for i in page] == [i.key for i in store.search(("alice",), limit=3)][1:]


def test_search_with_a_query_is_recall(store: MemoryStore, driver: BaseMemoryDriver) -> None:
    """A query ranks within the prefix with recall's scores (the store's search mode)."""
    fill(store)
    hits = store.search(("alice",), query="green tea", limit=2)
    assert hits[0].key == "tea"
    expected = driver.recall("alice", query="green tea", top_k=2, tags=["langgraph-ns:alice"])
    assert [h.score for h in hits] == [h.score for h in expected]
    bobs = store.search(("bob", "food"), query="black tea")
    assert (bobs[0].namespace, bobs[0].key) == (("bob", "food"), "tea")
    assert {h.namespace[0] for h in bobs} == {"bob"}
    keyword = MemoryStore(driver, fields=["text"], search="keyword")
    assert [(h.namespace, h.key) for h in keyword.search(("alice",), query="soup")] == [
        (("alice", "food"), "soup")
    ]
    assert [h.key for h in store.search(("alice",), query="tea", filter={"kind": "trip"})] == [
        "alps"
    ]


def test_what_memory_drivers_refuses(store: MemoryStore) -> None:
    fill(store)
    with pytest.raises(ValidationError, match=r"equality only"):
        store.search(("alice",), filter={"n": {"$gt": 1}})
    with pytest.raises(ValidationError, match="user label"):
        store.search((), query="tea")
    with pytest.raises(InvalidNamespaceError):
        store.put(("alice", "a.b"), "k", {"text": "x"})
    with pytest.raises(ValidationError, match="value"):
        store.batch([PutOp(("alice",), "k", {"text": float("nan")})])
    with pytest.raises(ValidationError, match="255"):  # a key too long for its tag
        store.batch([PutOp(("alice",), "ok", {"text": "fine"}), PutOp(("alice",), "k" * 300, {})])
    assert store.get(("alice",), "ok") is None  # nothing of the refused batch was written
    with pytest.raises(NotImplementedError, match="TTL"):
        store.put(("alice",), "k", {"text": "x"}, ttl=5)


def test_list_namespaces_like_in_memory_store(store: MemoryStore) -> None:
    reference = InMemoryStore()
    fill(store, reference)
    cases: list[dict[str, Any]] = [
        {},
        {"prefix": ("alice",)},
        {"prefix": ("bob", "food")},
        {"suffix": ("food",)},
        {"prefix": ("*", "food")},
        {"max_depth": 1},
        {"prefix": ("bob",), "max_depth": 2},
        {"limit": 2, "offset": 1},
    ]
    for case in cases:
        assert store.list_namespaces(**case) == reference.list_namespaces(**case), case


def test_batch_and_async(store: MemoryStore) -> None:
    """Ops run in order (a get after a put sees it); the last put of an item wins; the async
    methods give the same answers."""
    results = store.batch(
        [
            PutOp(("alice", "notes"), "a", {"text": "first"}),
            PutOp(("alice", "notes"), "a", {"text": "second"}),
            PutOp(("alice", "notes"), "b", {"text": "other"}),
            GetOp(("alice", "notes"), "a"),
            SearchOp(("alice",), None, 10, 0, None),
            ListNamespacesOp((MatchCondition("prefix", ("alice",)),), None, 10, 0),
            PutOp(("alice", "notes"), "b", None),
            GetOp(("alice", "notes"), "b"),
        ]
    )
    assert results[:3] == [None, None, None]
    assert results[3] is not None and results[3].value == {"text": "second"}
    assert {i.key for i in results[4]} == {"a", "b"}
    assert results[5] == [("alice", "notes")]
    assert results[6:] == [None, None]

    async def scenario() -> tuple[Any, ...]:
        await store.aput(("bob", "notes"), "c", {"text": "async note"})
        got = await store.aget(("bob", "notes"), "c")
        found = await store.asearch(("bob",), query="async note")
        spaces = await store.alist_namespaces(prefix=("bob",))
        await store.adelete(("bob", "notes"), "c")
        return got, found, spaces, await store.aget(("bob", "notes"), "c")

    got, found, spaces, gone = asyncio.run(scenario())
    assert got.value == {"text": "async note"}
    assert [i.key for i in found] == ["c"]
    assert spaces == [("bob", "notes")]
    assert gone is None


def test_user_label_picks_the_user(driver: BaseMemoryDriver) -> None:
    """With user_label=1, ("memories", "alice") keeps items in user alice."""
    store = MemoryStore(driver, user_label=1)
    store.put(("memories", "alice"), "k", {"text": "Alice plays chess"})
    assert [m.metadata for m in driver.iter_memories("alice")] == [{"text": "Alice plays chess"}]
    with pytest.raises(ValidationError, match="user_label"):
        store.put(("memories",), "k", {"text": "whose?"})
    assert store.list_namespaces(prefix=("memories", "alice")) == [("memories", "alice")]


def test_a_graph_uses_the_store(driver: BaseMemoryDriver) -> None:
    """A compiled LangGraph graph whose node writes and searches the store it was given."""
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph

    class State(TypedDict):
        user: str
        message: str
        recalled: list[str]

    def remember(state: State, *, store: BaseStore) -> dict[str, Any]:
        namespace = (state["user"], "memories")
        store.put(
            namespace, str(len(store.search(namespace, limit=100))), {"text": state["message"]}
        )
        found = store.search(namespace, query=state["message"], limit=3)
        return {"recalled": [item.value["text"] for item in found]}

    builder = StateGraph(State)
    builder.add_node("remember", remember)
    builder.add_edge(START, "remember")
    builder.add_edge("remember", END)
    graph = builder.compile(store=MemoryStore(driver, fields=["text"]))
    graph.invoke({"user": "alice", "message": "I like green tea", "recalled": []})
    out = graph.invoke({"user": "alice", "message": "green tea or coffee?", "recalled": []})
    assert set(out["recalled"]) == {"I like green tea", "green tea or coffee?"}
    assert driver.count("alice") == 2
