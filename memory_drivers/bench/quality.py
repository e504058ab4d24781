"""``memory-drivers bench quality``: does recall bring back the memory that answers the question?

It reads conversations in LoCoMo's JSON format (Maharana et al., "Evaluating Very Long-Term
Conversational Memory of LLM Agents", ACL 2024; the data is CC BY-NC 4.0 and is never shipped
with this package), stores them as an agent would, and asks every question that has evidence:

- every turn is one memory: ``"Speaker: text"``, plus ``" [shares image: caption]"`` when the
  turn shares an image; one user per conversation (its ``sample_id``), ``conversation_id`` per
  session, ``created_at`` the session's date and time plus one second per turn (so the turns
  keep their order);
- each question is a ``recall(top_k=10)`` for that user, with ``now`` the time of the last
  session; a question's *evidence recall@k* is the share of its evidence turns among the first
  ``k`` hits, averaged over the questions (overall and per LoCoMo category 1-5).

Every driver and search mode runs over the same vectors (each text is embedded once), beside
two baselines over the same memories: plain BM25 (``bm25s``: Lucene's variant, k1 = 1.5,
b = 0.75, English stop words, no stemming) and plain cosine similarity with the same model.
Latency is per recall with the query's vector already known (the model's time is the same for
every target and is left out).
"""

from __future__ import annotations

import json
import re
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..base import BaseMemoryDriver
from ..config import Settings, build_settings
from ..embeddings import Embedder, check_vectors, get_embedder

__all__ = ["QualityConfig", "load_locomo", "run_quality"]

MODES = ("hybrid", "vector", "keyword")
DRIVERS = ("sqlite", "pgvector", "chroma")
CATEGORIES = {
    1: "multi-hop",
    2: "temporal",
    3: "open-domain",
    4: "single-hop",
    5: "adversarial",
}
_NAMESPACE = uuid.UUID("6f1c2a52-4d0e-4d8a-9f57-0c6a5f3b9e11")
_DATE = "%I:%M %p on %d %B, %Y"


@dataclass(frozen=True)
class Turn:
    """One chat turn, as the memory it becomes."""

    memory_id: str
    user_id: str
    conversation_id: str
    content: str
    created_at: datetime


@dataclass(frozen=True)
class Question:
    """A question with the memory ids of its evidence turns."""

    user_id: str
    text: str
    category: int
    evidence: tuple[str, ...]
    now: datetime


@dataclass
class Dataset:
    turns: list[Turn]
    questions: list[Question]
    #: evidence references that name no turn (LoCoMo has a few typos)
    unresolved: int = 0


def _parse_date(text: str) -> datetime:
    return datetime.strptime(" ".join(text.split()), _DATE).replace(tzinfo=timezone.utc)


def memory_id(sample: str, dia_id: str) -> str:
    """The id of a turn's memory: the same in every store, so evidence maps to ids."""
    return str(uuid.uuid5(_NAMESPACE, f"{sample}/{dia_id}"))


def load_locomo(path: Path, *, limit: int | None = None) -> Dataset:
    """Read LoCoMo-format JSON (a list of samples with ``conversation`` and ``qa``)."""
    try:
        samples = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path} as LoCoMo JSON: {exc}") from None
    if not isinstance(samples, list):
        raise ValueError(f"{path}: expected a list of conversations (LoCoMo's format)")
    turns: list[Turn] = []
    questions: list[Question] = []
    unresolved = 0
    for index, sample in enumerate(samples[:limit]):
        try:
            conversation = sample["conversation"]
            name = str(sample.get("sample_id") or f"conversation-{index + 1}")
        except (TypeError, KeyError):
            raise ValueError(f"{path}: item {index} has no 'conversation'") from None
        ids: dict[str, str] = {}
        last = None
        session = 1
        while f"session_{session}" in conversation:
            started = _parse_date(conversation[f"session_{session}_date_time"])
            for n, turn in enumerate(conversation[f"session_{session}"]):
                text = f"{turn['speaker']}: {turn['text']}"
                if turn.get("blip_caption"):
                    text += f" [shares image: {turn['blip_caption']}]"
                mid = memory_id(name, turn["dia_id"])
                ids[turn["dia_id"]] = mid
                last = started + timedelta(seconds=n)
                turns.append(Turn(mid, name, f"{name}/session_{session}", text, last))
            session += 1
        if last is None:
            continue
        for qa in sample.get("qa", []):
            evidence = []
            for reference in qa.get("evidence") or []:
                for part in re.split(r"[;,\s]+", str(reference)):
                    if not part:
                        continue
                    if part in ids:
                        evidence.append(ids[part])
                    else:
                        unresolved += 1
            if evidence:
                questions.append(
                    Question(
                        name,
                        qa["question"],
                        int(qa.get("category", 0)),
                        tuple(dict.fromkeys(evidence)),
                        last,
                    )
                )
    return Dataset(turns, questions, unresolved)


