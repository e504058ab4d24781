"""A short tour of memory-drivers on the embedded default (SQLite + FAISS, real model).

    make demo            # or: python examples/demo.py

Stores memories for two users, recalls them by meaning, shows that users never see each
other's memories, then keyword search, filters and global knowledge. The store is
storage/demo.db (MEMORY_DB_URL overrides it); the demo users' old memories are removed first,
so it can run any number of times.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("MEMORY_DB_URL", "sqlite:///storage/demo.db")

from memory_drivers import get_memory_driver
from memory_drivers.models import RecallHit

MEMORIES = {
    "alice": [
        ("Alice is vegetarian and loves Italian food", ["food", "preference"], 0.9),
        ("Alice's daughter Mia starts school in September", ["family"], 0.8),
        ("Alice goes hiking in the Alps every summer", ["hobby"], 0.6),
        ("Alice prefers short answers without emojis", ["style", "preference"], 0.7),
        ("Alice's laptop is a ThinkPad running Debian", ["tech"], 0.4),
    ],
    "bob": [
        ("Bob is allergic to shellfish", ["food", "health"], 1.0),
        ("Bob trains for a marathon in April", ["hobby"], 0.7),
        ("Bob wants every answer with code examples in Rust", ["style", "preference"], 0.8),
        ("Bob's cat is called Pixel", ["family"], 0.5),
    ],
}


def show(title: str, hits: list[RecallHit]) -> None:
    print(f"\n{title}")
    for hit in hits:
        score = f"{hit.score:.3f}" if hit.score is not None else "  -  "
        print(f"  {score}  [{', '.join(hit.memory.tags)}] {hit.memory.content}")
    if not hits:
        print("  (nothing)")


def main() -> int:
    started = time.perf_counter()
    driver = get_memory_driver()
    print(f"memory-drivers demo: driver={driver.name}, store={driver.settings.memory_db_url}")
    print(f"embedder: {driver.embedder.name} ({driver.embedder.dimension} dimensions)")

    for user in MEMORIES:
        driver.cleanup(user_id=user, max_age_days=0, dry_run=False)
    for user, items in MEMORIES.items():
        driver.store_many(
            {
                "user_id": user,
                "content": text,
                "tags": tags,
                "importance": importance,
                "memory_type": "preference" if "preference" in tags else "fact",
            }
            for text, tags, importance in items
        )
        print(f"stored {len(items)} memories for {user}")

    question = "What should I cook for dinner tonight?"
    for user in MEMORIES:
        show(
            f'{user} asks "{question}" (recall by meaning, top 2):',
            driver.recall(user_id=user, query=question, top_k=2),
        )
    show(
        'alice: "how should I phrase my replies?" (only type=preference):',
        driver.recall(
            "alice", query="how should I phrase my replies?", top_k=2, memory_types=["preference"]
        ),
    )
    show(
        'bob: keyword search "marathon training" (use_vector=False):',
        driver.recall("bob", query="marathon training", use_vector=False),
    )
    show(
        "bob: the two most recent memories with importance >= 0.7 (no query):",
        driver.recall("bob", top_k=2, min_importance=0.7),
    )

    driver.store_global_knowledge(
        "Office hours are 9:00 to 17:00 on weekdays. The building is closed on public "
        "holidays; remote access stays available.",
        category="office",
        title="Opening hours",
        doc_id="office-hours",
    )
    hit = driver.recall_global_knowledge("When is the office open?", top_k=1)[0]
    print(
        f'\nglobal knowledge, "When is the office open?": {hit.score:.3f} '
        f"{hit.chunk.title}: {hit.chunk.content[:60]}..."
    )

    health = driver.health_check()
    print(
        f"\nhealth: {health['status']}, {health['memories']} memories, "
        f"{health['knowledge_chunks']} knowledge chunks; done in "
        f"{time.perf_counter() - started:.1f} s"
    )
    driver.close()
    return 0 if health["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
