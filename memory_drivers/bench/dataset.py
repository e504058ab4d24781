"""The benchmark's data: seeded synthetic memories, queries, and their real-model vectors.

Everything here is deterministic. Memory ``i`` depends only on the seed and ``i`` (it is drawn in
blocks of :data:`BLOCK` from generators seeded by ``(seed, block)``), so the dataset of 10,000
memories is the first 10,000 of the one of 100,000, and one vector cache serves every N.

Texts are short first-person notes ("My sister booked a flight to Lisbon near the station last
weekend, but it was too expensive; cost 37 euros.") built from a fixed vocabulary, so keyword
queries made from the same words have hits. Users, tags, times and importance are drawn from
separate generators, so changing the number of users does not change any text (nor its vector).

Vectors are the real default model's (all-MiniLM-L6-v2) embeddings of every text, computed once
and cached in ``.npy`` files (:class:`VectorCache`); the benchmark replays them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BLOCK",
    "GENERATOR_VERSION",
    "REUSE_NOISE",
    "TAGS",
    "Dataset",
    "Item",
    "Query",
    "VectorCache",
    "default_cache_dir",
    "make_items",
    "make_queries",
    "reused_vectors",
]

#: Bump whenever generated texts change, so stale cached vectors are never replayed.
GENERATOR_VERSION = 1
#: Items are drawn in blocks of this many, each block from its own seeded generator.
BLOCK = 1000
#: Every ``created_at`` falls in the year after this instant.
EPOCH = datetime(2025, 1, 1, tzinfo=timezone.utc)
YEAR_SECONDS = 365 * 24 * 3600

TAGS = ("work", "family", "health", "travel", "food", "hobby", "finance", "learning")
MEMORY_TYPES = ("episodic", "semantic", "preference", "fact")

SUBJECTS = (
    "I", "My sister", "My brother", "Mom", "Dad", "My manager", "The landlord",
    "Our neighbour", "My doctor", "The team", "My partner", "Grandma", "My friend Sam",
    "The client", "Our teacher", "My colleague Priya", "The coach", "My cousin Leo",
    "The accountant", "Aunt Maria", "My roommate", "The plumber", "Our daughter", "Our son",
)  # fmt: skip
VERBS = (
    "prefers", "booked", "cancelled", "recommended", "forgot", "bought", "asked about",
    "complained about", "finished", "scheduled", "paid for", "loved", "returned", "ordered",
    "planned", "discussed", "postponed", "reviewed", "signed up for", "mentioned", "fixed",
    "borrowed", "lost", "renewed",
)  # fmt: skip
OBJECTS = (
    "green tea", "the quarterly report", "a flight to Lisbon", "the dentist appointment",
    "a new laptop", "sourdough bread", "the gym membership", "tickets for the concert",
    "a Spanish course", "the car insurance", "a birthday cake", "the rent increase",
    "a hiking trip", "the tax return", "running shoes", "the project deadline",
    "a sushi dinner", "the piano lessons", "a train to Vienna", "the blood test",
    "a vegetarian cookbook", "the mortgage offer", "a yoga class", "the kitchen renovation",
    "a camping tent", "the school play", "an espresso machine", "the budget spreadsheet",
    "a weekend in Paris", "the allergy medication", "a chess tournament", "the electricity bill",
    "a guitar", "the performance review", "a museum visit", "the vaccination",
    "a pasta recipe", "the savings account", "a photography workshop", "the wedding invitation",
    "a bike repair", "the conference talk", "a ski holiday", "the eye exam",
    "a board game night", "the pension plan", "a pottery class", "the job interview",
    "a hotel in Rome", "the physiotherapy", "a coffee grinder", "the stock portfolio",
    "a book club", "the team offsite", "a passport renewal", "the flu shot",
    "a jazz festival", "the credit card", "a knitting project", "the client presentation",
    "a bakery order", "the insurance claim", "a road trip to Porto", "the sleep study",
    "a cooking class", "the holiday budget", "a marathon", "the code review",
    "a dinner party", "the parking permit", "a language exchange", "the annual checkup",
    "a garden plan", "the salary negotiation", "a cruise", "the meal prep",
    "a swimming course", "the phone contract", "a wine tasting", "the onboarding docs",
    "a camera lens", "the landlord's email", "a trip to Kyoto", "the vitamin supplements",
    "a podcast", "the expense report", "a climbing gym", "the school fees",
    "a smoothie recipe", "the team retrospective", "a bus pass", "the therapy session",
    "a vinyl record", "the house insurance", "a beach holiday", "the night shift",
    "a dance class", "the loan repayment", "a math tutor", "the product launch",
    "a herbal tea", "the birthday party", "a flight to Oslo", "the cholesterol results",
    "a sewing machine", "the quarterly taxes", "a violin", "the sprint planning",
    "a ramen place", "the gas bill", "a coding bootcamp", "the moving boxes",
    "a spa weekend", "the grocery list", "a science fair", "the dental cleaning",
)  # fmt: skip
PLACES = (
    "at the office", "at home", "in Berlin", "near the station", "at the cafe on Main Street",
    "at the gym", "in the garden", "at the airport", "downtown", "at the library",
    "at school", "at the clinic", "online", "at the market", "at the park",
    "in the car", "at the bank", "at grandma's house", "in Madrid", "at the hotel",
    "at the beach", "in the mountains", "at the restaurant", "at the mall", "in London",
    "at the bakery", "on the train", "at the pharmacy", "at the stadium", "in Amsterdam",
    "at the community center", "at the museum", "in the kitchen", "at the studio",
    "at the hospital", "at the harbour", "in the suburbs", "at the campsite", "in Prague",
    "at the co-working space",
)  # fmt: skip
TIMES = (
    "on Monday morning", "last weekend", "every Friday", "before the holidays", "after lunch",
    "yesterday evening", "in March", "twice this month", "during the summer", "last night",
    "on Sunday", "early in the morning", "in the autumn", "right after work", "in January",
    "over the winter", "on a rainy day", "at the end of the quarter", "on her birthday",
    "during the school break", "next Tuesday", "in the spring", "at midnight", "on payday",
    "after the meeting", "before dinner", "in December", "on the long weekend",
    "during the trip", "this week",
)  # fmt: skip
DETAILS = (
    "because it was cheaper", "and it went well", "but it was too expensive",
    "with two friends", "for the third time", "and wants to do it again", "without telling anyone",
    "as a surprise", "after a long discussion", "and regretted it", "on a tight budget",
    "to save time", "while feeling tired", "with the whole family", "despite the rain",
    "as planned", "at the last minute", "and took notes", "for a good cause", "half-heartedly",
    "with great excitement", "after reading reviews", "on a friend's advice", "out of habit",
    "to celebrate", "and shared photos", "with some hesitation", "for work reasons",
    "for health reasons", "just for fun", "with a discount", "and felt relieved",
    "and was disappointed", "to learn something new", "to keep a promise", "in a hurry",
    "with a colleague", "and paid in cash", "after waiting an hour", "for the kids",
)  # fmt: skip
UNITS = ("euros", "minutes", "kilometres", "people", "pages", "dollars")
QUESTIONS = (
    "What do I know about", "Remind me about", "What happened with", "Anything about",
    "Who mentioned", "When did we talk about", "What was the plan for", "Tell me about",
    "Any notes on", "What did we decide about",
)  # fmt: skip


@dataclass(frozen=True)
class Item:
    """One memory of the dataset (its vector is row ``index`` of the vectors)."""

    index: int
    id: str
    user_id: str
    content: str
    tags: tuple[str, ...]
    created_at: datetime
    importance: float
    memory_type: str

    @property
    def created_ts(self) -> int:
        """``created_at`` as whole seconds since 1970 (it has no fraction)."""
        return int(self.created_at.timestamp())

    def as_input(self) -> dict[str, Any]:
        """The item as ``store_many`` takes it."""
        return {
            "id": self.id,
            "user_id": self.user_id,
            "content": self.content,
            "tags": list(self.tags),
            "created_at": self.created_at,
            "importance": self.importance,
            "memory_type": self.memory_type,
        }

    def metadata(self) -> dict[str, Any]:
        """The item's fields as a LangChain store's metadata (what its filters can see)."""
        return {
            "user_id": self.user_id,
            "tags": list(self.tags),
            "created_ts": self.created_ts,
            "importance": self.importance,
            "memory_type": self.memory_type,
        }


@dataclass(frozen=True)
class Query:
    """One query of the workloads: whose memories, what to look for, and the filter's values."""

    index: int
    user_id: str
    text: str
    keyword: str
    tag: str
    since: datetime

    @property
    def since_ts(self) -> int:
        return int(self.since.timestamp())