class CachingEmbedder:
    """Embeds each distinct text once, for every target of a run."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.dimension = inner.dimension
        self._documents: dict[str, np.ndarray] = {}
        self._queries: dict[str, np.ndarray] = {}

    def warm(self, documents: Sequence[str], queries: Sequence[str], batch: int = 256) -> None:
        todo = [t for t in dict.fromkeys(documents) if t not in self._documents]
        for start in range(0, len(todo), batch):
            part = todo[start : start + batch]
            vectors = check_vectors(self.inner.embed_documents(part), len(part), self.inner)
            self._documents.update(zip(part, vectors, strict=True))
        for text in dict.fromkeys(queries):
            if text not in self._queries:
                self._queries[text] = check_vectors(self.inner.embed_query(text), 1, self.inner)[0]

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in texts if t not in self._documents]
        if missing:
            self.warm(missing, [])
        return np.stack([self._documents[t] for t in texts])

    def embed_query(self, text: str) -> np.ndarray:
        if text not in self._queries:
            self.warm([], [text])
        return self._queries[text]


@dataclass
class QualityConfig:
    dataset: Path
    drivers: list[str] = field(default_factory=lambda: list(DRIVERS))
    modes: list[str] = field(default_factory=lambda: list(MODES))
    limit: int | None = None
    pg_url: str | None = None
    baselines: bool = True
    progress: bool = False
    settings: Settings | None = None
    #: ``EMBEDDING_BACKEND`` values to compare (e.g. onnx and onnx-int8); none: as configured.
    backends: list[str] = field(default_factory=list)


class _Scores:
    """Evidence recall@5 and @10, overall and per category, and latencies."""

    def __init__(self) -> None:
        self.at5: dict[Any, list[float]] = defaultdict(list)
        self.at10: dict[Any, list[float]] = defaultdict(list)
        self.seconds: list[float] = []

    def add(self, question: Question, ranked: Sequence[str], seconds: float | None) -> None:
        wanted = set(question.evidence)
        for key in ("all", question.category):
            self.at5[key].append(len(wanted & set(ranked[:5])) / len(wanted))
            self.at10[key].append(len(wanted & set(ranked[:10])) / len(wanted))
        if seconds is not None:
            self.seconds.append(seconds)

    def result(self) -> dict[str, Any]:
        def pct(values: list[float]) -> float:
            return round(100 * statistics.fmean(values), 1) if values else float("nan")

        out: dict[str, Any] = {
            "recall_at_5": pct(self.at5["all"]),
            "recall_at_10": pct(self.at10["all"]),
            "questions": len(self.at5["all"]),
            "categories": {
                str(c): {"recall_at_5": pct(self.at5[c]), "recall_at_10": pct(self.at10[c])}
                for c in sorted(k for k in self.at5 if k != "all")
            },
        }
        if self.seconds:
            ordered = sorted(self.seconds)
            out["latency_ms_p50"] = round(1000 * ordered[len(ordered) // 2], 3)
            out["latency_ms_mean"] = round(1000 * statistics.fmean(ordered), 3)
        return out


@contextmanager
def _open_driver(
    name: str,
    embedder: Embedder,
    workdir: Path,
    pg_url: str | None,
    stack: ExitStack,
    base: Settings,
) -> Iterator[BaseMemoryDriver]:
    from ..manager import MemoryDriverManager

    values: dict[str, Any] = {**base.model_dump(), "memory_driver": name}
    if name == "sqlite":
        values["memory_db_url"] = f"sqlite:///{workdir / 'quality.db'}"
    elif name == "chroma":
        values["chroma_path"] = workdir / "chroma"
    elif name == "pgvector":
        from ..sql.throwaway_server import PostgresForTests, start_postgres

        server = PostgresForTests(pg_url) if pg_url else start_postgres()
        database, url = server.create_database()
        stack.callback(server.drop_database, database)
        values["database_url"] = url
        values["memory_auto_migrate"] = True
    driver = MemoryDriverManager.create(name, build_settings(**values), embedder=embedder)
    try:
        yield driver
    finally:
        driver.close()


def _store(driver: BaseMemoryDriver, turns: Sequence[Turn], batch: int = 500) -> None:
    for start in range(0, len(turns), batch):
        driver.store_many(
            {
                "id": t.memory_id,
                "user_id": t.user_id,
                "conversation_id": t.conversation_id,
                "content": t.content,
                "created_at": t.created_at,
                "memory_type": "episodic",
            }
            for t in turns[start : start + batch]
        )


def _baselines(data: Dataset, embedder: CachingEmbedder) -> dict[str, Any]:
    import bm25s

    by_user: dict[str, list[Turn]] = defaultdict(list)
    for turn in data.turns:
        by_user[turn.user_id].append(turn)
    bm25 = _Scores()
    cosine = _Scores()
    for user, turns in by_user.items():
        texts = [t.content for t in turns]
        retriever = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
        retriever.index(
            bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False
        )
        vectors = embedder.embed_documents(texts)
        for question in (q for q in data.questions if q.user_id == user):
            tokens = bm25s.tokenize([question.text], stopwords="en", show_progress=False)
            k = min(10, len(texts))
            if tokens.vocab:
                found, scores = retriever.retrieve(tokens, k=k, show_progress=False)
                ranked = [
                    turns[int(i)].memory_id
                    for i, s in zip(found[0], scores[0], strict=True)
                    if s > 0
                ]
            else:
                ranked = []
            bm25.add(question, ranked, None)
            similarity = vectors @ embedder.embed_query(question.text)
            order = np.argsort(-similarity, kind="stable")[:10]
            cosine.add(question, [turns[int(i)].memory_id for i in order], None)
    return {"bm25": bm25.result(), "cosine": cosine.result()}


def _progress(items: Sequence[Question], label: str, show: bool) -> Any:
    if not show:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=label, unit="question", leave=False)


def run_quality(config: QualityConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every embedder, driver and mode over the dataset; the results as a JSON-able dict."""
    data = load_locomo(config.dataset, limit=config.limit)
    settings = config.settings or build_settings()
    variants = [
        settings.model_copy(update={"embedding_backend": backend}) for backend in config.backends
    ] or [settings]
    results: dict[str, Any] = {
        "dataset": str(config.dataset),
        "conversations": len({t.user_id for t in data.turns}),
        "turns": len(data.turns),
        "questions": len(data.questions),
        "unresolved_evidence": data.unresolved,
        "runs": [],
    }
    for number, variant in enumerate(variants):
        embedder = CachingEmbedder(get_embedder(variant))
        started = time.perf_counter()
        embedder.warm([t.content for t in data.turns], [q.text for q in data.questions])
        log(
            f"{embedder.name}: embedded {len(data.turns)} turns and {len(data.questions)} "
            f"questions in {time.perf_counter() - started:.1f} s"
        )
        results.setdefault("embedder", embedder.name)
        results.setdefault("embedders", []).append(embedder.name)
        if config.baselines and number == 0:
            results["baselines"] = _baselines(data, embedder)
        for name in config.drivers:
            results["runs"] += _run_driver(name, embedder, data, config, variant, log)
    return results


