"""Conformance: associations between memories."""

from __future__ import annotations

import uuid

import pytest

from ...base import BaseMemoryDriver
from ...errors import NotFoundError, ValidationError
from ...models import RELATIONSHIP_TYPES
from .base import ConformanceBase

__all__ = ["AssociationTests"]


class AssociationTests(ConformanceBase):
    """Associations."""

    # ================================================================== associations
    def test_associations(self, driver: BaseMemoryDriver) -> None:
        """Links are typed and directed; ``related`` shows both directions, strongest first,
        and re-linking the same pair and type updates the strength."""
        a = driver.store("u1", "moved to Lisbon")
        b = driver.store("u1", "learning Portuguese")
        c = driver.store("u1", "used to live in Paris")
        link = driver.associate(a.id, b.id, "LEADS_TO", 0.9, user_id="u1")
        assert (link.source_id, link.target_id, link.relationship_type, link.strength) == (
            a.id,
            b.id,
            "LEADS_TO",
            0.9,
        )
        driver.associate(c.id, a.id, "occurred_before", 0.4)
        related = driver.related(a.id, user_id="u1")
        assert [(r.memory.id, r.relationship_type, r.strength, r.direction) for r in related] == [
            (b.id, "LEADS_TO", 0.9, "outgoing"),
            (c.id, "OCCURRED_BEFORE", 0.4, "incoming"),
        ]
        assert [r.memory.id for r in driver.related(a.id, "LEADS_TO")] == [b.id]
        assert [r.direction for r in driver.related(b.id)] == ["incoming"]
        again = driver.associate(a.id, b.id, "LEADS_TO", 0.2)
        assert again.created_at == link.created_at
        assert [r.strength for r in driver.related(a.id, "LEADS_TO")] == [0.2]
        driver.associate(a.id, b.id, "RELATES_TO", 0.5)
        assert len(driver.related(b.id)) == 2

    def test_associations_go_with_deleted_memories(self, driver: BaseMemoryDriver) -> None:
        a = driver.store("u1", "a")
        b = driver.store("u1", "b")
        driver.associate(a.id, b.id)
        driver.delete(b.id)
        assert driver.related(a.id) == []

    def test_association_errors(self, driver: BaseMemoryDriver) -> None:
        a = driver.store("u1", "a")
        b = driver.store("u1", "b")
        with pytest.raises(NotFoundError):
            driver.associate(a.id, str(uuid.uuid4()))
        with pytest.raises(NotFoundError):
            driver.related(str(uuid.uuid4()))
        with pytest.raises(ValidationError, match="itself"):
            driver.associate(a.id, a.id)
        with pytest.raises(ValidationError, match="strength"):
            driver.associate(a.id, b.id, strength=1.5)
        with pytest.raises(ValidationError, match="relationship_type"):
            driver.associate(a.id, b.id, "LIKES")
        with pytest.raises(ValidationError):
            driver.associate("not-an-id", b.id)
        assert driver.related(a.id) == []
        assert len(RELATIONSHIP_TYPES) == 11
