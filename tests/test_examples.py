"""The integration examples run, offline, with the default model (each in its own process,
as a user runs them). They print rather than assert; what they show is asserted here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, tmp_path: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_langchain_example(tmp_path: Path) -> None:
    out = run_example("langchain_vectorstore.py", tmp_path)
    assert "drink  Alice's favourite drink is oolong tea" in out.splitlines()[1]
    assert "retriever: ['Alice runs every Sunday morning']" in out


@pytest.mark.slow
def test_langgraph_example(tmp_path: Path) -> None:
    out = run_example("langgraph_store.py", tmp_path)
    snack = out.split("'Can you suggest a snack for me?'")[1]
    assert "I am allergic to peanuts" in snack.splitlines()[1]
    assert "namespaces: [('alice', 'memories')]" in out


@pytest.mark.slow
def test_mcp_example(tmp_path: Path) -> None:
    out = run_example("mcp_client.py", tmp_path)
    assert "recalled: " in out and "oolong tea" in out
    assert "ValidationError: importance must be from 0 to 1, got 2.0" in out
