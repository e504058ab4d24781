"""Conformance: moving data in and out (export, import) keeps every record exactly."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ...base import BaseMemoryDriver
from ...config import Settings
from ...errors import ConflictError
from ...transfer import export_records, import_records
from ...transfer.format import AssociationRecord, DocumentRecord, MemoryRecordLine
from .base import ConformanceBase, MakeDriver, at


def records(driver: BaseMemoryDriver) -> dict[str, Any]:
    """What an export of ``driver`` holds, comparable between stores (vectors apart)."""
    out: dict[str, Any] = {"memories": [], "associations": [], "knowledge": [], "vectors": {}}
    for record in export_records(driver):
        if isinstance(record, MemoryRecordLine):
            out["memories"].append(record.memory.model_dump(mode="json"))
            if record.vector is not None:
                out["vectors"][record.memory.id] = record.vector
        elif isinstance(record, AssociationRecord):
            out["associations"].append(record.association.model_dump(mode="json"))
        elif isinstance(record, DocumentRecord):
            out["knowledge"].append([c.model_dump(mode="json") for c in record.chunks])
    out["associations"].sort(key=lambda a: (a["source_id"], a["target_id"]))
    return out


class TransferTests(ConformanceBase):
    """Import and export through the public API (docs/portability.md)."""

    @staticmethod
    def _reference(base_settings: Settings, embedder: Any) -> BaseMemoryDriver:
        """A filled in-memory sqlite store: two users, a conversation, tags, metadata with a
        null and a nested value, fixed times, two links, a knowledge document."""
        from ...drivers.sqlite import SQLiteDriver

        store = SQLiteDriver(base_settings.replace(memory_db_url="sqlite://"), embedder=embedder)
        made = store.store_many(
            [
                {
                    "user_id": "u1",
                    "conversation_id": "c1",
                    "content": "I adopted a puppy named Rex",
                    "tags": ["pets", "home"],
                    "metadata": {"n": 1, "x": None, "nested": {"a": [1, 2.5]}},
                    "importance": 0.9,
                    "memory_type": "episodic",
                    "source": "chat",
                    "created_at": at(1),
                    "updated_at": at(2),
                },
                {
                    "user_id": "u1",
                    "conversation_id": "c1",
                    "content": "What is its name?",
                    "created_at": at(1.5),
                },
                {"user_id": "u2", "content": "Bob likes green tea", "created_at": at(3)},
            ]
        )
        store.import_associations(
            [
                {
                    "source_id": made[0].id,
                    "target_id": made[1].id,
                    "relationship_type": "LEADS_TO",
                    "strength": 0.75,
                    "created_at": at(4),
                }
            ]
        )
        text = " ".join(f"Sentence {i} of the travel policy." for i in range(120))
        store.store_global_knowledge(text, "policies", title="Travel", doc_id="travel")
        return store

    def test_import_keeps_every_record(
        self, make_driver: MakeDriver, base_settings: Settings
    ) -> None:
        """An export imported into this driver and exported again gives the same records: ids,
        contents, times to the microsecond, tags in order, metadata (nulls and nesting), links
        with their times, knowledge chunks; vectors within 1e-6 where the driver gives them
        back. Failing usually means a field is rounded, dropped or re-derived on write or read
        (times to milliseconds, a null metadata value, a link's time set to now)."""
        driver = make_driver()
        reference = self._reference(base_settings, driver.embedder)
        try:
            result = import_records(driver, export_records(reference))
            assert result.memories == {"stored": 3, "replaced": 0, "skipped": 0}
            expected, got = records(reference), records(driver)
            for key in ("memories", "associations", "knowledge"):
                assert got[key] == expected[key], key
            if driver.vectors_readable:
                assert got["vectors"].keys() == expected["vectors"].keys()
                for key, vector in expected["vectors"].items():
                    np.testing.assert_allclose(got["vectors"][key], vector, atol=1e-6)
        finally:
            reference.close()

    def test_import_again_changes_nothing(
        self, make_driver: MakeDriver, base_settings: Settings
    ) -> None:
        """Importing the same records again skips them all and leaves the store as it was;
        ``on_conflict="fail"`` raises ConflictError before writing. Failing means a driver's
        existence check (``_get_memories``) or ConflictError differs."""
        driver = make_driver()
        reference = self._reference(base_settings, driver.embedder)
        try:
            import_records(driver, export_records(reference))
            before = records(driver)
            again = import_records(driver, export_records(reference))
            assert again.memories == {"stored": 0, "replaced": 0, "skipped": 3}
            assert again.knowledge_documents["skipped"] == 1
            with pytest.raises(ConflictError):
                import_records(driver, export_records(reference), on_conflict="fail")
            after = records(driver)
            assert (after["memories"], after["associations"], after["knowledge"]) == (
                before["memories"],
                before["associations"],
                before["knowledge"],
            )
        finally:
            reference.close()
