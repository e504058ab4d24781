"""memory-drivers as a LangGraph agent's long-term store (SQLite + FAISS, the default model).

    pip install "memory-drivers[sqlite,embeddings,langchain]"
    python examples/langgraph_store.py

A two-node graph: `recall` searches the store by meaning for what the user said before, then
`remember` stores the new message under (user, "memories"). The store would be the same with
any driver (pgvector, chroma, automem). Runs offline; the store is a fresh SQLite file in a
temporary directory.
"""

from __future__ import annotations

import tempfile
from typing import TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.store.base import BaseStore

from memory_drivers.config import build_settings
from memory_drivers.drivers.sqlite import SQLiteDriver
from memory_drivers.integrations.langgraph import MemoryStore


class State(TypedDict):
    user: str
    message: str
    recalled: list[str]


def remember(state: State, *, store: BaseStore) -> dict:
    namespace = (state["user"], "memories")  # the first label is the user
    key = f"m{len(store.search(namespace, limit=1000))}"
    store.put(namespace, key, {"text": state["message"]})
    return {}


def recall(state: State, *, store: BaseStore) -> dict:
    found = store.search((state["user"], "memories"), query=state["message"], limit=2)
    return {"recalled": [f"{item.score:.3f} {item.value['text']}" for item in found]}


builder = StateGraph(State)
builder.add_node("remember", remember)
builder.add_node("recall", recall)
builder.add_edge(START, "recall")
builder.add_edge("recall", "remember")
builder.add_edge("remember", END)

with tempfile.TemporaryDirectory() as directory:
    settings = build_settings(memory_db_url=f"sqlite:///{directory}/memories.db")
    with SQLiteDriver(settings) as driver:
        graph = builder.compile(store=MemoryStore(driver, fields=["text"]))
        for message in (
            "My sister Ana lives in Lisbon",
            "I am allergic to peanuts",
            "Can you suggest a snack for me?",
        ):
            out = graph.invoke({"user": "alice", "message": message, "recalled": []})
            print(f"{message!r}\n   recalled: {out['recalled']}")
        store = MemoryStore(driver)
        print("namespaces:", store.list_namespaces())
        print("alice's memories in the memory API:", driver.count("alice"))
