"""Conformance: cleanup, counting, iterating, and the life of a store (reopen, close, health)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from ...base import BaseMemoryDriver
from ...embeddings.hashing import HashingEmbedder
from ...errors import DriverClosedError, EmbedderMismatchError, ValidationError
from .base import ConformanceBase, MakeDriver, at, contents

__all__ = ["MaintenanceTests"]


class MaintenanceTests(ConformanceBase):
    """Cleanup, count, iteration and lifecycle."""

    # ================================================================== cleanup, count, iterate
    def test_cleanup(self, driver: BaseMemoryDriver) -> None:
        """``cleanup`` removes what is older than max_age_days AND below min_importance (either
        alone when only one is given); dry_run (the default) only reports."""
        now = datetime.now(timezone.utc)
        spec = {
            "old-low": (40, 0.1),
            "old-high": (40, 0.9),
            "new-low": (1, 0.1),
            "new-high": (1, 0.9),
        }
        for name, (days, importance) in spec.items():
            self.put(driver, name, created_at=now - timedelta(days=days), importance=importance)
        self.put(
            driver,
            "other user old-low",
            user="u2",
            created_at=now - timedelta(days=40),
            importance=0.1,
        )

        def names(result: Any) -> list[str]:
            return sorted(m.content for m in result.memories)

        dry = driver.cleanup("u1", max_age_days=30, min_importance=0.5)
        assert dry.dry_run and dry.count == 1 and names(dry) == ["old-low"]
        assert driver.count("u1") == 4
        assert names(driver.cleanup("u1", max_age_days=30)) == ["old-high", "old-low"]
        assert names(driver.cleanup("u1", min_importance=0.5)) == ["new-low", "old-low"]
        done = driver.cleanup("u1", max_age_days=30, min_importance=0.5, dry_run=False)
        assert not done.dry_run and names(done) == ["old-low"]
        assert sorted(contents(driver.recall("u1"))) == ["new-high", "new-low", "old-high"]
        assert driver.count("u2") == 1
        everyone = driver.cleanup(max_age_days=30, dry_run=False)
        assert names(everyone) == ["old-high", "other user old-low"]
        with pytest.raises(ValidationError, match="max_age_days"):
            driver.cleanup("u1")
        with pytest.raises(ValidationError):
            driver.cleanup("u1", max_age_days=-1)

    def test_count_and_iter_memories(self, driver: BaseMemoryDriver) -> None:
        """``iter_memories`` streams every memory, oldest first, across batch boundaries."""
        items = [
            {"user_id": "u1" if i % 2 else "u2", "content": f"m{i}", "created_at": at(i % 7)}
            for i in range(23)
        ]
        stored = driver.store_many(items)
        assert driver.count() == 23 and driver.count("u1") == 11
        streamed = list(driver.iter_memories(batch_size=4))
        assert len(streamed) == 23
        assert streamed == sorted(stored, key=lambda m: (m.created_at, m.id))
        mine = list(driver.iter_memories("u1", batch_size=3))
        assert [m.id for m in mine] == [m.id for m in streamed if m.user_id == "u1"]

    def test_list_users(self, driver: BaseMemoryDriver) -> None:
        """``list_users`` gives each user's memory count and newest ``updated_at``, most
        recently active first. A wrong count usually means knowledge or deleted memories are
        counted; a wrong time, that ``created_at`` is read instead of ``updated_at``."""
        assert driver.list_users() == []
        self.put(driver, "a1", user="alice", created_at=at(1))
        a2 = self.put(driver, "a2", user="alice", created_at=at(2))
        self.put(driver, "b1", user="bob", created_at=at(5))
        gone = self.put(driver, "c1", user="carol", created_at=at(9))
        driver.store_global_knowledge("not a user's memory", "misc")
        driver.delete(gone.id)
        assert [(u.user_id, u.memories, u.last_activity) for u in driver.list_users()] == [
            ("bob", 1, at(5)),
            ("alice", 2, at(2)),
        ]
        changed = driver.update(a2.id, importance=0.9)
        users = driver.list_users()
        assert [(u.user_id, u.memories) for u in users] == [("alice", 2), ("bob", 1)]
        assert users[0].last_activity == changed.updated_at

    # ================================================================== lifecycle
    def test_persists_across_close_and_reopen(self, make_driver: MakeDriver) -> None:
        """Everything written is there after close and reopen: memories, knowledge, links,
        and every recall mode."""
        first = make_driver()
        m = first.store("u1", "persistent pineapple memory", tags=["t"], metadata={"k": 1})
        other = first.store("u1", "second memory about boats")
        first.associate(m.id, other.id, "RELATES_TO", 0.7)
        first.store_global_knowledge("persistent knowledge", category="c", doc_id="D")
        first.close()
        second = make_driver()
        assert second.get(m.id) == m
        assert (
            second.recall("u1", query="persistent pineapple memory", top_k=1)[0].memory.id == m.id
        )
        assert [h.memory.id for h in second.recall("u1", query="pineapple", use_vector=False)] == [
            m.id
        ]
        assert [r.memory.id for r in second.related(m.id)] == [other.id]
        assert second.get_global_knowledge("D") is not None
        assert second.recall_global_knowledge("persistent knowledge")[0].chunk.doc_id == "D"
        assert second.count() == 2

    def test_reopening_with_another_embedder_is_refused(self, make_driver: MakeDriver) -> None:
        """A store remembers which embedder made its vectors; opening it with another one is
        an error that says how to re-embed, never a silent mix of vector spaces."""
        first = make_driver(HashingEmbedder(256))
        first.store("u1", "made with 256 dimensions")
        first.close()
        with pytest.raises(EmbedderMismatchError, match="reembed"):
            make_driver(HashingEmbedder(32))

    def test_closed_driver_refuses_calls(self, make_driver: MakeDriver) -> None:
        driver = make_driver()
        with driver as same:
            assert same is driver
        driver.close()
        with pytest.raises(DriverClosedError):
            driver.store("u1", "after close")
        assert driver.health_check()["status"] == "error"

    def test_health_check(self, driver: BaseMemoryDriver) -> None:
        report = driver.health_check()
        assert report["status"] == "ok" and report["driver"] == driver.name
        stats = driver.stats()
        assert stats["driver"] == driver.name

    def test_concurrent_stores_all_land(self, driver: BaseMemoryDriver) -> None:
        """Threads storing at once all succeed and every memory is found. Failing usually
        means a shared connection or index is used without a lock."""
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                for i in range(15):
                    driver.store(f"user{n}", f"thread {n} note {i}")
                    driver.recall(f"user{n}", query=f"note {i}", top_k=3)
            except BaseException as exc:  # collected and re-raised below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors[0]
        assert driver.count() == 60
        assert all(driver.count(f"user{n}") == 15 for n in range(4))
