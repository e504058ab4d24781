"""The shared text rules: keyword terms and knowledge chunking (memory_drivers.text)."""

from __future__ import annotations

import itertools
import re

import pytest

from memory_drivers.text import (
    MAX_TERM_LENGTH,
    STOPWORDS,
    chunk_text,
    document_terms,
    query_terms,
    term_count,
    terms,
)

# ---------------------------------------------------------------------------------- terms


def test_terms_lowercase():
    assert terms("PYTHON Python python") == ["python"]


def test_terms_strip_accents():
    assert terms("café") == ["cafe"]
    assert terms("Café") == terms("cafe")
    assert terms("naïve résumé Ångström") == terms("naive resume angstrom")


def test_terms_stem_inflections_to_one_term():
    (hiking,) = terms("hiking")
    assert terms("hikes") == [hiking]
    assert terms("hiked") == [hiking]
    assert terms("Hiking hikes hiked") == [hiking]
    assert terms("running") == terms("runs")


def test_terms_drop_stopwords_and_single_letters():
    assert terms("the a an of and b x") == []
    assert terms("the cat and a dog") == ["cat", "dog"]
    # every listed stop word is dropped, in any case
    assert terms(" ".join(sorted(STOPWORDS)).upper()) == []


def test_terms_keep_digits_including_single_digits():
    assert terms("room 42 floor 3") == ["room", "42", "floor", "3"]
    assert terms("x7 v2") == ["x7", "v2"]


def test_terms_are_distinct_in_first_appearance_order():
    assert terms("dog cat dog bird cat") == ["dog", "cat", "bird"]


def test_terms_split_on_punctuation_and_underscores():
    assert terms("foo_bar, baz-qux!") == ["foo", "bar", "baz", "qux"]


def test_terms_are_letters_and_digits_only():
    # Backends quote terms into FTS queries; they must never carry quotes or operators.
    text = 'He said "DROP TABLE" -- OR NEAR(x) * ^ café\'s 1.5'
    for term in terms(text):
        assert re.fullmatch(r"[^\W_]+", term), term
        assert term == term.lower()


def test_document_terms_joins_with_spaces():
    assert document_terms("Hiking in the Alps") == " ".join(terms("Hiking in the Alps"))
    assert document_terms("the of") == ""


def test_query_terms_only_stopwords_is_empty():
    assert query_terms("what is the") == ()
    assert query_terms("") == ()
    assert query_terms("Where do I go hiking?") == ("go", terms("hiking")[0])


# ---------------------------------------------------------------------------------- lengths


def test_term_count_counts_space_separated_terms():
    assert term_count("") == 0
    assert term_count("tea") == 1
    assert term_count(document_terms("Green tea, green hills and tea cups")) == 4


# ---------------------------------------------------------------------------------- chunking


def _words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def test_chunk_short_text_is_one_stripped_chunk():
    assert chunk_text("  Hello, world!  ", 10, 2) == ["Hello, world!"]
    assert chunk_text(_words(10), 10, 3) == [_words(10)]  # exactly size tokens: still one


def test_chunk_long_text_exact_sizes_and_overlaps():
    chunks = chunk_text(_words(25), 10, 3)
    assert chunks == [
        "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9",
        "w7 w8 w9 w10 w11 w12 w13 w14 w15 w16",
        "w14 w15 w16 w17 w18 w19 w20 w21 w22 w23",
        "w21 w22 w23 w24",
    ]
    tokens = [c.split() for c in chunks]
    assert all(len(t) == 10 for t in tokens[:-1])
    for previous, current in itertools.pairwise(tokens):
        assert previous[-3:] == current[:3]


def test_chunk_one_more_than_size_makes_two_chunks():
    chunks = chunk_text(_words(11), 10, 2)
    assert chunks == [_words(10), "w8 w9 w10"]


def test_chunk_zero_overlap_partitions_tokens():
    chunks = chunk_text(_words(20), 5, 0)
    assert len(chunks) == 4
    assert " ".join(chunks) == _words(20)


