"""Conformance: random memories, filters and queries (hypothesis) give the reference's answer.

Each example stores random memories (contents from a small vocabulary, so keyword search has
overlaps; tags, metadata with numbers at their edges, times, conversations) and runs random
recalls (every filter, every search mode, random ``top_k``), now and then with input that must
be refused (NUL, surrogates, out-of-range numbers and times, oversized filters). A driver must
return exactly :func:`~memory_drivers.testing.reference.expected_hits` (same ids, same order,
same scores within 1e-6), or raise the error, with the message, that the reference sqlite driver
raises for the same call.

Examples are cheap, not exhaustive: ``MEMORY_DRIVERS_PROPERTY_EXAMPLES`` (default 25) sets how
many run per driver; raise it for a deeper run (``MEMORY_DRIVERS_PROPERTY_EXAMPLES=500 pytest
-k differential``). Each example writes under users of its own, so examples share one store.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ...base import BaseMemoryDriver
from ...errors import MemoryDriverError
from ..reference import assert_same_hits
from .base import ConformanceBase, MakeDriver, at

__all__ = ["DifferentialTests", "property_examples"]


def property_examples() -> int:
    """How many random examples a property test runs (``MEMORY_DRIVERS_PROPERTY_EXAMPLES``)."""
    return int(os.environ.get("MEMORY_DRIVERS_PROPERTY_EXAMPLES", "25"))


FIRST = datetime.min.replace(tzinfo=timezone.utc)
LAST = datetime.max.replace(tzinfo=timezone.utc)
LONG_WORD = "λ" * 1030  # 2,060 bytes: longer than a PostgreSQL tsvector word

WORDS = [
    "tea", "green", "coffee", "hike", "hiking", "mountain", "dog", "dogs", "cat", "blue",
    "music", "jazz", "piano", "nurse", "boston", "2026", "café", "Ünïcode", "λόγος", "東京",
    "the", "what", "x", LONG_WORD,
]  # fmt: skip
TAGS = ["a", "b", "c", "Tag", "tag", "with space", "ü", "t" * 255]
KEYS = ["k", "n", "flag", "ü", "a b"]
SCALARS: list[Any] = [
    None, True, False, 0, 1, 1.0, -1, 0.5, 2**63 - 1, -(2**63), 1e23, 1e16, 5e-324, "1", "a",
    "", "ü",
]  # fmt: skip
TYPES = ["semantic", "fact", "episodic"]
HOURS = st.integers(min_value=0, max_value=60)

#: Input that every driver must refuse, with the same ValidationError.
BAD_TEXT = ["bad\x00text", "bad\ud800text"]
BAD_NUMBERS: list[Any] = [2**63, -(2**63) - 1, float("nan")]


def _sometimes(
    good: st.SearchStrategy[Any], bad: list[Any], one_in: int = 40
) -> st.SearchStrategy[Any]:
    """Mostly ``good``, now and then (one draw in ``one_in``) one of ``bad``."""
    # sampled_from draws evenly (integers favour their bounds) and shrinks to the good side.
    return st.sampled_from(range(one_in)).flatmap(
        lambda n: st.sampled_from(bad) if n == one_in - 1 else good
    )


_content = st.lists(st.sampled_from(WORDS), min_size=1, max_size=6, unique=True).map(" ".join)
_scalar = st.sampled_from(SCALARS)
_metadata = st.dictionaries(
    st.sampled_from(KEYS), st.one_of(_scalar, st.lists(_scalar, max_size=2)), max_size=3
)
#: One field of one memory set to a value every driver must refuse (the whole batch with it).
_poison = _sometimes(
    st.none(),
    [
        ("content", BAD_TEXT[0]),
        ("content", BAD_TEXT[1]),
        ("tags", ["ok", BAD_TEXT[1]]),
        ("tags", [f"many{i}" for i in range(101)]),  # over MEMORY_MAX_TAGS
        ("metadata", {"n": BAD_NUMBERS[0]}),
        ("metadata", {"n": [BAD_NUMBERS[1]]}),
        ("metadata", {"f": BAD_NUMBERS[2]}),
        ("metadata", {BAD_TEXT[0]: 1}),
        ("created_at", "0001-01-01T00:00:00+01:00"),  # before the year 1 in UTC
    ],
    4,
)
_time = st.one_of(HOURS.map(at), st.sampled_from([FIRST, LAST]))

_memory = st.fixed_dictionaries(
    {
        "user": st.sampled_from([0, 0, 0, 0, 1]),
        "conversation_id": st.sampled_from([None, "c1", "c2"]),
        "content": _content,
        "tags": st.lists(st.sampled_from(TAGS), max_size=3),
        "metadata": _metadata,
        "importance": st.sampled_from([0.0, 0.25, 0.5, 1.0]),
        "memory_type": st.sampled_from(TYPES),
        "created_at": _time,
    }
)

TAG_FILTER = _sometimes(
    st.lists(st.sampled_from(TAGS[:5]), min_size=1, max_size=3),
    [["ok", BAD_TEXT[0]], [f"many{i}" for i in range(101)]],  # over RECALL_MAX_TAGS
    20,
)
FILTERS: dict[str, st.SearchStrategy[Any]] = {
    "conversation_id": st.sampled_from(["c1", "c2"]),
    "memory_types": st.lists(st.sampled_from(TYPES), min_size=1, max_size=2),
    "exclude_tags": st.lists(st.sampled_from(TAGS), min_size=1, max_size=2),
    "since": _time,
    "until": _time,
    "min_importance": st.sampled_from([0.25, 0.5, 1.0]),
    "metadata": _sometimes(
        st.dictionaries(st.sampled_from(KEYS), _scalar, min_size=1, max_size=2),
        [{"n": BAD_NUMBERS[0]}, {"k": BAD_TEXT[1]}, {BAD_TEXT[0]: 1}],
        20,
    ),
}
#: A recall's filters: up to two of FILTERS, and in half the recalls a tag filter.
_filters = st.tuples(
    st.lists(st.sampled_from(sorted(FILTERS)), max_size=2, unique=True), st.booleans()
).flatmap(
    lambda chosen: st.fixed_dictionaries(
        {
            **{name: FILTERS[name] for name in chosen[0]},
            **(
                {"tags": TAG_FILTER, "tag_mode": st.sampled_from(["any", "all"])}
                if chosen[1]
                else {}
            ),
        }
    )
)

_recall = st.fixed_dictionaries(
    {
        "filters": _filters,
        "mode": st.sampled_from(["hybrid", "vector", "keyword", "recent"]),
        "query": _sometimes(_content, [*BAD_TEXT, " ".join(f"w{i}x" for i in range(101))], 20),
        "top_k": _sometimes(st.sampled_from([1, 3, 10]), [0, 10_001], 20),
    }
)


class DifferentialTests(ConformanceBase):
    """Random inputs against the reference."""

    def _outcome(self, call: Callable[[], Any]) -> tuple[Any, MemoryDriverError | None]:
        try:
            return call(), None
        except MemoryDriverError as exc:
            return None, exc

    def _same_error(
        self, error: MemoryDriverError | None, wanted: MemoryDriverError | None, what: str
    ) -> None:
        assert (type(error), str(error)) == (type(wanted), str(wanted)), (
            f"{what}: this driver raised {error!r}, the reference {wanted!r}"
        )

    def test_differential_random_inputs(self, make_driver: MakeDriver, base_settings: Any) -> None:
        """Random memories and recalls give the reference's hits or the reference driver's
        error. Hypothesis prints the smallest failing example: the memories, the filter, the
        mode and the query. A failure usually means a filter translated differently for some
        value (a tag with a space, a metadata number at its edge, a time at the end of the
        range), scores computed from other statistics, or input that reaches the backend
        unchecked (a raw backend error instead of the reference's ValidationError)."""
        from ...drivers.sqlite import SQLiteDriver

        driver = make_driver()
        reference = SQLiteDriver(
            base_settings.replace(memory_db_url="sqlite://"), embedder=driver.embedder
        )
        try:
            self._run_examples(driver, reference)
        finally:
            reference.close()

    def _run_examples(self, driver: BaseMemoryDriver, reference: BaseMemoryDriver) -> None:
        @settings(
            max_examples=property_examples(),
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(
            memories=st.lists(_memory, min_size=2, max_size=10),
            recalls=st.lists(_recall, min_size=1, max_size=8),
            poison=_poison,
        )
        def example(
            memories: list[dict[str, Any]],
            recalls: list[dict[str, Any]],
            poison: tuple[str, Any] | None,
        ) -> None:
            if poison is not None:
                memories[-1] = {**memories[-1], poison[0]: poison[1]}
            users = [f"user-{uuid.uuid4().hex[:12]}-{n}" for n in range(2)]
            items = [
                {**{k: v for k, v in m.items() if k != "user"}, "id": str(uuid.uuid4())}
                | {"user_id": users[m["user"]]}
                for m in memories
            ]
            stored, error = self._outcome(lambda: driver.store_many(items))
            wanted, wanted_error = self._outcome(lambda: reference.store_many(items))
            self._same_error(error, wanted_error, "store_many")
            event(f"store_many: {type(error).__name__ if error else 'stored'}")
            if error is not None:
                assert driver.count(users[0]) == 0, "a refused batch wrote something"
                return
            assert stored == wanted, "the stored memories differ from the reference's"
            for memory in stored:
                assert driver.get(memory.id) == memory, f"{memory.id} did not round-trip"
            mine = [m for m in stored if m.user_id == users[0]]
            for recall in recalls:
                self._check_recall(driver, reference, users[0], mine, recall)

        example()

    def _check_recall(
        self,
        driver: BaseMemoryDriver,
        reference: BaseMemoryDriver,
        user: str,
        memories: list[Any],
        recall: dict[str, Any],
    ) -> None:
        mode = recall["mode"]
        query = None if mode == "recent" else recall["query"]
        kwargs = {**recall["filters"], "query": query, "top_k": recall["top_k"], "now": at(100)}
        if mode != "recent":
            kwargs["search"] = mode
        context = f"{mode} {query!r} {recall['filters']} top_k={recall['top_k']}"
        got, error = self._outcome(lambda: driver.recall(user, **kwargs))
        _, wanted_error = self._outcome(lambda: reference.recall(user, **kwargs))
        self._same_error(error, wanted_error, context)
        event(
            f"recall: {type(error).__name__ if error else f'{len(got)} hits' if got else '0 hits'}"
        )
        if error is not None:
            return
        search = mode if mode != "recent" else None
        expected = self.expected(
            driver,
            memories,
            driver._filter(user_id=user, **recall["filters"]),
            top_k=recall["top_k"],
            query=query,
            search=search,
            now=at(100),
        )
        if self.exact_scores or mode in ("keyword", "recent"):
            assert_same_hits(got, expected, recall["top_k"], tol=1e-6, context=context)
        else:
            allowed = {h.memory.id for h in expected}
            assert len(got) == min(recall["top_k"], len(expected)), context
            assert all(h.memory.id in allowed for h in got), f"a hit fails the filter ({context})"
