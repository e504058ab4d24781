"""The ranking rules on their own: BM25, the neighbour share, fusion, context, time, rerankers.

The conformance suite checks that every driver gives these scores; here each rule is checked
against values worked out by hand, so that a formula cannot drift from its documentation.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest

from memory_drivers.ranking import KeywordEvidence, RankingRules, rank_hybrid, rank_keyword
from memory_drivers.ranking.context import ContextRow, Stretch, indexed_terms, plan, refresh
from memory_drivers.ranking.hybrid import fuse
from memory_drivers.ranking.keyword import bm25, with_neighbours
from memory_drivers.ranking.timeframe import closeness, find_periods, strip_periods
from memory_drivers.text import document_terms, query_terms

UTC = timezone.utc
NOW = datetime(2023, 7, 12, 15, 0, tzinfo=UTC)  # a Wednesday


def lucene_idf(size: int, n: int) -> float:
    return math.log(1 + (size - n + 0.5) / (n + 0.5))


def test_bm25_matches_the_formula_worked_by_hand() -> None:
    # Scope of 4 memories, lengths 2, 3, 1 and 6 (average 3); "tea" is in the first two,
    # "cup" in the second, "milk" in none.
    lengths = np.array([2, 3, 1, 6])
    postings = [np.array([0, 1]), np.array([1]), np.array([], dtype=np.int64)]
    scores, weight = bm25(lengths, postings, k1=1.2, b=0.75)

    def gain(length: float) -> float:
        return 2.2 / (1 + 1.2 * (1 - 0.75 + 0.75 * length / 3))

    expected = [
        lucene_idf(4, 2) * gain(2),
        lucene_idf(4, 2) * gain(3) + lucene_idf(4, 1) * gain(3),
        0.0,
        0.0,
    ]
    assert scores.tolist() == pytest.approx(expected, abs=1e-12)
    assert weight == pytest.approx(lucene_idf(4, 2) + lucene_idf(4, 1) + lucene_idf(4, 0))


def test_bm25_rare_terms_weigh_more_and_empty_inputs_give_nothing() -> None:
    lengths = np.full(10, 2)
    scores, _ = bm25(lengths, [np.array([0]), np.array([1, 2])], k1=0.3, b=0.75)
    assert scores[0] > scores[1] > 0
    assert scores[1] == pytest.approx(scores[2])
    assert bm25(np.zeros(0), [np.array([], dtype=np.int64)], k1=1.2, b=0.75)[0].size == 0
    assert bm25(lengths, [], k1=1.2, b=0.75)[0].tolist() == [0.0] * 10


def test_neighbour_share_takes_the_best_neighbour_both_ways() -> None:
    # m1 m2 m3 m4 form one conversation, m5 another.
    scores = np.array([0.0, 4.0, 0.0, 1.0, 3.0])
    continues = np.array([False, True, True, True, False])
    boosted = with_neighbours(scores, continues, share=0.5)
    assert boosted.tolist() == [2.0, 4.0, 2.0, 1.0, 3.0]
    assert with_neighbours(scores, continues, share=0.0).tolist() == scores.tolist()


def test_fuse_is_a_weighted_average_of_coverage_and_cosine() -> None:
    coverage = np.array([1.0, 0.0, 0.5])
    cosine = np.array([0.1, 0.9, -0.2])
    assert fuse(coverage, cosine, 0.25).tolist() == pytest.approx([0.775, 0.225, 0.325])
    assert fuse(coverage, cosine, 1.0).tolist() == pytest.approx(cosine.tolist())


def test_rank_hybrid_divides_keyword_scores_by_the_query_weight() -> None:
    # "tea" in a, "cake" in nobody: coverage of a is its BM25 over idf(tea) + idf(cake).
    evidence = KeywordEvidence(
        keys=["a", "b"],
        lengths=np.array([1, 1]),
        continues=np.zeros(2, dtype=bool),
        postings={"tea": ["a"]},
    )
    rules = RankingRules(neighbour_share=0.0, vector_weight=0.5)
    ranked = dict(
        rank_hybrid(["tea", "cake"], evidence, *in_memory({"b": 0.4, "a": 0.2}), rules, 2)
    )
    coverage = lucene_idf(2, 1) / (lucene_idf(2, 1) + lucene_idf(2, 0))
    assert ranked["a"] == pytest.approx(0.5 * coverage + 0.5 * 0.2)
    assert ranked["b"] == pytest.approx(0.5 * 0.4)


def in_memory(cosine: dict[str, float]) -> tuple[Any, Any]:
    """``nearest`` and ``cosines`` over a dict of cosine similarities."""
    ranked = sorted(cosine.items(), key=lambda kv: (-kv[1], kv[0]))

    def nearest(m: int | None) -> list[tuple[str, float]]:
        return ranked if m is None else ranked[:m]

    return nearest, lambda keys: {k: cosine[k] for k in keys}


def test_rank_hybrid_asks_for_more_neighbours_only_when_needed() -> None:
    """Exact with few neighbours: memories beyond the nearest ones cannot reach the cut unless
    a keyword score or a time gain could lift them, and then more are asked for."""
    rng = np.random.default_rng(3)
    cosine = {f"m{i:03d}": float(v) for i, v in enumerate(rng.uniform(-0.2, 0.8, 200))}
    keys = list(cosine)
    evidence = KeywordEvidence(
        keys=keys,
        lengths=np.full(200, 3),
        continues=np.zeros(200, dtype=bool),
        postings={"tea": [keys[150], keys[190]]},  # two weak neighbours with the word
    )
    rules = RankingRules(neighbour_share=0.0)
    nearest, cosines = in_memory(cosine)
    asked: list[int | None] = []

    def counting(m: int | None) -> list[tuple[str, float]]:
        asked.append(m)
        return nearest(m)

    got = rank_hybrid(["tea"], evidence, counting, cosines, rules, 5)
    everything = rank_hybrid(["tea"], evidence, nearest, cosines, rules, None)
    assert [k for k, _ in got] == [k for k, _ in everything][:5]
    assert asked == [5 + 16], "one nearest-neighbour search was enough"
    created = {k: NOW - timedelta(days=int(k[1:])) for k in keys}
    timed = RankingRules(neighbour_share=0.0, recency_half_life_days=1.0, time_weight=1.0)
    asked.clear()
    got = rank_hybrid(
        ["tea"],
        evidence,
        counting,
        cosines,
        timed,
        5,
        now=NOW,
        created_at=lambda ks: {k: created[k] for k in ks},
    )
    everything = rank_hybrid(
        ["tea"],
        evidence,
        nearest,
        cosines,
        timed,
        None,
        now=NOW,
        created_at=lambda ks: {k: created[k] for k in ks},
    )
    assert [k for k, _ in got] == [k for k, _ in everything][:5]
    assert len(asked) > 1, "a time gain can lift a far memory: more neighbours were read"


def test_rank_keyword_cuts_at_top_k_but_keeps_ties() -> None:
    evidence = KeywordEvidence(
        keys=["a", "b", "c"],
        lengths=np.array([1, 1, 1]),
        continues=np.zeros(3, dtype=bool),
        postings={"tea": ["a", "b"], "cake": ["c"]},
    )
    rules = RankingRules(neighbour_share=0.0)
    ranked = rank_keyword(["tea"], evidence, rules, top_k=1)
    assert [key for key, _ in ranked] == ["a", "b"]  # equal scores: both kept for the order
    assert ranked[0][1] == pytest.approx(ranked[1][1])
    assert rank_keyword(["milk"], evidence, rules, top_k=3) == []


def test_rank_hybrid_time_preference_is_soft_and_bounded() -> None:
    keys = ["old", "new"]
    created = {"old": NOW - timedelta(days=400), "new": NOW - timedelta(days=1)}
    rules = RankingRules(time_weight=1.0)
    periods = find_periods("yesterday", NOW)
    ranked = rank_hybrid(
        [],
        None,
        *in_memory(dict(zip(keys, [0.9, 0.1], strict=True))),
        rules,
        top_k=2,
        periods=periods,
        now=NOW,
        created_at=lambda ks: {k: created[k] for k in ks},
    )
    scores = dict(ranked)
    # Yesterday's memory gains the full weight, the old one almost nothing.
    assert scores["new"] == pytest.approx(0.5 * 0.1 + 1.0)
    assert scores["old"] == pytest.approx(0.5 * 0.9 + 0.5**399, abs=1e-9)
    assert [key for key, _ in ranked] == ["new", "old"]


def test_indexed_terms_follow_the_window() -> None:
    own = ["a", "b a", "", "d"]
    assert indexed_terms(own, 0) == ["a", "b a", "", "d"]
    assert indexed_terms(own, 1) == ["a", "b a", "b a", "d"]
    assert indexed_terms(own, 2) == ["a", "b a", "b a", "d b a"]


def test_refresh_reports_only_rows_that_change() -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    rows = [
        ContextRow(1, t0, "1", "green tea", "green tea"),
        ContextRow(2, t0 + timedelta(seconds=1), "2", "with milk", "milk"),
        ContextRow(3, t0 + timedelta(seconds=2), "3", "no sugar", "sugar milk"),
    ]
    # Window 1: row 2 must now read "milk green tea"; row 3 is right already.
    assert refresh(rows, 1, 1) == {2: "milk green tea"}
    assert refresh(rows, 2, 1) == {}


def test_query_terms_drop_question_words_not_their_relatives() -> None:
    assert query_terms("What kind of kindness did she ever show?") == ("kind", "show")
    assert query_terms("What did you do?") == ()
    assert query_terms("what tea", question_words=[]) == ("tea",)


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("yesterday", "2023-07-11", "2023-07-12"),
        ("last night", "2023-07-11", "2023-07-12"),
        ("today", "2023-07-12", "2023-07-13"),
        ("the day before yesterday", "2023-07-10", "2023-07-11"),
        ("three days ago", "2023-07-09", "2023-07-10"),
        ("two months ago", "2023-05-01", "2023-06-01"),
        ("2 years ago", "2021-01-01", "2022-01-01"),
        ("last week", "2023-07-03", "2023-07-10"),
        ("this week", "2023-07-10", "2023-07-17"),
        ("last month", "2023-06-01", "2023-07-01"),
        ("last year", "2022-01-01", "2023-01-01"),
        ("last weekend", "2023-07-08", "2023-07-10"),
        ("on Monday", "2023-07-10", "2023-07-11"),
        ("last Wednesday", "2023-07-05", "2023-07-06"),
        ("last summer", "2022-06-01", "2022-09-01"),
        ("this summer", "2023-06-01", "2023-09-01"),
        ("in the spring", "2023-03-01", "2023-06-01"),
        ("winter of 2022", "2022-12-01", "2023-03-01"),
        ("in May 2023", "2023-05-01", "2023-06-01"),
        ("in May", "2023-05-01", "2023-06-01"),
        ("in August", "2022-08-01", "2022-09-01"),
        ("last July", "2022-07-01", "2022-08-01"),
        ("in 2021", "2021-01-01", "2022-01-01"),
        ("on 8 May 2023", "2023-05-08", "2023-05-09"),
        ("May 8th, 2022", "2022-05-08", "2022-05-09"),
        ("Dec 25", "2022-12-25", "2022-12-26"),
        ("2023-05-08", "2023-05-08", "2023-05-09"),
    ],
)
def test_time_expressions(text: str, start: str, end: str) -> None:
    (period,) = find_periods(f"what happened {text}?", NOW)
    assert (period.start.date().isoformat(), period.end.date().isoformat()) == (start, end)
    assert period.start.tzinfo == UTC
    assert strip_periods(f"what happened {text}?", [period]) == "what happened  ?"


def test_words_that_only_look_like_dates_are_not_periods() -> None:
    assert find_periods("may I ask about the summer camp?", NOW) == []
    assert find_periods("on 31 February", NOW) == []


def test_closeness_halves_per_period_length() -> None:
    (day,) = find_periods("yesterday", NOW)
    assert closeness(day.start + timedelta(hours=5), [day]) == 1.0
    assert closeness(day.end + timedelta(days=1), [day]) == pytest.approx(0.5)
    assert closeness(day.start - timedelta(days=2), [day]) == pytest.approx(0.25)
    assert closeness(NOW, []) == 0.0


class _Conversation:
    """A conversation kept the way a driver keeps it: rows with their indexed terms, re-indexed
    only through :func:`plan` (what the drivers call inside their write transactions)."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.rows: dict[str, ContextRow[str]] = {}

    def _read(self, low: tuple[datetime, str], high: tuple[datetime, str]) -> Stretch[str]:
        ordered = sorted(self.rows.values(), key=lambda r: (r.created_at, r.id))
        place = [(r.created_at, r.id) for r in ordered]
        before = [r for r, p in zip(ordered, place, strict=True) if p < low][-self.window :]
        inside = [r for r, p in zip(ordered, place, strict=True) if low <= p <= high]
        after = [r for r, p in zip(ordered, place, strict=True) if p > high][: self.window]
        return Stretch(before, inside, after)

    def _apply(self, changes: dict[str, str]) -> None:
        for key, terms in changes.items():
            row = self.rows[key]
            self.rows[key] = ContextRow(key, row.created_at, row.id, row.content, terms)

    def insert(self, new: list[ContextRow[str]]) -> None:
        changes = plan([], new, self.window, self._read)
        for row in new:
            self.rows[row.key] = row
        self._apply(changes)

    def reword(self, key: str, content: str) -> None:
        row = self.rows[key]
        self.rows[key] = ContextRow(key, row.created_at, row.id, content, row.indexed)
        self._apply(plan([(row.created_at, row.id)], [], self.window, self._read))

    def delete(self, keys: list[str]) -> None:
        places = [(self.rows[k].created_at, self.rows[k].id) for k in keys]
        for key in keys:
            del self.rows[key]
        self._apply(plan(places, [], self.window, self._read))

    def check(self) -> None:
        ordered = sorted(self.rows.values(), key=lambda r: (r.created_at, r.id))
        wanted = indexed_terms([document_terms(r.content) for r in ordered], self.window)
        assert [r.indexed for r in ordered] == wanted


@pytest.mark.parametrize("window", [0, 1, 2, 3])
def test_plan_keeps_every_memory_indexed_right_through_random_writes(window: int) -> None:
    rng = random.Random(window)
    words = ["tea", "milk", "sugar", "cake", "walk", "dog", "rain", "book"]
    conversation = _Conversation(window)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    serial = 0
    for _ in range(60):
        action = rng.random()
        if action < 0.5 or len(conversation.rows) < 3:
            batch = []
            for _ in range(rng.randint(1, 4)):
                serial += 1
                when = t0 + timedelta(seconds=rng.randint(0, 40))  # collisions: order by id
                content = " ".join(rng.sample(words, 2))
                batch.append(ContextRow(f"m{serial:03d}", when, f"m{serial:03d}", content, ""))
            conversation.insert(batch)
        elif action < 0.75:
            key = rng.choice(sorted(conversation.rows))
            conversation.reword(key, " ".join(rng.sample(words, 3)))
        else:
            conversation.delete(rng.sample(sorted(conversation.rows), rng.randint(1, 2)))
        conversation.check()
