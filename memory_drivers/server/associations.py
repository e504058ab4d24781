"""The association routes: ``POST /associate`` and ``GET /memories/<id>/related``."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from .. import automem_wire as wire
from ..errors import NotFoundError, ValidationError
from ..models import RELATIONSHIP_TYPES, Memory, RelatedMemory
from .core import ServiceBase
from .parsing import ApiError, coerce_unit, parse_int, valid_memory_id

__all__ = ["AssociationRoutes"]

#: AutoMem's default ``limit`` of ``GET /memories/<id>/related`` (``RECALL_RELATION_LIMIT``).
RELATED_DEFAULT_LIMIT = 5


class AssociationRoutes(ServiceBase):
    """Linking memories and walking their links."""

    def associate(self, payload: Any) -> tuple[dict[str, Any], int]:
        """``POST /associate``: one link, or ``{"associations": [...]}`` (up to 500)."""
        if not isinstance(payload, dict):
            raise ApiError(400, "JSON body is required")
        if isinstance(payload.get("associations"), list):
            return self._associate_batch(payload["associations"])
        link = self._link(payload)
        return {
            "status": "success",
            "message": f"Association created between {link['memory1_id']} and {link['memory2_id']}",
            "relation_type": link["relation_type"],
            "strength": link["strength"],
            "created_at": link["created_at"],
        }, 201

    def _link(self, item: Mapping[str, Any]) -> dict[str, Any]:
        first = item.get("memory1_id")
        second = item.get("memory2_id")
        first = first.strip() if isinstance(first, str) else ""
        second = second.strip() if isinstance(second, str) else ""
        raw_type = item.get("type") or "RELATES_TO"
        if not isinstance(raw_type, str):
            raise ApiError(400, "'type' must be a string")
        relation = raw_type.strip().upper()
        strength = coerce_unit(item.get("strength", 0.5), "strength")
        if not first or not second:
            raise ApiError(400, "'memory1_id' and 'memory2_id' are required")
        first = valid_memory_id(first, "'memory1_id' must be a valid UUID")
        second = valid_memory_id(second, "'memory2_id' must be a valid UUID")
        if first == second:
            raise ApiError(400, "Cannot associate a memory with itself")
        if relation not in RELATIONSHIP_TYPES:
            raise ApiError(400, f"Relation type must be one of {sorted(RELATIONSHIP_TYPES)}")
        created = item.get("created_at")
        try:
            if created:  # an import keeps the link's time (memory-drivers' own field)
                link = self.driver.import_associations(
                    [
                        {
                            "source_id": first,
                            "target_id": second,
                            "relationship_type": relation,
                            "strength": strength,
                            "created_at": created,
                        }
                    ]
                )[0]
            else:
                link = self.driver.associate(first, second, relation, strength)
        except NotFoundError:
            raise ApiError(404, "One or both memories do not exist") from None
        return {
            "memory1_id": first,
            "memory2_id": second,
            "relation_type": relation,
            "strength": strength,
            "created_at": wire.iso(link.created_at),
        }

    def _associate_batch(self, items: list[Any]) -> tuple[dict[str, Any], int]:
        if not items:
            raise ApiError(400, "'associations' must be a non-empty array")
        if len(items) > wire.AUTOMEM_BATCH_LIMIT:
            raise ApiError(400, "Batch size limit is 500 associations per request")
        succeeded, failed = [], []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                failed.append({"index": index, "reason": "Association item must be an object"})
                continue
            try:
                link = self._link(item)
            except ApiError as exc:
                failed.append({"index": index, "reason": exc.message})
                continue
            except ValidationError as exc:
                failed.append({"index": index, "reason": str(exc)})
                continue
            succeeded.append({"index": index, **{k: v for k, v in link.items()}})
        total = len(items)
        return {
            "status": "success" if not failed else "partial_success",
            "created_count": len(succeeded),
            "failed_count": len(failed),
            "succeeded": succeeded,
            "failed": failed,
            "summary": f"{len(succeeded)}/{total} associations created successfully",
        }, (201 if not failed else 207)

    def related(self, memory_id: str, args: Any) -> dict[str, Any]:
        """``GET /memories/<id>/related``: memories linked in either direction, up to
        ``max_depth`` links away, by importance, summarized as AutoMem does (id, type, time,
        importance, the first 160 characters, five tags); ``GET /memory/<id>`` has the rest."""
        allowed = sorted(RELATIONSHIP_TYPES)
        requested = [
            part.strip().upper()
            for part in (args.get("relationship_types") or "").split(",")
            if part.strip()
        ]
        types = [t for t in dict.fromkeys(requested) if t in allowed] or allowed
        depth = parse_int(args.get("max_depth"), 1, 1, 3)
        limit = parse_int(args.get("limit"), RELATED_DEFAULT_LIMIT, 1, wire.AUTOMEM_RELATED_LIMIT)
        try:
            mid = str(uuid.UUID(memory_id))
        except ValueError:
            mid = None
        found: dict[str, Memory] = {}
        if mid is not None and self.driver.get(mid) is not None:
            seen = {mid}
            frontier = [mid]
            for _ in range(depth):
                following = []
                for current in frontier:
                    links: list[RelatedMemory] = self.driver._related(current, None)
                    for link in links:
                        other = link.memory
                        if link.relationship_type in types and other.id not in seen:
                            seen.add(other.id)
                            found[other.id] = other
                            following.append(other.id)
                frontier = following
        ordered = sorted(
            found.values(), key=lambda m: (-m.importance, -m.created_at.timestamp(), m.id)
        )[:limit]
        related = [_summary(self.render_memory(m)) for m in ordered]
        return {
            "status": "success",
            "memory_id": memory_id,
            "count": len(related),
            "related_memories": related,
            "relationship_types": types,
            "max_depth": depth,
            "limit": limit,
        }


def _summary(rendered: Mapping[str, Any]) -> dict[str, Any]:
    """AutoMem's summary of a related memory."""
    summary = {key: rendered[key] for key in ("id", "type", "timestamp", "importance")}
    snippet = str(rendered.get("content") or "").strip()
    if len(snippet) > 160:
        snippet = snippet[:157].rsplit(" ", 1)[0] + "\u2026"
    summary["content"] = snippet
    if rendered.get("tags"):
        summary["tags"] = list(rendered["tags"])[:5]
    return summary
