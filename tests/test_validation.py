"""The fast paths of a batch write's preparation give what the general checks give.

``store_many`` validates each memory (memory_drivers.validation), makes its keyword terms
(memory_drivers.text) and builds its Memory (base._new_memory) with shortcuts for the common
case. Each shortcut must answer exactly as the general code it skips: the same values, the same
typed errors with the same messages, the same terms (the keyword index and BM25 depend on them).
"""

from __future__ import annotations

import json
import math
import re
import string
import unicodedata
import uuid
from datetime import datetime, timezone

import pytest
import snowballstemmer

from memory_drivers import validation as check
from memory_drivers.base import _new_memory
from memory_drivers.bench.dataset import make_items, make_queries
from memory_drivers.errors import ValidationError
from memory_drivers.models import Memory
from memory_drivers.text import MAX_TERM_LENGTH, STOPWORDS, query_terms, terms

# Every character str.isspace() calls whitespace (str.strip strips exactly these).
WHITESPACE = [chr(c) for c in range(0x3000 + 1) if chr(c).isspace()]


def _message(call, *args, **kwargs) -> str | None:
    try:
        call(*args, **kwargs)
    except ValidationError as exc:
        return str(exc)
    return None


# ------------------------------------------------------------------------- identifiers


@pytest.mark.parametrize("space", WHITESPACE)
def test_identifier_with_any_whitespace_at_an_end_is_refused(space: str) -> None:
    for value in (f"{space}id", f"id{space}"):
        assert "must not start or end with whitespace" in str(
            _message(check.identifier, value, "user_id")
        )
        assert "must not start or end with whitespace" in str(_message(check.tags, ["ok", value]))
    assert "must not be empty or whitespace" in str(_message(check.identifier, space, "user_id"))
    assert check.identifier(f"a{space}b", "user_id") == f"a{space}b"  # inside is fine


def test_identifier_length_limit_is_exact() -> None:
    assert check.identifier("x" * 255, "user_id") == "x" * 255
    assert _message(check.identifier, "x" * 256, "user_id") == (
        "user_id is 256 characters long; the maximum is 255"
    )
    assert check.tags(["t" * 255]) == ["t" * 255]
    assert "each of tags is 256 characters long; the maximum is 255 (MEMORY_MAX_TAG_LENGTH)" in (
        str(_message(check.tags, ["t" * 256]))
    )


def test_identifier_refuses_unstorable_text_and_other_types() -> None:
    assert "NUL character" in str(_message(check.identifier, "a\x00b", "user_id"))
    assert "surrogate" in str(_message(check.tags, ["a\ud800"]))
    assert _message(check.identifier, "", "user_id") == "user_id must not be empty or whitespace"
    assert _message(check.identifier, 5, "user_id") == "user_id must be a string, got int 5"

    class Text(str):
        pass

    value = check.identifier(Text("sub"), "user_id")  # a str subclass takes the general path
    assert value == "sub"
    assert check.tags([Text("b"), "a", "b"]) == ["b", "a"]


def test_tags_keep_first_order_and_count_distinct() -> None:
    assert check.tags(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]
    many = [f"t{i % 100}" for i in range(300)]
    assert check.tags(many) == [f"t{i}" for i in range(100)]
    assert "has 101 distinct tags" in str(_message(check.tags, [f"t{i}" for i in range(101)]))


# ------------------------------------------------------------------------- memory ids


@pytest.mark.parametrize(
    "given",
    [
        "3f2b8c1e-4d5a-4b6c-9d7e-8f9a0b1c2d3e",
        "3F2B8C1E-4D5A-4B6C-9D7E-8F9A0B1C2D3E",
        "{3f2b8c1e-4d5a-4b6c-9d7e-8f9a0b1c2d3e}",
        "urn:uuid:3f2b8c1e-4d5a-4b6c-9d7e-8f9a0b1c2d3e",
        "3f2b8c1e4d5a4b6c9d7e8f9a0b1c2d3e",
        "3f2b8c1e-4d5a-4b6c-9d7e-8f9a0b1c2d3\u0663",  # an Arabic-Indic digit: int() reads it
        "3f2b8c1e-4d5a-4b6c-9d7e-8f9a0b1c2d3e\n",
        "3f2b8c1e-4d5a-4b6c-9d7e-8f9a0b1c2d3",
        "3f2b8c1e-4d5a-4b6c-9d7e-8f9a0b1c2d3g",
        "3f2b8c1e-4d5a-+b6c-9d7e-8f9a0b1c2d3e",
        "",
    ],
)
def test_memory_id_is_what_uuid_makes_of_it(given: str) -> None:
    try:
        expected: str | None = str(uuid.UUID(given))
    except ValueError:
        expected = None
    if expected is None:
        assert "is not a valid memory id" in str(_message(check.memory_id, given, "id"))
    else:
        assert check.memory_id(given, "id") == expected


# ------------------------------------------------------------------------- numbers, metadata


