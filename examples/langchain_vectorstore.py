"""memory-drivers as a LangChain vector store and retriever (SQLite + FAISS, the default model).

    pip install "memory-drivers[sqlite,embeddings,langchain]"
    python examples/langchain_vectorstore.py

Runs offline. The store is a fresh SQLite file in a temporary directory.
"""

from __future__ import annotations

import tempfile

from langchain_core.documents import Document

from memory_drivers.config import build_settings
from memory_drivers.drivers.sqlite import SQLiteDriver
from memory_drivers.integrations.langchain import MemoryRetriever, MemoryVectorStore

with tempfile.TemporaryDirectory() as directory:
    settings = build_settings(memory_db_url=f"sqlite:///{directory}/memories.db")
    with SQLiteDriver(settings) as driver:
        # One store per user: it reads and writes only alice's memories.
        store = MemoryVectorStore(driver, user_id="alice")
        store.add_documents(
            [
                Document(page_content="Alice is vegetarian", metadata={"source": "chat"}),
                Document(page_content="Alice's favourite drink is oolong tea", id="drink"),
                Document(page_content="Alice runs every Sunday morning", metadata={"v": 2}),
            ],
            tags=["profile"],
        )
        print("hybrid (the default), recall's scores:")
        for doc, score in store.similarity_search_with_score("What does Alice drink?", k=2):
            print(f"  {score:6.3f}  {doc.id}  {doc.page_content}")

        print("relevance = cosine similarity (vector search):")
        for doc, score in store.similarity_search_with_relevance_scores("food she avoids", k=1):
            print(f"  {score:6.3f}  {doc.page_content}")

        print("metadata filter and recall's own filters:")
        print("  ", store.similarity_search("Alice", k=3, filter={"source": "chat"}))
        print("  ", store.get_by_ids(["drink"]))

        # A retriever for chains and agents: our search modes and filters.
        retriever = MemoryRetriever(
            driver=driver, user_id="alice", k=2, search="keyword", filters={"tags": ["profile"]}
        )
        print("retriever:", [d.page_content for d in retriever.invoke("Sunday running")])
