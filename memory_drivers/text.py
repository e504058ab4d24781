"""Text rules shared by every driver: keyword terms and knowledge chunking.

Keyword search must give the same answer on every backend, so the terms are made here, once,
and backends only index and match them:

- a *term* is a word (letters and digits) with accents removed, case-folded and reduced to its
  English Snowball stem, cut to its first :data:`MAX_TERM_LENGTH` characters (PostgreSQL's
  ``tsvector`` drops longer words, which SQLite and Chroma keep, so the cut is made here for
  all of them); :data:`STOPWORDS` and single letters are dropped;
- a query's terms also leave out :data:`QUESTION_WORDS` (``KEYWORD_QUERY_STOPWORDS`` replaces
  that list), words that only frame a question ("what kind of ...", "did she ever ...").

The scores are in :mod:`memory_drivers.ranking`.
"""

from __future__ import annotations

import functools
import re
import threading
import unicodedata
from collections.abc import Iterable, Sequence

import snowballstemmer

__all__ = [
    "MAX_TERM_LENGTH",
    "QUESTION_WORDS",
    "STOPWORDS",
    "chunk_text",
    "document_terms",
    "query_terms",
    "term_count",
    "terms",
]

_WORD = re.compile(r"[^\W_]+")
_TOKEN = re.compile(r"\w+|[^\w\s]")

# Common English function words: they match nearly every memory and say nothing about it.
STOPWORDS = frozenset(
    """
    a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers herself him himself his how i if in into is it its
    itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves
    """.split()
)

#: Words that frame a question without saying what it is about; dropped from queries only.
QUESTION_WORDS = frozenset(
    """
    what when where which who whom whose why how did do does done kind sort type ever likely
    might would could should
    """.split()
)

#: Longest term, in characters (at most 800 bytes of UTF-8, well under the 2,047 bytes a
#: PostgreSQL ``tsvector`` lexeme may have): a longer word's term is its first 200 characters.
MAX_TERM_LENGTH = 200

_local = threading.local()


@functools.lru_cache(maxsize=1 << 16)
def _stem(word: str) -> str:
    stemmer = getattr(_local, "stemmer", None)
    if stemmer is None:
        stemmer = _local.stemmer = snowballstemmer.stemmer("english")
    return str(stemmer.stemWord(word))[:MAX_TERM_LENGTH]


def _fold(text: str) -> str:
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


@functools.lru_cache(maxsize=1 << 16)
def _term(word: str) -> str | None:
    """The term of one word of folded text, or None for a word that has none (a stop word, a
    single letter). Cached: a store's vocabulary repeats, so most words are found here."""
    if word in STOPWORDS or (len(word) == 1 and not word.isdigit()):
        return None
    return _stem(word)


def _terms(text: str, skip: frozenset[str] | set[str]) -> list[str]:
    words = _WORD.findall(_fold(text))
    if skip:
        words = [word for word in words if word not in skip]
    # dict.fromkeys keeps each term once, in order of first appearance; None marks no term.
    seen = dict.fromkeys(map(_term, words))
    seen.pop(None, None)
    return list(seen)  # type: ignore[arg-type]  # None was removed


def terms(text: str) -> list[str]:
    """The distinct terms of ``text``, in order of first appearance."""
    return _terms(text, frozenset())


def document_terms(text: str) -> str:
    """The terms of a memory, space-separated, as backends index them."""
    return " ".join(terms(text))


def term_count(indexed: str) -> int:
    """How many terms a space-separated list of terms holds (a memory's length for BM25)."""
    return indexed.count(" ") + 1 if indexed else 0


def query_terms(text: str, question_words: Iterable[str] = QUESTION_WORDS) -> tuple[str, ...]:
    """The distinct terms of a keyword query: its terms, leaving out ``question_words``.

    Empty when the query has only stop words and question words.
    """
    skip = question_words if isinstance(question_words, frozenset) else frozenset(question_words)
    return tuple(_terms(text, skip))


def chunk_text(
    text: str,
    size: int,
    overlap: int,
    pieces: Sequence[tuple[int, int]] | None = None,
) -> list[str]:
    """Split ``text`` into chunks of at most ``size`` tokens, each sharing about ``overlap``
    tokens with the one before.

    Chunks break between words and punctuation marks (:data:`_TOKEN`), never inside a word
    unless the word alone is longer than ``size``; each chunk is the original text from its
    first word to its last, so nothing is rewritten. Tokens are words and punctuation marks,
    or, given ``pieces`` (an embedding model's tokens as character spans, see
    :class:`~memory_drivers.embeddings.TokenCounter`), the model's tokens: then every chunk
    fits what the model reads. A text of at most ``size`` tokens is one chunk.
    """
    if overlap >= size:
        raise ValueError("overlap must be smaller than size")
    units = [m.span() for m in _TOKEN.finditer(text)]
    weights = [1] * len(units)
    if pieces is not None:
        units, weights = _weigh(units, pieces, size)
    if sum(weights) <= size:
        return [text.strip()]
    chunks = []
    start = 0
    while True:
        end, total = start, 0
        while end < len(units) and total + weights[end] <= size:
            total += weights[end]
            end += 1
        chunks.append(text[units[start][0] : units[end - 1][1]])
        if end == len(units):
            return chunks
        back, shared = end, 0
        while back - 1 > start and shared + weights[back - 1] <= overlap:
            back -= 1
            shared += weights[back]
        start = back


def _weigh(
    units: list[tuple[int, int]], pieces: Sequence[tuple[int, int]], size: int
) -> tuple[list[tuple[int, int]], list[int]]:
    """The words (``units``) with how many of ``pieces`` each holds (a piece belongs to the
    word it starts in, or the word before); a word of more than ``size`` pieces becomes one
    unit per piece."""
    counts = [0] * len(units)
    where = 0
    for begin, _ in pieces:
        while where + 1 < len(units) and units[where + 1][0] <= begin:
            where += 1
        if units:
            counts[where] += 1
    spans: list[tuple[int, int]] = []
    weights: list[int] = []
    first = 0
    for unit, count in zip(units, counts, strict=True):
        if count <= size:
            spans.append(unit)
            weights.append(count)
        else:
            own = list(pieces[first : first + count])
            spans += [(max(a, unit[0]), min(b, unit[1])) for a, b in own]
            weights += [1] * len(own)
        first += count
    return spans, weights
