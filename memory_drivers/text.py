"""Text rules shared by every driver: keyword terms and knowledge chunking.

Keyword recall (``use_vector=False``) must give the same answer on every backend, so the terms
are made here, once, and backends only index and match them:

- a *term* is a word (letters and digits) with accents removed, case-folded and reduced to its
  English Snowball stem; stop words and single letters are dropped;
- a memory matches a keyword query when it contains at least one of the query's terms, and its
  score is the share of the query's distinct terms it contains (see :func:`keyword_score`).
"""

from __future__ import annotations

import functools
import re
import threading
import unicodedata
from collections.abc import Iterable

import snowballstemmer

__all__ = ["chunk_text", "document_terms", "keyword_score", "query_terms", "terms"]

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

_local = threading.local()


@functools.lru_cache(maxsize=1 << 16)
def _stem(word: str) -> str:
    stemmer = getattr(_local, "stemmer", None)
    if stemmer is None:
        stemmer = _local.stemmer = snowballstemmer.stemmer("english")
    return str(stemmer.stemWord(word))


def _fold(text: str) -> str:
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def terms(text: str) -> list[str]:
    """The distinct terms of ``text``, in order of first appearance."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(_fold(text)):
        if word in STOPWORDS or (len(word) == 1 and not word.isdigit()):
            continue
        seen[_stem(word)] = None
    return list(seen)


def document_terms(text: str) -> str:
    """The terms of a memory, space-separated, as backends index them."""
    return " ".join(terms(text))


def query_terms(text: str) -> tuple[str, ...]:
    """The distinct terms of a keyword query. Empty when the query has only stop words."""
    return tuple(terms(text))


def keyword_score(query: Iterable[str], document: Iterable[str]) -> float:
    """The share of the query's distinct terms that the document contains."""
    wanted = set(query)
    if not wanted:
        return 0.0
    return len(wanted & set(document)) / len(wanted)


def chunk_text(text: str, size: int, overlap: int) -> list[str]:
    """Split ``text`` into chunks of ``size`` tokens, each sharing ``overlap`` with the last.

    A token is a word or a punctuation mark; each chunk is the original text from its first
    token to its last, so nothing is rewritten. A text of at most ``size`` tokens is one chunk.
    """
    if overlap >= size:
        raise ValueError("overlap must be smaller than size")
    spans = [m.span() for m in _TOKEN.finditer(text)]
    if len(spans) <= size:
        return [text.strip()]
    chunks = []
    start = 0
    while True:
        end = min(start + size, len(spans))
        chunks.append(text[spans[start][0] : spans[end - 1][1]])
        if end == len(spans):
            return chunks
        start = end - overlap
