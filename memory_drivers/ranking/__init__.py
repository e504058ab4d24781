"""Ranking rules shared by every driver: keyword scores (BM25), hybrid fusion, conversation
context, time preference and reranking. Drivers read statistics; the scores are made here."""

from __future__ import annotations

from .pipeline import TIE, KeywordEvidence, RankingRules, rank_hybrid, rank_keyword
from .rerank import CrossEncoderReranker, Reranker, get_reranker
from .timeframe import Period, find_periods

__all__ = [
    "TIE",
    "CrossEncoderReranker",
    "KeywordEvidence",
    "Period",
    "RankingRules",
    "Reranker",
    "find_periods",
    "get_reranker",
    "rank_hybrid",
    "rank_keyword",
]