def _run_driver(
    name: str,
    embedder: CachingEmbedder,
    data: Dataset,
    config: QualityConfig,
    settings: Settings,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """One driver's runs: the dataset stored in a fresh store, then every mode's questions."""
    runs = []
    with tempfile.TemporaryDirectory(prefix=f"md-quality-{name}-") as tmp, ExitStack() as stack:
        opened = _open_driver(name, embedder, Path(tmp), config.pg_url, stack, settings)
        with opened as driver:
            started = time.perf_counter()
            _store(driver, data.turns)
            seconds = time.perf_counter() - started
            log(f"{name}: stored {len(data.turns)} memories in {seconds:.1f} s")
            for mode in config.modes:
                scores = _Scores()
                for question in _progress(data.questions, f"{name} {mode}", config.progress):
                    began = time.perf_counter()
                    hits = driver.recall(
                        user_id=question.user_id,
                        query=question.text,
                        top_k=10,
                        search=mode,  # type: ignore[arg-type]
                        now=question.now,
                    )
                    seconds = time.perf_counter() - began
                    scores.add(question, [h.memory.id for h in hits], seconds)
                result = scores.result()
                log(f"{name} {mode}: R@5 {result['recall_at_5']} R@10 {result['recall_at_10']}")
                runs.append({"driver": name, "mode": mode, "embedder": embedder.name, **result})
    return runs


MARK_START = "<!-- quality: written by memory-drivers bench quality -->"
MARK_END = "<!-- /quality -->"


def quality_section(results: dict[str, Any]) -> str:
    """The Markdown section for docs/benchmarks.md: the table, what it measured, attribution."""
    names = ", ".join(f"{c} {n}" for c, n in CATEGORIES.items())
    return "\n".join(
        [
            MARK_START,
            "## Retrieval quality",
            "",
            f"Evidence recall on `{Path(results['dataset']).name}`: {results['conversations']} "
            f"conversations, {results['turns']} turns stored as memories, {results['questions']} "
            "questions with evidence, asked with `recall(top_k=10)` (`memory-drivers bench "
            "quality`; see `memory_drivers/bench/quality.py` for how turns become memories). "
            "R@k: the share of a question's evidence turns among the first k hits, averaged; "
            f"categories: {names}. p50: recall latency with the query's vector known, on this "
            f"machine; embedder: {', '.join(results.get('embedders') or [results['embedder']])}.",
            "",
            quality_table(results),
            "",
            "Baselines, over the same memories: plain BM25 (`bm25s`, Lucene's variant, k1 = 1.5, "
            "b = 0.75, English stop words, no stemming) and plain cosine similarity. The data is "
            'LoCoMo (Maharana et al., "Evaluating Very Long-Term Conversational Memory of LLM '
            'Agents", ACL 2024, CC BY-NC 4.0), read from its file at run time; it is not part of '
            "this project.",
            MARK_END,
        ]
    )


def write_section(path: Path, section: str, start: str = MARK_START, end: str = MARK_END) -> None:
    """Put ``section`` into ``path`` in place of the previous one between the markers ``start``
    and ``end`` (or at the end of the file)."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if start in text and end in text:
        before = text[: text.index(start)]
        after = text[text.index(end) + len(end) :]
        text = before + section + after
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def quality_table(results: dict[str, Any]) -> str:
    """The results as Markdown: one row per target, evidence recall overall and per category."""
    cats = sorted({c for run in results["runs"] for c in run["categories"]}, key=int)
    head = ["Target", "R@5", "R@10", *(f"R@5 c{c}" for c in cats), "p50 ms"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(label: str, run: dict[str, Any]) -> str:
        cells = [label, f"{run['recall_at_5']:.1f}", f"{run['recall_at_10']:.1f}"]
        cells += [
            f"{run['categories'].get(c, {}).get('recall_at_5', float('nan')):.1f}" for c in cats
        ]
        latency = run.get("latency_ms_p50")
        cells.append(f"{latency:.2f}" if latency is not None else "")
        return "| " + " | ".join(cells) + " |"

    several = len({run.get("embedder") for run in results["runs"]}) > 1
    for run in results["runs"]:
        label = f"{run['driver']} {run['mode']}"
        lines.append(row(f"{label} ({run['embedder']})" if several else label, run))
    for name, run in results.get("baselines", {}).items():
        lines.append(row(f"baseline: {name}", run))
    return "\n".join(lines)