def user_name(i: int) -> str:
    return f"user-{i:04d}"


def _text_rng(seed: int, stream: int, block: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, block])


# Each block draws its arrays for a whole BLOCK, whatever ``count`` is, so that the first items
# of a block do not depend on how many of them are asked for.


def _memory_texts(seed: int, block: int, count: int) -> list[str]:
    rng = _text_rng(seed, 0, block)
    s = rng.integers(len(SUBJECTS), size=BLOCK)
    v = rng.integers(len(VERBS), size=BLOCK)
    o = rng.integers(len(OBJECTS), size=BLOCK)
    p = rng.integers(len(PLACES), size=BLOCK)
    t = rng.integers(len(TIMES), size=BLOCK)
    d = rng.integers(len(DETAILS), size=BLOCK)
    u = rng.integers(len(UNITS), size=BLOCK)
    amount = rng.integers(2, 500, size=BLOCK)
    return [
        f"{SUBJECTS[s[j]]} {VERBS[v[j]]} {OBJECTS[o[j]]} {PLACES[p[j]]} {TIMES[t[j]]}, "
        f"{DETAILS[d[j]]}; about {amount[j]} {UNITS[u[j]]}."
        for j in range(count)
    ]


def make_items(n: int, *, seed: int, users: int) -> list[Item]:
    """The first ``n`` memories of the dataset, spread over ``users`` users."""
    if users < 1:
        raise ValueError("users must be at least 1")
    items: list[Item] = []
    for block in range(-(-n // BLOCK)):
        count = min(BLOCK, n - block * BLOCK)
        texts = _memory_texts(seed, block, count)
        rng = _text_rng(seed, 1, block)
        owner = rng.integers(users, size=BLOCK)
        seconds = rng.integers(YEAR_SECONDS, size=BLOCK)
        importance = np.round(rng.random(BLOCK), 2)
        mtype = rng.integers(len(MEMORY_TYPES), size=BLOCK)
        ntags = rng.integers(1, 4, size=BLOCK)
        # A random order of the tags per item (its first 1 to 3 are distinct), and the ids'
        # bytes, drawn for the whole block at once.
        tag_order = np.argsort(rng.random((BLOCK, len(TAGS))), axis=1)[:, :3]
        ids = _uuids(rng, BLOCK)
        for j in range(count):
            tags = tuple(TAGS[int(x)] for x in tag_order[j, : ntags[j]])
            items.append(
                Item(
                    index=block * BLOCK + j,
                    id=ids[j],
                    user_id=user_name(int(owner[j])),
                    content=texts[j],
                    tags=tags,
                    created_at=EPOCH + timedelta(seconds=int(seconds[j])),
                    importance=float(importance[j]),
                    memory_type=MEMORY_TYPES[int(mtype[j])],
                )
            )
    return items


def _uuids(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` random version-4 UUIDs as strings."""
    raw = np.frombuffer(rng.bytes(16 * count), dtype=np.uint8).reshape(count, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    out = []
    for row in raw:
        h = row.tobytes().hex()
        out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return out


def _query_texts(seed: int, block: int, count: int) -> list[str]:
    rng = _text_rng(seed, 2, block)
    q = rng.integers(len(QUESTIONS), size=BLOCK)
    o = rng.integers(len(OBJECTS), size=BLOCK)
    p = rng.integers(len(PLACES), size=BLOCK)
    return [f"{QUESTIONS[q[j]]} {OBJECTS[o[j]]} {PLACES[p[j]]}?" for j in range(count)]


def make_queries(q: int, *, seed: int, users: int) -> list[Query]:
    """``q`` queries, each for a random user: a question, keywords, a tag and a ``since``.

    ``since`` falls between months 3 and 9 of the year, so about half of a user's memories pass
    it; with the tag (a memory has 1 to 3 of 8), the filtered workload keeps about an eighth.
    """
    queries: list[Query] = []
    for block in range(-(-q // BLOCK)):
        count = min(BLOCK, q - block * BLOCK)
        texts = _query_texts(seed, block, count)
        rng = _text_rng(seed, 3, block)
        owner = rng.integers(users, size=BLOCK)
        o = rng.integers(len(OBJECTS), size=BLOCK)
        t = rng.integers(len(TIMES), size=BLOCK)
        tag = rng.integers(len(TAGS), size=BLOCK)
        since = rng.integers(YEAR_SECONDS // 4, 3 * YEAR_SECONDS // 4, size=BLOCK)
        for j in range(count):
            queries.append(
                Query(
                    index=block * BLOCK + j,
                    user_id=user_name(int(owner[j])),
                    text=texts[j],
                    keyword=f"{OBJECTS[o[j]]} {TIMES[t[j]]}",
                    tag=TAGS[int(tag[j])],
                    since=EPOCH + timedelta(seconds=int(since[j])),
                )
            )
    return queries


# ---------------------------------------------------------------------- vector cache
def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/memory-drivers/bench`` (default ``~/.cache/memory-drivers/bench``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "memory-drivers" / "bench"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in name)


def _text_hashes(texts: Sequence[str]) -> np.ndarray:
    return np.array(
        [
            int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little")
            for t in texts
        ],
        dtype=np.uint64,
    )


Embed = Callable[[list[str]], Any]


class VectorCache:
    """Unit vectors of texts made by one model, in ``<dir>/<namespace>-<model>-g<version>-s<seed>``
    (``.npy`` vectors, ``.hashes.npy`` one hash per text, ``.json`` what made them).

    Rows are kept in the order of the texts; asking for more texts than are cached embeds only
    the missing ones and appends them. A row whose text hash does not match (the generator
    changed without a version bump) is dropped, with everything after it.
    """

    def __init__(self, directory: Path, model: str, seed: int, namespace: str) -> None:
        self.directory = Path(directory)
        stem = f"{namespace}-{_slug(model)}-g{GENERATOR_VERSION}-s{seed}"
        self.vectors_path = self.directory / f"{stem}.npy"
        self.hashes_path = self.directory / f"{stem}.hashes.npy"
        self.info_path = self.directory / f"{stem}.json"
        self.model = model

    def cached_rows(self, texts: Sequence[str]) -> int:
        """How many of ``texts`` (from the first) have a cached vector."""
        if not (self.vectors_path.exists() and self.hashes_path.exists()):
            return 0
        stored = np.load(self.hashes_path)
        n = min(len(stored), len(texts))
        mismatch = np.flatnonzero(stored[:n] != _text_hashes(texts[:n]))
        return int(mismatch[0]) if mismatch.size else n

    def load(self, texts: Sequence[str]) -> np.ndarray:
        """The cached vectors of ``texts`` (memory-mapped, read-only); raises if any is missing."""
        if self.cached_rows(texts) < len(texts):
            raise LookupError(
                f"{self.vectors_path} does not hold vectors for these {len(texts)} texts; "
                "run the benchmark (it computes them) first"
            )
        vectors = np.load(self.vectors_path, mmap_mode="r")
        return vectors[: len(texts)]

    def ensure(
        self,
        texts: Sequence[str],
        embed: Embed,
        *,
        chunk: int = 2048,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Embed and cache what is missing of ``texts``; returns how many were embedded."""
        have = self.cached_rows(texts)
        if have >= len(texts):
            return 0
        self.directory.mkdir(parents=True, exist_ok=True)
        old = np.load(self.vectors_path)[:have] if have else None
        parts = [] if old is None else [old]
        for start in range(have, len(texts), chunk):
            batch = list(texts[start : start + chunk])
            vectors = np.asarray(embed(batch), dtype=np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            parts.append(vectors)
            if progress is not None:
                progress(len(batch))
        vectors = np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
        self._save(vectors, _text_hashes(texts))
        return len(texts) - have

    def _save(self, vectors: np.ndarray, hashes: np.ndarray) -> None:
        for path, array in ((self.vectors_path, vectors), (self.hashes_path, hashes)):
            partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(partial, "wb") as handle:
                np.save(handle, array)
            os.replace(partial, path)
        info = {
            "model": self.model,
            "generator_version": GENERATOR_VERSION,
            "rows": int(vectors.shape[0]),
            "dimension": int(vectors.shape[1]),
        }
        self.info_path.write_text(json.dumps(info, indent=2) + "\n")


#: The noise added to a reused vector, per dimension: at 384 dimensions the copy keeps a cosine
#: of about 0.9 with the real vector it was made from.
REUSE_NOISE = 0.025


def reused_vectors(real: np.ndarray, texts: Sequence[str], seed: int) -> np.ndarray:
    """Vectors for ``texts`` that were not embedded, when a run is told to embed only the first
    M memories (``--real-vectors``, to make N = 1M affordable): each is a real vector (of the
    memory chosen by the text's hash among the first M) plus Gaussian noise, unit length. The
    same text always gets the same vector. Their meaning is lost, their distribution is real:
    what exact search's speed depends on (it scores every candidate whatever it holds)."""
    hashes = _text_hashes(texts)
    unique, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # noise drawn in order of first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    rng = np.random.default_rng([seed, 0x5EED])
    noise = rng.standard_normal((unique.size, real.shape[1]), dtype=np.float32) * REUSE_NOISE
    base = np.asarray(real[(unique % np.uint64(real.shape[0])).astype(np.int64)], np.float32)
    made = base + noise[rank]
    made /= np.linalg.norm(made, axis=1, keepdims=True)
    return np.ascontiguousarray(made[inverse.reshape(-1)], dtype=np.float32)


# ---------------------------------------------------------------------- the dataset
@dataclass
class Dataset:
    """N memories and Q queries with their vectors, and exact search over them."""

    items: list[Item]
    vectors: np.ndarray
    queries: list[Query]
    query_vectors: np.ndarray

    @classmethod
    def load(
        cls,
        cache_dir: Path,
        model: str,
        *,
        n: int,
        q: int,
        seed: int,
        users: int,
        real_vectors: int | None = None,
    ) -> Dataset:
        """The dataset with vectors from the cache (see :func:`prepare_vectors`); with
        ``real_vectors`` = M < n, memories past the first M get :func:`reused_vectors`."""
        items = make_items(n, seed=seed, users=users)
        queries = make_queries(q, seed=seed, users=users)
        texts = [i.content for i in items]
        real = n if real_vectors is None else max(1, min(n, real_vectors))
        vectors = VectorCache(cache_dir, model, seed, "memories").load(texts[:real])
        if real < n:
            vectors = np.concatenate([vectors, reused_vectors(vectors, texts[real:], seed)])
        query_vectors = VectorCache(cache_dir, model, seed, "queries").load(
            [x.text for x in queries]
        )
        return cls(items, vectors, queries, query_vectors)

    @cached_property
    def user_rows(self) -> dict[str, np.ndarray]:
        rows: dict[str, list[int]] = {}
        for item in self.items:
            rows.setdefault(item.user_id, []).append(item.index)
        return {user: np.array(r, dtype=np.int64) for user, r in rows.items()}

    @cached_property
    def created_ts(self) -> np.ndarray:
        return np.array([i.created_ts for i in self.items], dtype=np.int64)

    def exact_top_k(self, query: Query, k: int = 10, *, filtered: bool = False) -> list[str]:
        """The ids of the ``k`` memories of the query's user closest to its vector (cosine),
        among those with its tag created at or after its ``since`` when ``filtered``."""
        rows = self.user_rows.get(query.user_id, np.zeros(0, dtype=np.int64))
        if filtered and rows.size:
            keep = [
                r
                for r in rows
                if query.tag in self.items[r].tags and self.items[r].created_ts >= query.since_ts
            ]
            rows = np.array(keep, dtype=np.int64)
        if rows.size == 0:
            return []
        scores = np.asarray(self.vectors[rows], dtype=np.float32) @ self.query_vectors[query.index]
        best = np.argsort(-scores, kind="stable")[:k]
        return [self.items[int(rows[b])].id for b in best]

    def texts_to_rows(self) -> dict[str, np.ndarray]:
        """Every memory and query text to its vector (what the replay embedder looks up)."""
        table: dict[str, np.ndarray] = {}
        for item in self.items:
            table[item.content] = self.vectors[item.index]
        for query in self.queries:
            table[query.text] = self.query_vectors[query.index]
        return table