def test_chunk_punctuation_counts_as_tokens():
    # "a , b ." is 4 tokens: two words and two punctuation marks
    assert chunk_text("a, b.", 4, 1) == ["a, b."]
    assert chunk_text("a, b.", 3, 1) == ["a, b", "b."]


def test_chunks_are_substrings_of_the_original():
    text = (
        "Première ligne: le café est chaud.\n\n  Second paragraph -- with  odd   spacing, "
        "tabs\tand punctuation!!! Numbers 3.14 and e-mail foo@example.com. " * 12
    )
    chunks = chunk_text(text, 16, 4)
    assert len(chunks) > 5
    position = 0
    for chunk in chunks:
        assert chunk in text
        assert chunk == chunk.strip()
        found = text.find(chunk, position)
        assert found >= 0  # chunks appear in order
        position = found + 1
    # together the chunks cover the text from first to last token
    assert text.strip().startswith(chunks[0])
    assert text.strip().endswith(chunks[-1])


@pytest.mark.parametrize(("size", "overlap"), [(10, 10), (10, 11), (1, 1)])
def test_chunk_overlap_not_smaller_than_size_raises(size, overlap):
    with pytest.raises(ValueError, match="overlap"):
        chunk_text(_words(50), size, overlap)


def test_long_words_are_cut_to_max_term_length():
    """PostgreSQL drops tsvector words over 2,047 bytes; terms are cut in shared code instead,
    so a long word is one term of its first MAX_TERM_LENGTH characters on every backend."""
    word = "λ" * 1100  # 2,200 bytes of UTF-8
    assert terms(f"key {word} end") == ["key", "λ" * MAX_TERM_LENGTH, "end"]
    assert query_terms(word + "x") == ("λ" * MAX_TERM_LENGTH,)
    assert len(("λ" * MAX_TERM_LENGTH).encode()) < 2047
    assert terms("b" * MAX_TERM_LENGTH) == ["b" * MAX_TERM_LENGTH]


def _pieces(text: str, per_word: int) -> list[tuple[int, int]]:
    """A stand-in model tokenizer: every word in ``per_word`` pieces (punctuation: one)."""
    spans: list[tuple[int, int]] = []
    for match in re.finditer(r"\w+|[^\w\s]", text):
        start, end = match.span()
        n = per_word if match.group()[0].isalnum() else 1
        cuts = [start + (end - start) * i // n for i in range(n + 1)]
        spans += [(a, b) for a, b in itertools.pairwise(cuts) if b > a]
    return spans


def test_chunks_by_model_tokens_fit_the_model_and_break_between_words():
    """With a model's tokens (pieces), every chunk holds at most ``size`` of them, chunks start
    and end on whole words, and consecutive chunks share up to ``overlap`` pieces."""
    text = " ".join(f"word{i:03d}" for i in range(300)) + "."
    pieces = _pieces(text, 3)
    chunks = chunk_text(text, 30, 6, pieces)
    words = set(text.replace(".", " .").split())
    assert len(chunks) > 20
    for chunk in chunks:
        assert len(_pieces(chunk, 3)) <= 30
        assert set(chunk.replace(".", " .").split()) <= words  # whole words only
    for before, after in itertools.pairwise(chunks):
        shared = before.split()[-2:]
        assert after.split()[:2] == shared  # 6 pieces = 2 words of 3
    assert chunks[0].startswith("word000") and chunks[-1].endswith("word299.")
    # without pieces: words and punctuation marks are the tokens, as before
    assert chunk_text(text, 30, 6) == chunk_text(text, 30, 6, _pieces(text, 1))


def test_a_word_longer_than_a_chunk_is_cut_between_its_pieces():
    text = "short " + "x" * 100 + " tail"
    pieces = [(0, 5), *((6 + i * 10, 16 + i * 10) for i in range(10)), (107, 111)]
    # "short" and 3 of the word's 10 pieces; then 4 pieces at a time, one shared; the tail
    assert chunk_text(text, 4, 1, pieces) == [
        "short " + "x" * 30,
        "x" * 40,
        "x" * 40,
        "x" * 20 + " tail",
    ]
