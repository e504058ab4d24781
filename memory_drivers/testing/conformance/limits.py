"""Conformance: input at the edges (docs/semantics.md, "Limits") gets the same answer or the
same typed error on every driver: unstorable text, the size limits, numbers and times at the
ends of their ranges, long words."""

from __future__ import annotations

import itertools
import json
import string
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from ... import validation as check
from ...base import BaseMemoryDriver
from ...errors import ValidationError
from ...models import MemoryFilter, RecallHit
from ...text import terms as text_terms
from ..reference import assert_same_hits
from .base import ConformanceBase, MakeDriver, at

__all__ = ["LimitTests"]

#: Characters no backend may be given: NUL and UTF-16 surrogates (lone or paired).
UNSTORABLE = ("\x00", "\ud800", "\udfff")

#: Metadata values that must come back exactly, with their type.
EDGE_NUMBERS: dict[str, Any] = {
    "max_int": 2**63 - 1,
    "min_int": -(2**63),
    "big_float": 1e23,
    "float_1e16": 1e16,
    "integral_float": 3.0,
    "huge_float": -1.7976931348623157e308,
    "tiny_float": 5e-324,
    "third": 1 / 3,
    "nested": {"list": [2**62, 1e300, 2.5, -1.5e16]},
}


class LimitTests(ConformanceBase):
    """Input at the edges."""

    # ================================================================== unstorable text
    @pytest.mark.parametrize("bad", UNSTORABLE, ids=["nul", "surrogate-high", "surrogate-low"])
    def test_unstorable_text_is_refused_everywhere(
        self, driver: BaseMemoryDriver, bad: str
    ) -> None:
        """NUL and surrogates are a ValidationError in every text a call takes, and nothing is
        written. A raw UnicodeEncodeError or DataError means a text argument skips
        validation.plain_text (directly or through validation.identifier)."""
        m = driver.store("u1", "stored text", tags=["t"], metadata={"k": "v"})
        calls: list[tuple[str, Callable[[], Any]]] = [
            ("content", lambda: driver.store("u1", f"a{bad}b")),
            ("user_id", lambda: driver.store(f"u{bad}", "x")),
            ("conversation_id", lambda: driver.store("u1", "x", conversation_id=f"c{bad}")),
            ("tag", lambda: driver.store("u1", "x", tags=["ok", f"t{bad}"])),
            ("metadata key", lambda: driver.store("u1", "x", metadata={f"k{bad}": 1})),
            ("metadata value", lambda: driver.store("u1", "x", metadata={"k": [{"v": bad}]})),
            ("source", lambda: driver.store("u1", "x", source=f"s{bad}")),
            ("update content", lambda: driver.update(m.id, content=f"new {bad}")),
            ("update tags", lambda: driver.update(m.id, tags=[bad + "x"])),
            ("update metadata", lambda: driver.update(m.id, metadata={"k": bad})),
            ("query", lambda: driver.recall("u1", query=f"stored {bad}")),
            ("keyword query", lambda: driver.recall("u1", query=f"{bad}text", search="keyword")),
            ("tags filter", lambda: driver.recall("u1", tags=[f"t{bad}"])),
            ("exclude_tags", lambda: driver.recall("u1", exclude_tags=[f"t{bad}"])),
            ("metadata filter key", lambda: driver.recall("u1", metadata={f"k{bad}": "v"})),
            ("metadata filter value", lambda: driver.recall("u1", metadata={"k": f"v{bad}"})),
            ("recall user", lambda: driver.recall(f"u1{bad}")),
            ("knowledge", lambda: driver.store_global_knowledge(f"doc {bad}", category="c")),
            ("category", lambda: driver.store_global_knowledge("doc", category=f"c{bad}")),
            ("title", lambda: driver.store_global_knowledge("doc", category="c", title=bad)),
            ("doc_id", lambda: driver.store_global_knowledge("doc", category="c", doc_id=bad)),
            (
                "knowledge metadata",
                lambda: driver.store_global_knowledge("doc", category="c", metadata={"k": bad}),
            ),
            ("knowledge query", lambda: driver.recall_global_knowledge(f"doc {bad}")),
        ]
        for place, call in calls:
            with pytest.raises(ValidationError, match=r"NUL|surrogate"):
                call()
                pytest.fail(f"{place}: text with {bad!r} was accepted")
        assert driver.count() == 1 and driver.get(m.id) == m
        assert driver.recall_global_knowledge("doc", search="keyword") == []

    # ================================================================== size limits
    @pytest.mark.parametrize(
        ("call", "setting"),
        [
            (lambda d: d.store("u1", "x", tags=["a", "b", "c", "d"]), "MEMORY_MAX_TAGS"),
            (lambda d: d.store("u1", "x", tags=["abcdef"]), "MEMORY_MAX_TAG_LENGTH"),
            (lambda d: d.store("u1", "x", metadata={"k": "x" * 60}), "MEMORY_MAX_METADATA_BYTES"),
            (lambda d: d.store("u1", "x", metadata={"k": [[1]]}), "MEMORY_MAX_METADATA_DEPTH"),
            (lambda d: d.update(d.recall("u1")[0].memory.id, tags=list("abcd")), "MAX_TAGS"),
            (lambda d: d.recall("u1", tags=["a", "b", "c"]), "RECALL_MAX_TAGS"),
            (lambda d: d.recall("u1", tags=["abcdef"]), "MEMORY_MAX_TAG_LENGTH"),
            (lambda d: d.recall("u1", exclude_tags=["a", "b", "c"]), "RECALL_MAX_EXCLUDE_TAGS"),
            (lambda d: d.recall("u1", metadata={"a": 1, "b": 2, "c": 3}), "METADATA_KEYS"),
            (lambda d: d.recall("u1", query="one two three four"), "KEYWORD_MAX_QUERY_TERMS"),
            (
                lambda d: d.recall("u1", query="one two three four", search="keyword"),
                "KEYWORD_MAX_QUERY_TERMS",
            ),
            (lambda d: d.recall_global_knowledge("one two three four"), "KEYWORD_MAX_QUERY"),
            (lambda d: d.recall("u1", top_k=11), "RECALL_MAX_TOP_K"),
            (lambda d: d.recall("u1", top_k=2**63), "RECALL_MAX_TOP_K"),
            (lambda d: d.recall_global_knowledge("one", top_k=11), "RECALL_MAX_TOP_K"),
            (
                lambda d: d.store_global_knowledge("doc", "c", metadata={"k": "x" * 60}),
                "MEMORY_MAX_METADATA_BYTES",
            ),
        ],
    )
    def test_limits_name_their_setting(
        self, make_driver: MakeDriver, call: Callable[[BaseMemoryDriver], Any], setting: str
    ) -> None:
        """Input over a limit is a ValidationError naming the setting, and writes nothing."""
        driver = make_driver(
            memory_max_tags=3,
            memory_max_tag_length=5,
            memory_max_metadata_bytes=50,
            memory_max_metadata_depth=2,
            recall_max_tags=2,
            recall_max_exclude_tags=2,
            recall_max_metadata_keys=2,
            keyword_max_query_terms=3,
            recall_max_top_k=10,
        )
        kept = driver.store("u1", "one", tags=["a", "b", "c"], metadata={"k": [1]})
        with pytest.raises(ValidationError, match=setting):
            call(driver)
        assert driver.count() == 1 and driver.get(kept.id) == kept
        assert driver.recall_global_knowledge("doc", search="keyword") == []

    def test_metadata_of_the_most_keys(self, make_driver: MakeDriver) -> None:
        """A metadata object has at most ``MAX_METADATA_KEYS`` (5,000) keys, on every driver
        (Chroma fails every later write of a store once a record holds more than 5,461 keys,
        and the chroma driver gives each scalar value a key). At the limit a memory is stored
        and found by a filter on its last key; one key more is a ValidationError."""
        driver = make_driver(memory_max_metadata_bytes=1024 * 1024)
        keys = {f"k{i}": i for i in range(check.MAX_METADATA_KEYS)}
        with pytest.raises(ValidationError, match="keys; the maximum"):
            driver.store("u1", "many keys", metadata={**keys, "one": "more"})
        assert driver.count() == 0
        stored = driver.store("u1", "many keys", metadata=keys)
        last = f"k{check.MAX_METADATA_KEYS - 1}"
        hits = driver.recall("u1", metadata={last: check.MAX_METADATA_KEYS - 1})
        assert hits == [RecallHit(memory=stored, score=None)]
        driver.store("u1", "a later memory")
        assert driver.count("u1") == 2

    def test_long_varied_memories_in_one_conversation(self, make_driver: MakeDriver) -> None:
        """Three memories of 4,000 distinct keyword terms each in one conversation (the first
        with 1,000 tags), each indexed with its neighbours' terms too (12,000 for the third):
        every later write and recall works, and recall answers as the reference does. A
        Chroma "Error in compaction" here means the driver put the terms into a record's
        arrays, which Chroma 1.5.9 fails on past 5,461 items, and every later write of the
        store with them (issue 12)."""
        driver = make_driver(memory_max_content_length=50_000, memory_max_tags=1000)
        # Words that are their own term (no stop word, no stem of another): distinct terms.
        words = (
            "".join(w)
            for w in itertools.product(string.ascii_lowercase, repeat=3)
            if text_terms("".join(w)) == ["".join(w)]
        )
        texts = [" ".join(next(words) for _ in range(4000)) for _ in range(3)]
        assert all(len(text_terms(t)) == 4000 for t in texts)
        tags = [f"t{i}" for i in range(1000)]
        try:
            stored = driver.store_many(
                [
                    {"user_id": "u1", "content": text, "conversation_id": "c", "created_at": at(i)}
                    | ({"tags": tags} if i == 0 else {})
                    for i, text in enumerate(texts)
                ]
            )
        except ValidationError as error:
            if "characters long" not in str(error):
                raise
            pytest.skip(f"the backend holds shorter memories ({error})")
        later = driver.store("u1", "a later turn", conversation_id="c")
        driver.update(stored[1].id, content=texts[1].replace(texts[1][:3], "zzz", 1))
        assert driver.delete(later.id)
        driver.store("u1", "the last turn", conversation_id="c")
        memories = list(driver.iter_memories("u1"))
        assert len(memories) == 4
        query = f"{texts[0][:3]} zzz {texts[2][-3:]} last"
        for search in ("keyword", "hybrid"):
            expected = self.expected(
                driver, memories, MemoryFilter(user_id="u1"), top_k=10, query=query, search=search
            )
            got = driver.recall("u1", query=query, search=search, top_k=10)
            assert_same_hits(got, expected, 10, context=search)

    def test_inputs_at_the_default_limits_get_the_reference_answer(
        self, driver: BaseMemoryDriver
    ) -> None:
        """With every default limit reached at once (tags on a memory, metadata size and depth,
        filter sizes, query terms), recall still answers, and as the reference does. An error
        here ("Expression tree is too large", a Chroma compaction error, a 500-SELECT limit)
        means a backend cannot hold what validation lets through: lower the default."""
        limits = driver.limits
        tags = [f"{i:03d}".ljust(limits.max_tag_length, "t") for i in range(limits.max_tags)]
        keys = limits.max_filter_metadata_keys
        deep: Any = 1
        for _ in range(limits.max_metadata_depth - 1):
            deep = [deep]
        flat = {f"k{i}": i for i in range(keys)}
        used = len(json.dumps({**flat, "deep": deep, "pad": ""}))
        metadata = {**flat, "deep": deep, "pad": "p" * (limits.max_metadata_bytes - used)}
        words = [f"word{i}x" for i in range(limits.max_query_terms)]
        items = [
            {
                "user_id": "u1",
                "content": " ".join(words[i::3]),
                "tags": tags,
                "metadata": metadata,
                "created_at": at(i),
            }
            for i in range(3)
        ] + [{"user_id": "u1", "content": "other words", "tags": tags[:1], "created_at": at(5)}]
        memories = driver.store_many(items)
        assert driver.get(memories[0].id) == memories[0]
        query = " ".join(words)
        filters: list[dict[str, Any]] = [
            {"tags": tags[: limits.max_filter_tags]},
            {"tags": tags[: limits.max_filter_tags], "tag_mode": "all"},
            {"exclude_tags": [f"x{i}" for i in range(limits.max_exclude_tags)]},
            {"metadata": dict(list(flat.items())[:keys])},
        ]
        for chosen in filters:
            for search in ("keyword", "hybrid", None):
                kwargs = {**chosen, "query": query if search else None}
                if search:
                    kwargs["search"] = search
                got = driver.recall("u1", top_k=10, **kwargs)
                expected = self.expected(
                    driver,
                    memories,
                    driver._filter(user_id="u1", **chosen),
                    top_k=10,
                    query=kwargs["query"],
                    search=search,
                )
                assert_same_hits(got, expected, 10, context=f"{search} {list(chosen)}")

    # ================================================================== numbers
    def test_numbers_at_the_edges_come_back_exactly(self, driver: BaseMemoryDriver) -> None:
        """64-bit integers and any finite float come back with their value and type, and a
        filter on each finds its memory. A float returned as an int (PostgreSQL's jsonb prints
        1e23 as 100000000000000000000000) means the driver's JSON translation loses the type."""
        m = driver.store("u1", "numbers", metadata=EDGE_NUMBERS)
        driver.store("u1", "other", metadata={"max_int": 2**63 - 2, "big_float": 1e22})
        for stored in (m, driver.get(m.id), driver.recall("u1", top_k=2)[-1].memory):
            assert stored is not None and stored.metadata == EDGE_NUMBERS
            for key, value in EDGE_NUMBERS.items():
                assert repr(stored.metadata[key]) == repr(value), key
        for key, value in EDGE_NUMBERS.items():
            if key != "nested":
                hits = driver.recall("u1", metadata={key: value})
                assert [h.memory.id for h in hits] == [m.id], key
        for bad in (2**63, -(2**63) - 1, 10**30):
            with pytest.raises(ValidationError, match="64-bit"):
                driver.store("u1", "x", metadata={"n": bad})
            with pytest.raises(ValidationError, match="64-bit"):
                driver.recall("u1", metadata={"n": bad})
            with pytest.raises(ValidationError, match="64-bit"):
                driver.update(m.id, metadata={"deep": [bad]})
        assert driver.count() == 2

    # ================================================================== times
    def test_times_at_the_edges(self, driver: BaseMemoryDriver) -> None:
        """The first and last representable microseconds are stored, returned, ordered and
        filtered exactly; a time outside them is a ValidationError; a cleanup age reaching
        before the year 1 selects nothing."""
        first = datetime.min.replace(tzinfo=timezone.utc)
        last = datetime.max.replace(tzinfo=timezone.utc)
        old, new, mid = driver.store_many(
            [
                {"user_id": "u1", "content": "first", "created_at": first},
                {"user_id": "u1", "content": "last", "created_at": last, "updated_at": last},
                {"user_id": "u1", "content": "middle", "created_at": at(0)},
            ]
        )
        assert driver.get(old.id) == old and driver.get(new.id) == new
        assert old.created_at == first and new.created_at == last
        assert [h.memory.id for h in driver.recall("u1")] == [new.id, mid.id, old.id]
        cases: list[tuple[dict[str, Any], list[str]]] = [
            ({"since": first}, [new.id, mid.id, old.id]),
            ({"until": first + timedelta(microseconds=1)}, [old.id]),
            ({"since": last}, [new.id]),
            ({"until": last}, [mid.id, old.id]),
            (
                {"since": "0001-01-01T00:00:00Z", "until": "9999-12-31T23:59:59.999999Z"},
                [
                    mid.id,
                    old.id,
                ],
            ),
        ]
        for chosen, ids in cases:
            assert [h.memory.id for h in driver.recall("u1", **chosen)] == ids, chosen
        east = timezone(timedelta(hours=1))
        with pytest.raises(ValidationError, match="years 1 to 9999"):
            driver.store_many(
                [{"user_id": "u1", "content": "x", "created_at": first.replace(tzinfo=east)}]
            )
        with pytest.raises(ValidationError, match="years 1 to 9999"):
            driver.recall("u1", until=datetime.min.replace(tzinfo=east))
        for days in (1e6, 1e12):
            result = driver.cleanup(max_age_days=days, dry_run=False)
            assert result.count == 0 and result.memories == []
        assert [m.id for m in driver.cleanup(max_age_days=700_000).memories] == [old.id]
        assert driver.count() == 3

    # ================================================================== long words
    def test_long_words_are_found_on_every_driver(self, driver: BaseMemoryDriver) -> None:
        """A word longer than PostgreSQL indexes (2,047 bytes) is found by keyword search like
        any other: terms are cut to text.MAX_TERM_LENGTH in shared code. A miss means the
        backend indexes something else than memory_drivers.text's terms."""
        long_word = "λ" * 1100  # 2,200 bytes, in content short enough for every driver
        m = driver.store("u1", f"the password is {long_word} ok")
        other = driver.store("u1", "the password is short")
        hits = driver.recall("u1", query=long_word, search="keyword")
        assert [h.memory.id for h in hits] == [m.id]
        everything = self.expected(
            driver,
            [m, other],
            MemoryFilter(user_id="u1"),
            top_k=5,
            query=f"password {long_word}",
            search="keyword",
        )
        got = driver.recall("u1", query=f"password {long_word}", search="keyword")
        assert_same_hits(got, everything, 5)
        driver.store_global_knowledge(f"manual {long_word} end", category="c", doc_id="d")
        found = driver.recall_global_knowledge(long_word, search="keyword")
        assert [h.chunk.doc_id for h in found] == ["d"]