@pytest.mark.parametrize("value", [0.0, -0.0, 1.0, 0.5, 1e-300, 0, 1, True, math.nan, math.inf])
def test_importance_fast_path_answers_as_the_general_check(value: float) -> None:
    if isinstance(value, bool) or not math.isfinite(value):
        assert _message(check.importance, value) is not None
    else:
        result = check.importance(value)
        assert type(result) is float and result == value


def test_metadata_size_limit_counts_utf8_bytes_exactly() -> None:
    limits = check.Limits(max_metadata_bytes=100)
    overhead = len('{"k": ""}')
    ascii_ok = {"k": "x" * (100 - overhead)}
    assert check.metadata(ascii_ok, limits=limits) == ascii_ok
    assert "is 101 bytes as JSON" in str(
        _message(check.metadata, {"k": "x" * (101 - overhead)}, limits=limits)
    )
    wide = {"k": "é" * 45 + "x"}  # 45 two-byte characters: 100 bytes, 55 characters
    assert check.metadata(wide, limits=limits) == wide
    assert "is 101 bytes as JSON" in str(_message(check.metadata, {"k": "é" * 46}, limits=limits))
    text = json.dumps({"k": '\n"é'}, ensure_ascii=False)
    assert check.metadata({"k": '\n"é'}, limits=check.Limits(max_metadata_bytes=len(text) + 1))


def test_metadata_values_checked_inside_objects_and_lists() -> None:
    value = {"a": [1, "s", None, True, 2.5, {"b": [False]}], "c": -(2**63), "d": 2**63 - 1}
    assert check.metadata(value) == value
    assert _message(check.metadata, {"a": [1, 2**63]}) == (
        "metadata['a'][1] is 9223372036854775808, outside the signed 64-bit range "
        "(-2**63 to 2**63 - 1) that every backend stores exactly; store it as a string"
    )
    assert "metadata['a'][0] is nan" in str(_message(check.metadata, {"a": [math.nan]}))
    assert "metadata['x']['y'] holds a NUL" in str(_message(check.metadata, {"x": {"y": "\x00"}}))
    assert "the key 'k\\x00' of metadata['x']" in str(_message(check.metadata, {"x": {"k\x00": 1}}))


# ------------------------------------------------------------------------- Memory objects


def test_new_memory_is_what_model_construct_makes() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    fields = {
        "id": str(uuid.uuid4()),
        "user_id": "u1",
        "conversation_id": "c1",
        "content": "hello",
        "memory_type": "fact",
        "tags": ["a"],
        "importance": 0.25,
        "metadata": {"k": [1]},
        "source": None,
        "created_at": now,
        "updated_at": now,
    }
    made = _new_memory(dict(fields))
    expected = Memory.model_construct(**fields)
    assert made == expected
    assert made.model_fields_set == expected.model_fields_set
    assert made.model_dump() == expected.model_dump()
    assert list(made.model_dump()) == list(Memory.model_fields)
    assert made.__pydantic_extra__ is None and made.__pydantic_private__ is None
    assert Memory.model_validate(made.model_dump()) == made
    assert made.model_copy(update={"content": "bye"}).content == "bye"
    with pytest.raises(Exception, match="frozen"):
        made.content = "changed"  # type: ignore[misc]


# ------------------------------------------------------------------------- terms


def _uncached_terms(text: str, skip: frozenset[str] = frozenset()) -> list[str]:
    """The terms as text.py made them before the word cache: stemmed one by one."""
    stemmer = snowballstemmer.stemmer("english")
    if text.isascii():
        folded = text.lower()
    else:
        decomposed = unicodedata.normalize("NFKD", text)
        folded = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    seen: dict[str, None] = {}
    for word in re.findall(r"[^\W_]+", folded):
        if word in STOPWORDS or word in skip or (len(word) == 1 and not word.isdigit()):
            continue
        seen[str(stemmer.stemWord(word))[:MAX_TERM_LENGTH]] = None
    return list(seen)


def _vocabulary_texts() -> list[str]:
    texts = [item.content for item in make_items(3000, seed=11, users=7)]
    texts += [q.keyword for q in make_queries(300, seed=11, users=7)]
    texts += [" ".join(sorted(STOPWORDS)), string.ascii_letters, "0 1 2 x7 v2 a b c 42"]
    texts += [
        "Café naïve résumé Ångström ŒUVRE straße İstanbul ﬁnance ½ ² ①",
        "日本語のテキスト 中文 한국어 العربية русский текст Ελληνικά",
        "running runs ran runner hiking hikes hiked generously generous generations",
        "supercalifragilistic" * 15 + " end",
    ]
    return texts


def test_cached_terms_are_the_uncached_stemmers_over_a_vocabulary() -> None:
    texts = _vocabulary_texts()
    for _ in range(2):  # the second pass is answered from the caches
        for text in texts:
            assert terms(text) == _uncached_terms(text), text


def test_query_terms_leave_out_question_words_as_before() -> None:
    skip = frozenset({"cake", "green", "what", "did"})
    for text in _vocabulary_texts():
        assert list(query_terms(text, skip)) == _uncached_terms(text, skip), text
