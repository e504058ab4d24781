"""The retrieval-quality benchmark (``memory-drivers bench quality``) on a tiny synthetic
conversation in LoCoMo's format: every driver and mode runs, the numbers are shares, the report
section is written and replaced. No figure is asserted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from memory_drivers.bench.quality import (
    MARK_END,
    MARK_START,
    load_locomo,
    memory_id,
)
from memory_drivers.cli import main

CONVERSATION = [
    {
        "sample_id": "tiny-1",
        "conversation": {
            "speaker_a": "Ana",
            "speaker_b": "Bo",
            "session_1_date_time": "1:56 pm on 8 May, 2023",
            "session_1": [
                {"speaker": "Ana", "dia_id": "D1:1", "text": "I adopted a puppy last week!"},
                {"speaker": "Bo", "dia_id": "D1:2", "text": "What is its name?"},
                {
                    "speaker": "Ana",
                    "dia_id": "D1:3",
                    "text": "Biscuit. Look at her!",
                    "blip_caption": "a photo of a small dog on a sofa",
                },
            ],
            "session_2_date_time": "10:37 am on 27 June, 2023",
            "session_2": [
                {"speaker": "Bo", "dia_id": "D2:1", "text": "I started violin lessons"},
                {"speaker": "Ana", "dia_id": "D2:2", "text": "How is your teacher?"},
                {"speaker": "Bo", "dia_id": "D2:3", "text": "Patient, luckily."},
            ],
        },
        "qa": [
            {"question": "What is the name of Ana's puppy?", "evidence": ["D1:3"], "category": 1},
            {"question": "When did Bo start violin?", "evidence": ["D2:1"], "category": 2},
            {"question": "Is Bo's teacher patient?", "evidence": ["D2:2; D2:3"], "category": 4},
            {"question": "Who has a cat?", "evidence": ["D9:9"], "category": 5},
            {"question": "No evidence here", "evidence": [], "category": 3},
        ],
    }
]


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(CONVERSATION))
    return path


def test_loading_follows_the_documented_rules(dataset: Path) -> None:
    data = load_locomo(dataset)
    assert [t.content for t in data.turns][2] == (
        "Ana: Biscuit. Look at her! [shares image: a photo of a small dog on a sofa]"
    )
    assert {t.conversation_id for t in data.turns} == {"tiny-1/session_1", "tiny-1/session_2"}
    times = [t.created_at for t in data.turns]
    assert times == sorted(times) and times[1] - times[0] == (times[2] - times[1])
    assert [q.evidence for q in data.questions] == [
        (memory_id("tiny-1", "D1:3"),),
        (memory_id("tiny-1", "D2:1"),),
        (memory_id("tiny-1", "D2:2"), memory_id("tiny-1", "D2:3")),
    ]
    assert data.unresolved == 1  # "D9:9" names no turn; questions without evidence are left out


def test_every_driver_and_mode_runs(
    dataset: Path,
    tmp_path: Path,
    postgres: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
    clean_env: Path,
) -> None:
    monkeypatch.setenv("EMBEDDING_PROVIDER", "hashing")
    monkeypatch.chdir(tmp_path)
    report = tmp_path / "benchmarks.md"
    report.write_text("# Benchmarks\n\nkept text\n")
    args = [
        "bench",
        "quality",
        "--dataset",
        str(dataset),
        "--drivers",
        "sqlite,pgvector,chroma",
        "--pg-url",
        postgres.admin_url,
        "--out",
        str(report),
        "--results",
        str(tmp_path / "quality.json"),
    ]
    assert main([*args, "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["questions"] == 3 and results["turns"] == 6
    runs = {(r["driver"], r["mode"]): r for r in results["runs"]}
    assert set(runs) == {
        (d, m) for d in ("sqlite", "pgvector", "chroma") for m in ("hybrid", "vector", "keyword")
    }
    for run in [*runs.values(), *results["baselines"].values()]:
        assert 0.0 <= run["recall_at_5"] <= run["recall_at_10"] <= 100.0
        assert run["questions"] == 3
        assert set(run["categories"]) == {"1", "2", "4"}
    assert all(run["latency_ms_p50"] > 0 for run in runs.values())
    for mode in ("hybrid", "vector", "keyword"):  # every driver gives the same answer
        assert len({runs[(d, mode)]["recall_at_10"] for d in ("sqlite", "pgvector", "chroma")}) == 1
    text = report.read_text()
    assert text.startswith("# Benchmarks\n\nkept text\n")
    assert text.count(MARK_START) == 1 and "| sqlite hybrid |" in text and "LoCoMo" in text
    assert main([*args, "--drivers", "sqlite", "--no-baselines"]) == 0
    again = report.read_text()
    assert again.count(MARK_START) == again.count(MARK_END) == 1, "the section is replaced"
    assert "| pgvector hybrid |" not in again and "kept text" in again


def test_bad_dataset_is_a_clear_error(tmp_path: Path, capsys: Any) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert main(["bench", "quality", "--dataset", str(broken), "--out", "-"]) != 0
    assert "cannot read" in capsys.readouterr().err


def test_embedding_backends_run_side_by_side(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, clean_env: Path
) -> None:
    """--embedding-backends runs the whole benchmark once per backend of the real model: the
    float ONNX model and its int8 variant, each its own vector space and row of the table."""
    monkeypatch.chdir(tmp_path)
    report = tmp_path / "benchmarks.md"
    args = ["bench", "quality", "--dataset", str(dataset), "--drivers", "sqlite"]
    args += ["--modes", "vector", "--no-baselines", "--out", str(report), "--json"]
    assert main([*args, "--embedding-backends", "onnx,onnx-int8"]) == 0
    results = json.loads(capsys.readouterr().out)
    model = "sentence-transformers/all-MiniLM-L6-v2"
    assert results["embedders"] == [model, f"{model}#onnx-int8"]
    assert [r["embedder"] for r in results["runs"]] == results["embedders"]
    text = report.read_text()
    assert f"| sqlite vector ({model}) |" in text
    assert f"| sqlite vector ({model}#onnx-int8) |" in text
    assert main([*args, "--embedding-backends", "onnx,int4"]) != 0
    assert "unknown embedding backend 'int4'" in capsys.readouterr().err
