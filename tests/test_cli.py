"""The ``memory-drivers`` command, run for real against temporary SQLite stores.

Most tests call :func:`memory_drivers.cli.main` in-process (fast); a few start the program as
``python -m memory_drivers`` and as the installed console script. Every store uses the hashing
embedder, so no model is loaded.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from memory_drivers.cli import main
from memory_drivers.config import Settings, get_settings
from memory_drivers.drivers.sqlite import SQLiteDriver
from memory_drivers.manager import MemoryDriverManager

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
SCRIPT = Path(sys.executable).parent / "memory-drivers"


@dataclass
class Result:
    """What one run of the command did."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


Run = Callable[..., Result]


@pytest.fixture
def store_dir(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty sqlite store in ``tmp_path`` (the working directory), hashing embedder."""
    monkeypatch.setenv("MEMORY_DB_URL", f"sqlite:///{clean_env}/m.db")
    monkeypatch.setenv("EMBEDDING_PROVIDER", "hashing")
    MemoryDriverManager.reset_cache()
    yield clean_env
    MemoryDriverManager.reset_cache()
    get_settings.cache_clear()


@pytest.fixture
def cli(
    store_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Run:
    """Run the command in-process; settings are re-read on every run, like a new process."""

    def run(*argv: str, stdin: str | None = None) -> Result:
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        get_settings.cache_clear()
        code = main(list(argv))
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return Result(code, out, err)

    return run


def process_env(store: Path, **extra: str) -> dict[str, str]:
    """The environment of a child process: no memory-drivers variables but ours."""
    fields = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in fields}
    env.update(MEMORY_DB_URL=f"sqlite:///{store}/m.db", EMBEDDING_PROVIDER="hashing", **extra)
    return env


def spawn(command: list[str], store: Path, stdin: str | None = None) -> Result:
    done = subprocess.run(
        command,
        input=stdin,
        capture_output=True,
        text=True,
        cwd=store,
        env=process_env(store),
        timeout=120,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def store(cli: Run, *args: str) -> str:
    """Store a memory and return its id (the human output is the id alone)."""
    result = cli("store", *args)
    assert result.code == 0, result.err
    memory_id = result.out.strip()
    assert UUID.match(memory_id), result.out
    return memory_id


@pytest.fixture
def three(cli: Run) -> dict[str, str]:
    """Alice's three memories, stored in this order (so ``jazz`` is the newest)."""
    return {
        "tea": store(
            cli,
            "--user",
            "alice",
            "--tag",
            "food",
            "--tag",
            "drink",
            "--type",
            "preference",
            "--importance",
            "0.8",
            "--conversation",
            "c1",
            "--metadata",
            '{"topic": "food"}',
            "Alice drinks green tea every morning",
        ),
        "hike": store(
            cli,
            "--user",
            "alice",
            "--tag",
            "sport",
            "--importance",
            "0.3",
            "Alice went hiking in the Alps last summer",
        ),
        "jazz": store(
            cli,
            "--user",
            "alice",
            "--tag",
            "music",
            "--tag",
            "food",
            "--type",
            "fact",
            "Alice plays jazz piano",
        ),
    }


# ---------------------------------------------------------------------- help and usage
def test_help_lists_every_command(cli: Run) -> None:
    result = cli("--help")
    assert result.code == 0
    for command in (
        "store",
        "recall",
        "get",
        "delete",
        "health",
        "stats",
        "rebuild-index",
        "reembed",
        "export",
        "import",
        "knowledge",
        "cleanup",
        "migrate",
        "drivers",
        "bench",
    ):
        assert re.search(rf"^\s+{re.escape(command)}\s+\S", result.out, re.M), command
    assert "examples:" in result.out
    assert "memory-drivers recall" in result.out


def test_usage_errors_exit_2(cli: Run) -> None:
    assert cli().code == 2
    missing_user = cli("recall", "tea")
    assert missing_user.code == 2
    assert "--user" in missing_user.err
    assert cli("store", "--user", "u", "x", "--importance", "high").code == 2
    assert cli("knowledge").code == 2


def test_version_is_the_installed_one(cli: Run) -> None:
    """--version prints the version pip installed (pyproject's, not a stale copy)."""
    result = cli("--version")
    assert result.code == 0
    assert result.out == f"memory-drivers {importlib.metadata.version('memory-drivers')}\n"


def json_error(result: Result) -> dict[str, Any]:
    """The error object a ``--json`` run printed: stdout empty, one JSON line on stderr."""
    assert result.out == ""
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    error: dict[str, Any] = json.loads(lines[0])["error"]
    assert set(error) == {"type", "message", "exit_code"}
    assert error["exit_code"] == result.code
    return error


def test_json_errors_are_json_objects_on_stderr(cli: Run, store_dir: Path) -> None:
    """With --json (before or after the command) every error, usage errors included, is one
    JSON object on stderr with the error's type and message; the exit code is unchanged."""
    invalid = json_error(cli("--json", "store", "--user", "alice", "--importance", "5", "x"))
    assert invalid["type"] == "ValidationError" and invalid["exit_code"] == 2
    assert "importance must be from 0 to 1" in invalid["message"]
    after = json_error(cli("store", "--user", "alice", "--importance", "5", "x", "--json"))
    assert after == invalid

    usage = json_error(cli("recall", "tea", "--json"))
    assert usage["type"] == "UsageError" and usage["exit_code"] == 2
    assert "--user" in usage["message"]
    assert json_error(cli("--json", "--bogus", "stats"))["type"] == "UsageError"
    assert json_error(cli("--json"))["exit_code"] == 2  # no command at all

    missing = json_error(cli("get", "3f2b8c1e-4d5a-4b6c-9d7e-8f9a0b1c2d3e", "--json"))
    assert missing["type"] == "NotFoundError" and missing["exit_code"] == 1
    unreadable = json_error(cli("--json", "import", "missing.jsonl"))
    assert unreadable["type"] == "CliError" and unreadable["exit_code"] == 1
    unknown = json_error(cli("--json", "--driver", "sqlit", "stats"))
    assert unknown["type"] == "DriverNotFoundError"
    assert "Did you mean 'sqlite'?" in unknown["message"]
    migrate = json_error(cli("--json", "migrate", "rollback", "--steps", "0"))
    assert migrate["type"] == "ValidationError" and "--steps" in migrate["message"]
    migrate_usage = json_error(cli("--json", "migrate", "--bogus"))
    assert migrate_usage["type"] == "UsageError" and migrate_usage["exit_code"] == 2

    # Without --json: text, and argparse's own usage message for usage errors.
    text = cli("recall", "tea")
    assert text.code == 2 and text.out == ""
    assert text.err.startswith("usage: memory-drivers recall ")
    assert text.err.rstrip().endswith(
        "memory-drivers recall: error: the following arguments are required: --user"
    )
    assert cli("get", "3f2b8c1e-4d5a-4b6c-9d7e-8f9a0b1c2d3e").err.startswith("error: no memory")


# ---------------------------------------------------------------------- store and recall
def test_store_then_recall_by_meaning(cli: Run, three: dict[str, str]) -> None:
    result = cli("recall", "--user", "alice", "what tea does alice drink")
    assert result.code == 0
    assert len(result.lines) == 3
    first = result.lines[0].split("  ")
    assert re.fullmatch(r"-?\d\.\d{3}", first[0])
    assert first[1:] == [
        three["tea"],
        "preference",
        "[food,drink]",
        "Alice drinks green tea every morning",
    ]
    scores = [float(line.split("  ")[0]) for line in result.lines]
    assert scores == sorted(scores, reverse=True)

    hits = cli(
        "recall", "--user", "alice", "what tea does alice drink", "--top-k", "2", "--json"
    ).json()
    assert [h["memory"]["id"] for h in hits][:1] == [three["tea"]]
    assert len(hits) == 2
    tea = hits[0]["memory"]
    assert tea["tags"] == ["food", "drink"]
    assert tea["importance"] == 0.8
    assert tea["metadata"] == {"topic": "food"}
    assert tea["conversation_id"] == "c1"
    assert isinstance(hits[0]["score"], float)
    # --json is also accepted before the command
    assert (
        cli("--json", "recall", "--user", "alice", "tea").json()[0]["memory"]["id"] == three["tea"]
    )


def test_recall_keyword_and_without_query(cli: Run, three: dict[str, str]) -> None:
    hits = cli("recall", "--user", "alice", "--keyword", "hiking Alps", "--json").json()
    assert [h["memory"]["id"] for h in hits] == [three["hike"]]
    assert hits[0]["score"] > 0  # BM25
    same = cli("recall", "--user", "alice", "--search", "keyword", "hiking Alps", "--json")
    assert same.json() == hits
    assert (
        cli("recall", "--user", "alice", "--keyword", "saxophone").out.strip()
        == "no matching memories"
    )

    newest_first = cli("recall", "--user", "alice")
    assert [line.split("  ")[0] for line in newest_first.lines] == ["-", "-", "-"]
    assert [line.split("  ")[1] for line in newest_first.lines] == [
        three["jazz"],
        three["hike"],
        three["tea"],
    ]
    assert cli("recall", "--user", "bob", "tea").out.strip() == "no matching memories"


def test_recall_search_modes_and_now(cli: Run, three: dict[str, str]) -> None:
    vector = cli("recall", "--user", "alice", "--search", "vector", "hiking Alps", "--json").json()
    hybrid = cli("recall", "--user", "alice", "hiking Alps", "--json").json()
    assert len(vector) == len(hybrid) == 3, "vector and hybrid search score every memory"
    assert vector[0]["memory"]["id"] == hybrid[0]["memory"]["id"] == three["hike"]
    assert [h["score"] for h in vector] != [h["score"] for h in hybrid]
    at = cli("recall", "--user", "alice", "hiking last week", "--now", "2026-03-18T12:00:00Z")
    assert at.code == 0 and three["hike"] in at.out
    assert cli("recall", "--user", "alice", "tea", "--search", "fuzzy").code == 2
    assert cli("recall", "--user", "alice", "tea", "--now", "yesterday").code != 0


def test_recall_filters(cli: Run, three: dict[str, str]) -> None:
    def ids(*args: str) -> set[str]:
        result = cli("recall", "--user", "alice", *args, "--json")
        assert result.code == 0, result.err
        return {hit["memory"]["id"] for hit in result.json()}

    assert ids("--tag", "food") == {three["tea"], three["jazz"]}
    assert ids("--tag", "food", "--tag", "drink", "--all-tags") == {three["tea"]}
    assert ids("--tag", "drink", "--tag", "sport") == {three["tea"], three["hike"]}
    assert ids("--exclude-tag", "food") == {three["hike"]}
    assert ids("--type", "fact", "--type", "preference") == {three["tea"], three["jazz"]}
    assert ids("--min-importance", "0.5") == {three["tea"], three["jazz"]}
    assert ids("--metadata", '{"topic": "food"}') == {three["tea"]}
    assert ids("--conversation", "c1") == {three["tea"]}
    assert ids("piano", "--tag", "sport") == {three["hike"]}
    assert ids("--since", "2000-01-01T00:00:00Z", "--until", "2999-01-01") == set(three.values())
    assert ids("--until", "2000-01-01T00:00:00Z") == set()


def test_store_reads_stdin_and_json_output(cli: Run) -> None:
    result = cli(
        "store",
        "--user",
        "bob",
        "--source",
        "chat",
        "--json",
        "-",
        stdin="Bob is allergic to peanuts\n",
    )
    assert result.code == 0, result.err
    memory = result.json()
    assert UUID.match(memory["id"])
    assert memory["content"] == "Bob is allergic to peanuts"
    assert memory["source"] == "chat"
    assert memory["memory_type"] == "semantic"
    assert memory["importance"] == 0.5
    fetched = cli("get", memory["id"], "--json").json()
    assert fetched == memory


# ---------------------------------------------------------------------- get, update, delete
def test_get_and_delete(cli: Run, three: dict[str, str]) -> None:
    shown = cli("get", three["tea"])
    assert shown.code == 0
    assert f"id: {three['tea']}" in shown.lines
    assert "content: Alice drinks green tea every morning" in shown.lines
    assert "tags: food, drink" in shown.lines
    assert "metadata:" in shown.lines and "  topic: food" in shown.lines

    other_user = cli("get", three["tea"], "--user", "bob")
    assert other_user.code == 1
    assert other_user.out == ""
    assert other_user.err.startswith("error: no memory") and "'bob'" in other_user.err

    assert cli("delete", three["tea"], "--user", "bob").code == 1
    deleted = cli("delete", three["tea"], "--user", "alice")
    assert (deleted.code, deleted.out.strip()) == (0, f"deleted {three['tea']}")
    again = cli("delete", three["tea"])
    assert again.code == 1
    assert again.err.strip() == f"error: no memory {three['tea']}"
    assert cli("get", three["tea"]).code == 1
    assert cli("count").out.strip() == "2"
    assert cli("count", "--user", "bob", "--json").json()["count"] == 0


def test_update_count_associate_related(cli: Run, three: dict[str, str]) -> None:
    updated = cli(
        "update",
        three["hike"],
        "--content",
        "Alice climbed Mont Blanc",
        "--tag",
        "mountains",
        "--importance",
        "0.9",
        "--json",
    ).json()
    assert updated["content"] == "Alice climbed Mont Blanc"
    assert updated["tags"] == ["mountains"]
    assert updated["importance"] == 0.9
    assert cli("update", three["hike"], "--clear-tags", "--json").json()["tags"] == []
    assert (
        cli("recall", "--user", "alice", "--keyword", "Mont Blanc", "--json").json()[0]["memory"][
            "id"
        ]
        == three["hike"]
    )

    link = cli("associate", three["tea"], three["jazz"], "--type", "leads_to", "--strength", "0.7")
    assert link.code == 0, link.err
    assert link.out.strip() == f"{three['tea']} -LEADS_TO (0.70)-> {three['jazz']}"
    related = cli("related", three["jazz"], "--json").json()
    assert [(r["memory"]["id"], r["direction"], r["relationship_type"]) for r in related] == [
        (three["tea"], "incoming", "LEADS_TO")
    ]
    assert cli("related", three["hike"]).out.strip() == "no related memories"
    assert cli("count", "--user", "alice").out.strip() == "3"


# ---------------------------------------------------------------------- errors
def test_validation_error_exits_2_without_traceback(cli: Run) -> None:
    result = cli("store", "--user", "alice", "--importance", "5", "too important")
    assert result.code == 2
    assert result.out == ""
    assert result.err.startswith("error: ")
    assert "importance" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert cli("count").out.strip() == "0"  # nothing was stored

    bad_json = cli("store", "--user", "alice", "--metadata", "{not json", "x")
    assert bad_json.code == 2 and "--metadata" in bad_json.err
    assert cli("recall", "--user", "alice", "--metadata", "[1]").code == 2
    assert cli("get", "not-a-uuid").code == 2
    assert cli("recall", "--user", "alice", "--top-k", "0").code == 2


def test_unknown_driver_suggests_the_closest(cli: Run) -> None:
    result = cli("--driver", "sqlit", "stats")
    assert result.code == 2
    assert result.out == ""
    assert result.err.startswith("error: ")
    assert "Did you mean 'sqlite'?" in result.err


def test_invalid_configuration_exits_2(cli: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDDING_PROVIDER", "nonsense")
    result = cli("stats")
    assert result.code == 2
    assert result.err.startswith("error: invalid configuration")


# ---------------------------------------------------------------------- operations
def test_health_and_stats(cli: Run, three: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    health = cli("health")
    assert health.code == 0
    assert "status: ok" in health.lines
    assert "driver: sqlite" in health.lines
    assert "embedder:" in health.lines and "  name: hashing-256" in health.lines
    report = cli("health", "--json").json()
    assert report["status"] == "ok"
    assert report["memories"] == 3

    stats = cli("stats", "--json").json()
    assert (stats["driver"], stats["memories"], stats["users"]) == ("sqlite", 3, 1)
    assert stats["memory_types"] == {"fact": 1, "preference": 1, "semantic": 1}
    human = cli("stats")
    assert "memories: 3" in human.lines and "  preference: 1" in human.lines

    monkeypatch.setattr(
        SQLiteDriver, "health_check", lambda self: {"status": "error", "error": "disk on fire"}
    )
    unhealthy = cli("health")
    assert unhealthy.code == 1
    assert "error: disk on fire" in unhealthy.lines


def test_rebuild_index_shows_progress(cli: Run, three: dict[str, str]) -> None:
    result = cli("--progress", "rebuild-index")
    assert result.code == 0
    assert "rebuilt: true" in result.lines
    assert "memories: 3" in result.lines
    assert "3/3" in result.err  # the progress bar reached its total
    quiet = cli("--no-progress", "rebuild-index", "--json")
    assert quiet.err == ""
    assert quiet.json()["memories"] == 3
    assert cli("recall", "--user", "alice", "tea").code == 0


def test_drivers_and_migrate_status(cli: Run) -> None:
    drivers = cli("drivers")
    assert drivers.code == 0
    assert "sqlite  (selected)" in drivers.lines
    assert "sqlite" in cli("drivers", "--json").json()

    empty = cli("migrate", "status")
    assert empty.code == 0
    assert "current:  (empty: no schema yet)" in empty.lines
    assert any(line.startswith("pending:") for line in empty.lines)
    assert cli("migrate").code == 0  # upgrade is the default action
    done = cli("migrate", "status")
    assert done.lines[-1] == "up to date"
    head = next(line.split()[-1] for line in done.lines if line.startswith("head:"))
    assert f"current:  {head}" in done.lines
    assert cli("migrate", "--bogus").code == 2


@pytest.mark.parametrize("driver", ["chroma", "automem"])
def test_migrate_refuses_a_driver_without_sql_schema(
    cli: Run, store_dir: Path, monkeypatch: pytest.MonkeyPatch, driver: str
) -> None:
    """migrate with a driver that keeps no SQL schema (from MEMORY_DRIVER or --driver) says
    so, exits 2 like any configuration error, and creates no SQLite file."""
    for args, env in (((f"--driver={driver}",), None), ((), driver)):
        if env:
            monkeypatch.setenv("MEMORY_DRIVER", env)
        for action in ("status", "upgrade"):
            result = cli(*args, "migrate", action)
            assert result.code == 2, result.err
            assert result.out == ""
            assert f"the {driver!r} driver keeps no SQL schema" in result.err
    assert list(store_dir.iterdir()) == [], "no database may be created"
    # --url names a database explicitly: that one is migrated.
    url = f"sqlite:///{store_dir}/other.db"
    assert cli("migrate", "--url", url).code == 0
    assert cli("migrate", "status", "--url", url).lines[-1] == "up to date"


def test_migrate_follows_the_driver_option(
    cli: Run, store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--driver picks migrate's database as for every other command: pgvector's DATABASE_URL
    (here unset), not the sqlite file; a misspelt name gets the registry's suggestion."""
    monkeypatch.setenv("MEMORY_DRIVER", "chroma")
    postgres = cli("--driver", "pgvector", "migrate", "status")
    assert postgres.code == 2
    assert "DATABASE_URL is not set" in postgres.err
    misspelt = cli("--driver", "sqlit", "migrate", "status")
    assert misspelt.code == 2
    assert "Did you mean 'sqlite'?" in misspelt.err
    assert cli("--driver", "sqlite", "migrate", "status").code == 0
    assert (store_dir / "m.db").exists()


# ---------------------------------------------------------------------- cleanup
def test_cleanup_dry_run_then_yes(cli: Run) -> None:
    keep = store(cli, "--user", "u1", "--importance", "0.9", "keep me")
    drop = store(cli, "--user", "u1", "--importance", "0.1", "forget me")
    other = store(cli, "--user", "u2", "--importance", "0.1", "not mine")

    dry = cli("cleanup", "--user", "u1", "--min-importance", "0.5")
    assert dry.code == 0
    assert dry.lines[0].startswith("would remove 1 memory (dry run")
    assert drop in dry.out and keep not in dry.out and other not in dry.out
    assert cli("count").out.strip() == "3"

    too_young = cli("cleanup", "--user", "u1", "--max-age-days", "1")
    assert too_young.out.strip() == "nothing to remove"
    done = cli("cleanup", "--user", "u1", "--min-importance", "0.5", "--yes", "--json").json()
    assert (done["dry_run"], done["count"]) == (False, 1)
    assert [m["id"] for m in done["memories"]] == [drop]
    assert cli("get", drop).code == 1
    assert cli("get", keep).code == 0 and cli("get", other).code == 0

    refused = cli("cleanup")
    assert refused.code == 2 and "never removes everything" in refused.err


# ---------------------------------------------------------------------- export / import / copy
def records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_export_import_round_trip(
    cli: Run, three: dict[str, str], store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store(
        cli,
        "--user",
        "bob",
        "--source",
        "import-test",
        "--metadata",
        '{"n": 1, "ok": true, "x": null}',
        'Bob: ünïcödé and "quotes"\nsecond line',
    )
    assert cli("associate", three["tea"], three["jazz"]).code == 0
    to_stdout = cli("export")
    assert to_stdout.code == 0
    lines = records(to_stdout.out)
    assert lines[0]["kind"] == "header" and lines[0]["memory_count"] == 4
    memories = [r["memory"]["id"] for r in lines if r["kind"] == "memory"]
    assert memories[:3] == list(three.values())  # oldest first
    assert [r["kind"] for r in lines[5:]] == ["association", "end"]
    saved = cli("--progress", "export", "--output", "backup.jsonl.gz")
    assert saved.out.strip() == "exported 4 memories, 1 association to backup.jsonl.gz"
    assert "4/4" in saved.err
    unzipped = gzip.decompress((store_dir / "backup.jsonl.gz").read_bytes()).decode()
    assert records(unzipped)[1:] == lines[1:]  # the same records; only the time differs
    only_bob = records(cli("export", "--user", "bob").out)
    assert [r["memory"]["user_id"] for r in only_bob if r["kind"] == "memory"] == ["bob"]

    monkeypatch.setenv("MEMORY_DB_URL", f"sqlite:///{store_dir}/other.db")
    assert cli("count").out.strip() == "0"
    imported = cli("--progress", "import", "backup.jsonl.gz")
    assert imported.code == 0, imported.err
    assert imported.out.strip() == "imported 4 memories, 1 association; vectors reused"
    assert "4/4" in imported.err
    assert records(cli("export").out)[1:] == lines[1:]  # ids, times, links, everything
    hits = cli("recall", "--user", "alice", "--keyword", "jazz piano", "--json").json()
    assert [h["memory"]["id"] for h in hits] == [three["jazz"]]

    again = cli("import", "backup.jsonl.gz", "--json")
    assert again.json()["memories"] == {"stored": 0, "replaced": 0, "skipped": 4}
    conflict = cli("import", "backup.jsonl.gz", "--on-conflict", "fail")
    assert conflict.code == 1 and "already exists" in conflict.err
    assert cli("count").out.strip() == "4"

    monkeypatch.setenv("MEMORY_DB_URL", f"sqlite:///{store_dir}/third.db")
    from_stdin = cli("import", "-", "--json", stdin=to_stdout.out)
    assert from_stdin.json()["memories"] == {"stored": 4, "replaced": 0, "skipped": 0}


def test_copy_between_stores_named_by_url(cli: Run, three: dict[str, str], store_dir: Path) -> None:
    """copy --from/--to take URLs; copying again skips everything."""
    source, target = f"sqlite:///{store_dir}/m.db", f"sqlite:///{store_dir}/copy.db"
    copied = cli("copy", "--from", source, "--to", target)
    assert copied.code == 0, copied.err
    assert copied.out.strip() == "copied 3 memories; vectors reused"
    again = cli("copy", "--from", source, "--to", target, "--json").json()
    assert again["memories"] == {"stored": 0, "replaced": 0, "skipped": 3}
    alice = cli("copy", "--from", source, "--to", f"sqlite:///{store_dir}/a.db", "--user", "bob")
    assert alice.out.strip() == "copied 0 memories"
    wrong = cli("copy", "--from", "sqlit", "--to", target)
    assert wrong.code == 2 and "Did you mean 'sqlite'" in wrong.err


def test_import_rejects_bad_lines(cli: Run, store_dir: Path) -> None:
    """Bad lines are typed errors naming the line; what came before them is stored (the import
    is resumable), a file that does not exist is named."""
    good = json.dumps({"user_id": "u", "content": "fine"})
    (store_dir / "bad.jsonl").write_text(f"{good}\n\n{{oops\n", encoding="utf-8")
    result = cli("import", "bad.jsonl")
    assert result.code == 2
    assert result.err.startswith("error: line 3: not valid JSON")
    assert cli("count").out.strip() == "1"
    missing = cli("import", "missing.jsonl")
    assert missing.code == 1 and "cannot read 'missing.jsonl'" in missing.err
    unknown_field = json.dumps({"user_id": "u", "content": "x", "colour": "red"})
    result = cli("import", "-", stdin=unknown_field + "\n")
    assert result.code == 2 and "colour" in result.err


# ---------------------------------------------------------------------- knowledge
def test_too_long_names_the_setting_that_limits_it(
    cli: Run, store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An over-long document names KNOWLEDGE_MAX_CONTENT_LENGTH (and does not suggest storing
    it as global knowledge, which it is); an over-long memory names MEMORY_MAX_CONTENT_LENGTH
    and suggests global knowledge."""
    monkeypatch.setenv("KNOWLEDGE_MAX_CONTENT_LENGTH", "40")
    monkeypatch.setenv("MEMORY_MAX_CONTENT_LENGTH", "20")
    (store_dir / "long.txt").write_text("a long policy document " * 3, encoding="utf-8")
    document = cli("knowledge", "add", "--category", "policies", "long.txt")
    assert document.code == 2
    assert "is 69 characters long; the maximum is 40 (KNOWLEDGE_MAX_CONTENT_LENGTH)" in document.err
    assert "MEMORY_MAX_CONTENT_LENGTH" not in document.err
    assert "global knowledge" not in document.err
    memory = cli("store", "--user", "u1", "a memory well over twenty characters")
    assert memory.code == 2
    assert "the maximum is 20 (MEMORY_MAX_CONTENT_LENGTH)" in memory.err
    assert "global knowledge" in memory.err
    short = cli("knowledge", "add", "--category", "policies", "-", stdin="within the limit")
    assert short.code == 0, short.err


def test_knowledge_add_of_a_large_document_shows_progress(
    cli: Run, store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large document is embedded in batches (EMBEDDING_BATCH_SIZE chunks) with a progress
    bar on stderr that reaches the number of chunks; --no-progress prints nothing there."""
    monkeypatch.setenv("KNOWLEDGE_CHUNK_TOKENS", "20")
    monkeypatch.setenv("KNOWLEDGE_CHUNK_OVERLAP", "0")
    monkeypatch.setenv("EMBEDDING_BATCH_SIZE", "4")
    (store_dir / "big.txt").write_text(" ".join(f"w{i}" for i in range(200)), encoding="utf-8")
    added = cli("--progress", "knowledge", "add", "--category", "c", "--doc-id", "big", "big.txt")
    assert added.code == 0, added.err
    assert added.out.strip() == "stored document big (10 chunks, category c)"
    assert "embedding" in added.err and "10/10" in added.err
    quiet = cli(
        "--no-progress", "knowledge", "add", "--category", "c", "--doc-id", "big", "big.txt"
    )
    assert quiet.code == 0 and quiet.err == ""


def test_knowledge_add_search_delete(cli: Run, store_dir: Path) -> None:
    (store_dir / "tea.txt").write_text(
        "Office tea policy. Green tea is served in the kitchen at ten every morning.",
        encoding="utf-8",
    )
    added = cli(
        "knowledge",
        "add",
        "--category",
        "policies",
        "--title",
        "Tea",
        "--doc-id",
        "tea-policy",
        "tea.txt",
    )
    assert added.code == 0, added.err
    assert added.out.strip() == "stored document tea-policy (1 chunk, category policies)"
    other = cli(
        "knowledge",
        "add",
        "--category",
        "it",
        "--json",
        "-",
        stdin="Passwords must be rotated every ninety days.",
    ).json()
    assert UUID.match(other["doc_id"]) and len(other["chunks"]) == 1

    found = cli("knowledge", "search", "when is green tea served")
    assert found.code == 0
    assert found.lines[0].split("  ")[1:3] == ["tea-policy#0", "[policies]"]
    assert "Tea: Office tea policy." in found.lines[0]
    hits = cli("knowledge", "search", "green tea", "--top-k", "5", "--json").json()
    assert hits[0]["chunk"]["doc_id"] == "tea-policy"
    assert hits[0]["chunk"]["title"] == "Tea"
    only_it = cli("knowledge", "search", "green tea", "--category", "it", "--json").json()
    assert [h["chunk"]["doc_id"] for h in only_it] == [other["doc_id"]]
    assert "chunks: 1" in cli("knowledge", "get", "tea-policy").lines

    deleted = cli("knowledge", "delete", "tea-policy")
    assert (deleted.code, deleted.out.strip()) == (0, "deleted document tea-policy")
    again = cli("knowledge", "delete", "tea-policy")
    assert again.code == 1 and again.err.strip() == "error: no knowledge document 'tea-policy'"
    assert cli("knowledge", "get", "tea-policy").code == 1
    left = cli("knowledge", "search", "green tea", "--json").json()
    assert [h["chunk"]["doc_id"] for h in left] == [other["doc_id"]]
    assert cli("knowledge", "add", "--category", "x", "nope.txt").code == 1


# ---------------------------------------------------------------------- reembed
def test_reembed_after_changing_the_embedder(
    cli: Run, three: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (
        cli(
            "knowledge",
            "add",
            "--category",
            "c",
            "--doc-id",
            "d",
            "-",
            stdin="Jazz concerts happen on Fridays.",
        ).code
        == 0
    )
    monkeypatch.setenv("EMBEDDING_DIMENSION", "64")

    refused = cli("recall", "--user", "alice", "jazz")
    assert refused.code == 2
    assert refused.err.startswith("error: ") and "memory-drivers reembed" in refused.err
    assert cli("health").code == 2

    result = cli("--progress", "reembed", "--batch-size", "2")
    assert result.code == 0, result.err
    assert result.out.strip() == "re-embedded 3 memories and 1 knowledge chunk with hashing-64"
    assert "4/4" in result.err

    hits = cli("recall", "--user", "alice", "jazz piano", "--json").json()
    assert hits[0]["memory"]["id"] == three["jazz"]
    assert len(hits) == 3
    assert cli("knowledge", "search", "jazz", "--json").json()[0]["chunk"]["doc_id"] == "d"
    health = cli("health", "--json")
    assert health.code == 0
    assert health.json()["embedder"] == {"name": "hashing-64", "dimension": "64"}
    assert cli("reembed", "--json").json() == {
        "memories": 3,
        "knowledge_chunks": 1,
        "embedder": "hashing-64",
    }


# ---------------------------------------------------------------------- real processes
def test_python_dash_m_and_console_script(store_dir: Path) -> None:
    help_text = spawn([sys.executable, "-m", "memory_drivers", "--help"], store_dir)
    assert help_text.code == 0
    assert help_text.out.startswith("usage: memory-drivers ")

    stored = spawn(
        [sys.executable, "-m", "memory_drivers", "store", "--user", "carol", "--tag", "pets", "-"],
        store_dir,
        stdin="Carol has a cat named Miso\n",
    )
    assert stored.code == 0, stored.err
    memory_id = stored.out.strip()
    assert UUID.match(memory_id)

    assert SCRIPT.exists(), f"the console script is not installed at {SCRIPT}"
    recalled = spawn([str(SCRIPT), "recall", "--user", "carol", "cat", "--json"], store_dir)
    assert recalled.code == 0, recalled.err
    hits = json.loads(recalled.out)
    assert [h["memory"]["id"] for h in hits] == [memory_id]
    assert hits[0]["memory"]["content"] == "Carol has a cat named Miso"


def test_errors_in_a_real_process_have_no_traceback(store_dir: Path) -> None:
    invalid = spawn([str(SCRIPT), "store", "--user", "u", "--importance", "5", "x"], store_dir)
    assert invalid.code == 2
    assert invalid.err.startswith("error: ") and "Traceback" not in invalid.err
    unknown = spawn(
        [sys.executable, "-m", "memory_drivers", "--driver", "sqlit", "health"], store_dir
    )
    assert unknown.code == 2
    assert "Did you mean 'sqlite'?" in unknown.err and "Traceback" not in unknown.err
    as_json = spawn([str(SCRIPT), "--json", "--driver", "sqlit", "health"], store_dir)
    assert as_json.code == 2 and as_json.out == ""
    assert json.loads(as_json.err)["error"]["type"] == "DriverNotFoundError"
