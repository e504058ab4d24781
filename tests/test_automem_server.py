"""``memory-drivers serve``: AutoMem's REST API over a driver, tested over real HTTP.

The server runs with uvicorn on a free loopback port (in a thread of this process, or as the
``memory-drivers serve`` command in a subprocess) in front of a fresh sqlite store per test
(hashing embedder). Where AutoMem's behaviour is particular, the test says what AutoMem does
(its routes in ``automem/api/``) and checks that the server does the same.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from automem_support import (  # noqa: F401 - fixtures
    TOKEN,
    LiveServer,
    automem,
    live_server,
    served,
)

from memory_drivers import automem_wire as wire
from memory_drivers.drivers.automem import AutoMemDriver
from memory_drivers.drivers.sqlite import SQLiteDriver

NOW = datetime.now(timezone.utc)


@pytest.fixture
def api(live_server: LiveServer, served: SQLiteDriver) -> Iterator[httpx.Client]:  # noqa: F811
    """An HTTP client with the server's token, as an AutoMem client (the MCP server) is."""
    with httpx.Client(
        base_url=live_server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    ) as client:
        yield client


def error_of(response: httpx.Response, status: int) -> str:
    """The message of an AutoMem error answer, after checking its status and exact shape."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"status", "code", "message"}, body
    assert body["status"] == "error" and body["code"] == status
    assert "Traceback" not in response.text and 'File "' not in response.text
    return str(body["message"])


def store(api: httpx.Client, content: str, **fields: Any) -> str:
    response = api.post("/memory", json={"content": content, **fields})
    assert response.status_code == 201, response.text
    return str(response.json()["memory_id"])


def contents(body: dict[str, Any]) -> list[str]:
    return sorted(r["memory"]["content"] for r in body["results"])


# ---------------------------------------------------------------------- token
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/recall"),
        ("POST", "/memory"),
        ("GET", "/memory/by-tag?tags=x"),
        ("DELETE", "/memory/by-tag?tags=x"),
        ("POST", "/associate"),
        ("GET", "/no/such/route"),
    ],
)
def test_missing_or_wrong_token_is_401(
    live_server: LiveServer,  # noqa: F811
    served: SQLiteDriver,  # noqa: F811
    method: str,
    path: str,
) -> None:
    """AutoMem checks the token before routing (so an unknown path is 401 too) and answers
    401 {"message": "Unauthorized"}; nothing is written."""
    url = live_server.url + path
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}):
        response = httpx.request(method, url, headers=headers, json={"content": "x"})
        assert error_of(response, 401) == "Unauthorized"
    assert served.count() == 0


def test_token_is_accepted_as_bearer_api_key_header_or_query(
    live_server: LiveServer,  # noqa: F811
    served: SQLiteDriver,  # noqa: F811
) -> None:
    """AutoMem takes the token from ``Authorization: Bearer`` (any case), ``X-API-Key`` or
    ``?api_key=``."""
    url = f"{live_server.url}/memory/by-tag"
    for headers, params in (
        ({"Authorization": f"Bearer {TOKEN}"}, {}),
        ({"Authorization": f"bearer {TOKEN}"}, {}),
        ({"X-API-Key": TOKEN}, {}),
        ({}, {"api_key": TOKEN}),
    ):
        response = httpx.get(url, headers=headers, params={"tags": "x", **params})
        assert response.status_code == 200, (headers, params)


def test_health_needs_no_token_and_has_automem_shape(
    live_server: LiveServer,  # noqa: F811
    served: SQLiteDriver,  # noqa: F811
) -> None:
    served.store("u1", "one memory")
    body = httpx.get(f"{live_server.url}/health").json()
    assert body["status"] == "healthy"  # the MCP client accepts "healthy" or "degraded"
    assert body["memory_count"] == 1
    assert body["vector_dimensions"]["effective"] == served.embedder.dimension
    assert body["memory_drivers"]["driver"] == "sqlite"
    assert body["memory_drivers"]["embedder"] == served.embedder.name
    served.close()
    degraded = httpx.get(f"{live_server.url}/health").json()
    assert degraded["status"] == "degraded" and "closed" in degraded["memory_drivers"]["error"]


# ---------------------------------------------------------------------- errors
def test_routes_and_methods_answer_like_automem(api: httpx.Client) -> None:
    assert "was not found" in error_of(api.get("/no/such/route"), 404)
    assert "not allowed" in error_of(api.put("/memory"), 405)
    assert error_of(api.get("/memory/not-a-uuid"), 400) == "memory_id must be a valid UUID"
    assert error_of(api.get(f"/memory/{wire.STORE_INFO_ID[:-1]}0"), 404) == "Memory not found"
    assert error_of(api.delete("/memory/3f2b8c1e-4d5a-4b6c-9d7e-8f9a0b1c2d3e"), 404)
    message = error_of(api.post("/consolidate"), 501)
    assert "needs AutoMem itself" in message


def test_unexpected_failure_is_a_generic_500_logged_on_the_server(
    api: httpx.Client,
    live_server: LiveServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An error the server did not expect answers 500 "Internal server error" (AutoMem's
    body): no exception text, no traceback. The traceback goes to the server's log."""
    service = live_server.app.state.service

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret detail of the failure")

    monkeypatch.setattr(service.driver, "_search_memories", broken)
    with caplog.at_level(logging.ERROR, logger="memory_drivers.server"):
        response = api.get("/recall", params={"query": "anything"})
    assert error_of(response, 500) == "Internal server error"
    assert "secret detail" not in response.text
    logged = [r for r in caplog.records if r.exc_info]
    assert logged and "secret detail" in str(logged[0].exc_info[1])


def test_unavailable_store_is_503(api: httpx.Client, served: SQLiteDriver) -> None:  # noqa: F811
    served.close()
    message = error_of(api.get("/recall"), 503)
    assert "closed" in message


# ---------------------------------------------------------------------- POST /memory
@pytest.mark.parametrize(
    ("body", "message"),
    [
        (None, "JSON body is required"),
        ([1, 2], "JSON body is required"),
        ({}, "'content' is required"),
        ({"content": "   "}, "'content' is required"),
        ({"content": 42}, "'content' must be a string"),
        ({"content": "x" * 2001}, "Content exceeds maximum length of 2000 characters (2001"),
        ({"content": "x", "tags": 7}, "'tags' must be a list of strings or a single string"),
        ({"content": "x", "tags": ["ok", ""]}, "tags"),
        ({"content": "x", "importance": "high"}, "'importance' must be a number"),
        ({"content": "x", "importance": 1.5}, "'importance' must be between 0 and 1"),
        ({"content": "x", "metadata": ["a"]}, "'metadata' must be an object"),
        ({"content": "x", "timestamp": "yesterday"}, "Invalid ISO timestamp"),
        ({"content": "x", "updated_at": "soon"}, "Invalid updated_at"),
        ({"content": "x", "t_valid": "never"}, "Invalid t_valid"),
        ({"content": "x", "embedding": [0.1, 0.2]}, "Embedding must contain exactly 256 values"),
        ({"content": "x", "metadata": {"memory_drivers": "mine"}}, "reserved"),
        (
            {"content": "x", "metadata": {"memory_drivers": {"v": 1, "kind": "memory"}}},
            "memory_drivers.id",
        ),
    ],
)
def test_store_validates_like_automem(
    api: httpx.Client,
    served: SQLiteDriver,  # noqa: F811
    body: Any,
    message: str,
) -> None:
    """Each bad request is a 400 with AutoMem's message (and, for what AutoMem would accept
    but the store cannot hold, the store's); nothing is written."""
    response = (
        api.post("/memory", content=b"not json") if body is None else api.post("/memory", json=body)
    )
    assert message in error_of(response, 400)
    assert served.count() == 0


def test_store_answers_201_and_strips_content_like_automem(
    api: httpx.Client,
    served: SQLiteDriver,  # noqa: F811
) -> None:
    """A plain AutoMem client's memory: a new id (AutoMem never takes the client's ``id``),
    stripped content, the server's default user, the AutoMem type mapped onto the store's."""
    response = api.post(
        "/memory",
        json={
            "content": "  Prefers dark mode  ",
            "id": "11111111-1111-4111-8111-111111111111",
            "tags": ["ui", "Settings"],
            "importance": 0.7,
            "type": "Habit",
            "metadata": {"source": "mcp"},
            "timestamp": "2026-01-02T03:04:05.123456Z",
        },
    )
    assert response.status_code == 201
    body = response.json()
    assert (
        body["status"] == "success" and body["memory_id"] != "11111111-1111-4111-8111-111111111111"
    )
    assert body["type"] == "Habit" and body["timestamp"] == "2026-01-02T03:04:05.123456+00:00"
    stored = served.get(body["memory_id"])
    assert stored is not None
    assert (stored.user_id, stored.content, stored.memory_type) == (
        "automem",
        "Prefers dark mode",
        "procedural",
    )
    assert (stored.tags, stored.metadata, stored.importance) == (
        ["ui", "Settings"],
        {"source": "mcp"},
        0.7,
    )
    shown = api.get(f"/memory/{body['memory_id']}").json()["memory"]
    assert shown["content"] == "Prefers dark mode" and shown["metadata"]["source"] == "mcp"
    assert shown["tags"][:2] == ["ui", "Settings"] and wire.user_tag("automem") in shown["tags"]


def test_batch_stores_all_or_nothing(api: httpx.Client, served: SQLiteDriver) -> None:  # noqa: F811
    bad = api.post(
        "/memory/batch", json={"memories": [{"content": "fine"}, {"content": "x" * 2001}]}
    )
    assert error_of(bad, 400).startswith("Memory at index 1: Content exceeds")
    assert (
        error_of(
            api.post(
                "/memory/batch",
                json={"memories": [{"content": "a"}, {"content": "b", "importance": 7}]},
            ),
            400,
        )
        == "Memory at index 1: 'importance' must be between 0 and 1"
    )
    assert "must be an object" in error_of(
        api.post("/memory/batch", json={"memories": [{"content": "a"}, 3]}), 400
    )
    assert error_of(api.post("/memory/batch", json={"memories": []}), 400) == (
        "'memories' must be a non-empty array"
    )
    too_many = {"memories": [{"content": f"m{i}"} for i in range(501)]}
    assert "500" in error_of(api.post("/memory/batch", json=too_many), 400)
    assert served.count() == 0
    good = api.post("/memory/batch", json={"memories": [{"content": "a"}, {"content": "b"}]})
    assert good.status_code == 201 and good.json()["stored"] == 2
    assert {m.id for m in served.iter_memories()} == set(good.json()["memory_ids"])


# ---------------------------------------------------------------------- PATCH, DELETE
def test_update_changes_what_is_given_and_keeps_updated_at(
    api: httpx.Client,
    served: SQLiteDriver,  # noqa: F811
) -> None:
    """AutoMem's PATCH changes only the fields given and keeps ``updated_at`` unless it is
    given; new content is embedded again (recall finds the new text)."""
    mid = store(api, "The user lives in Paris", tags=["home"], importance=0.4)
    before = served.get(mid)
    assert before is not None
    answer = api.patch(f"/memory/{mid}", json={"content": "The user moved to Lisbon"})
    assert answer.json() == {"status": "success", "memory_id": mid}
    after = served.get(mid)
    assert after is not None
    assert (after.content, after.tags, after.importance) == (
        "The user moved to Lisbon",
        ["home"],
        0.4,
    )
    assert after.updated_at == before.updated_at
    top = api.get("/recall", params={"query": "The user moved to Lisbon", "limit": 1}).json()
    assert top["results"][0]["id"] == mid and top["results"][0]["score"] == pytest.approx(1.0)
    api.patch(f"/memory/{mid}", json={"updated_at": "2030-01-01T00:00:00Z", "tags": "a, b"})
    later = served.get(mid)
    assert later is not None and later.tags == ["a", "b"]
    assert later.updated_at == datetime(2030, 1, 1, tzinfo=timezone.utc)
    assert "'importance' must be" in error_of(
        api.patch(f"/memory/{mid}", json={"importance": 9}), 400
    )
    assert error_of(api.patch(f"/memory/{mid}", json={"content": ""}), 400)
    assert "timestamp" in error_of(
        api.patch(f"/memory/{mid}", json={"timestamp": "2020-01-01T00:00:00Z"}), 400
    )
    missing = "3f2b8c1e-4d5a-4b6c-9d7e-8f9a0b1c2d3e"
    assert error_of(api.patch(f"/memory/{missing}", json={"content": "x"}), 404) == (
        "Memory not found"
    )
    assert api.delete(f"/memory/{mid}").json() == {"status": "success", "memory_id": mid}
    assert error_of(api.delete(f"/memory/{mid}"), 404) == "Memory not found"


# ---------------------------------------------------------------------- tags
def test_recall_tag_matching_follows_automem(api: httpx.Client) -> None:
    """AutoMem matches tags case-insensitively. ``tag_match=prefix`` (its default) matches
    whole ``:``/``/``-separated leading parts (``project`` and ``project:alpha`` match
    ``project:alpha/beta``; ``proj`` does not); ``exact`` matches whole tags. ``exclude_tags``
    drops any memory with a tag that *starts with* an excluded one (``red`` drops ``reddish``
    too). The automem driver never relies on these: it filters exactly itself."""
    store(api, "project note", tags=["project:alpha/beta"])
    store(api, "red note", tags=["Red"])
    store(api, "reddish note", tags=["reddish", "project:gamma"])
    store(api, "plain note")

    def found(**params: Any) -> list[str]:
        response = api.get("/recall", params={"limit": 10, **params})
        assert response.status_code == 200, response.text
        return contents(response.json())

    assert found(tags="project") == ["project note", "reddish note"]
    assert found(tags="project:alpha") == ["project note"]
    assert found(tags="project:alpha:beta") == ["project note"]
    assert found(tags="proj") == []
    assert found(tags="project", tag_match="exact") == []
    assert found(tags="project:alpha/beta", tag_match="exact") == ["project note"]
    assert found(tags="RED", tag_match="exact") == ["red note"]
    assert found(tags=["red", "reddish"], tag_match="exact") == ["red note", "reddish note"]
    assert found(tags=["reddish", "project"], tag_mode="all") == ["reddish note"]
    assert found(exclude_tags="red") == ["plain note", "project note"]
    assert found(exclude_tags="project,red") == ["plain note"]
    assert found(query="note", tags="red", tag_match="exact") == ["red note"]
    by_tag = api.get("/memory/by-tag", params={"tags": "RED"}).json()
    assert [m["content"] for m in by_tag["memories"]] == ["red note"]  # exact, any case


def test_by_tag_pages_by_importance_and_deletes(api: httpx.Client, served: SQLiteDriver) -> None:  # noqa: F811
    """``/memory/by-tag``: any of the tags, most important first, ``limit`` (1 to 200) and
    ``offset`` pages with ``has_more``; DELETE removes every match and counts them."""
    for i in range(5):
        store(api, f"tagged {i}", tags=["t"], importance=i / 10)
    store(api, "other", tags=["u"])
    first = api.get("/memory/by-tag", params={"tags": "t", "limit": 2}).json()
    assert [m["content"] for m in first["memories"]] == ["tagged 4", "tagged 3"]
    assert (first["count"], first["has_more"], first["limit"], first["offset"]) == (2, True, 2, 0)
    last = api.get("/memory/by-tag", params={"tags": "t", "limit": 2, "offset": 4}).json()
    assert [m["content"] for m in last["memories"]] == ["tagged 0"] and not last["has_more"]
    clamped = api.get("/memory/by-tag", params={"tags": "t", "limit": 999}).json()
    assert clamped["limit"] == 200
    assert error_of(api.get("/memory/by-tag"), 400) == "'tags' query parameter is required"
    gone = api.delete("/memory/by-tag", params={"tags": ["t", "nothing"]}).json()
    assert gone == {"status": "success", "tags": ["t", "nothing"], "deleted_count": 5}
    assert [m.content for m in served.iter_memories()] == ["other"]


# ---------------------------------------------------------------------- recall
def test_recall_time_query_and_window(api: httpx.Client) -> None:
    """``time_query`` phrases (``last 24 hours``, ``last N days``, ``today``, ...) and
    ``start``/``end`` (both inclusive, as in AutoMem) filter on creation time; a time window
    without a query lists newest first (AutoMem switches ``sort`` to ``time_desc``)."""
    times = {
        "two hours ago": NOW - timedelta(hours=2),
        "three days ago": NOW - timedelta(days=3),
        "forty days ago": NOW - timedelta(days=40),
    }
    for content, moment in times.items():
        store(api, content, timestamp=wire.iso(moment))

    def found(**params: Any) -> dict[str, Any]:
        response = api.get("/recall", params={"limit": 10, **params})
        assert response.status_code == 200, response.text
        return response.json()

    recent = found(time_query="last 24 hours")
    assert contents(recent) == ["two hours ago"]
    assert recent["sort"] == "time_desc" and recent["time_window"]["start"] is not None
    assert contents(found(time_query="last 7 days")) == ["three days ago", "two hours ago"]
    assert contents(found(time_query="past 60 days")) == sorted(times)
    assert contents(found(time_query="next century")) == sorted(times)  # unknown: no window
    week = found(time_query="last 7 days", sort="time_asc")
    assert [r["memory"]["content"] for r in week["results"]] == ["three days ago", "two hours ago"]
    exact = wire.iso(times["three days ago"])
    assert contents(found(start=exact, end=exact)) == ["three days ago"]
    assert "Invalid start time" in error_of(api.get("/recall", params={"start": "then"}), 400)
    assert "state_mode" in error_of(api.get("/recall", params={"state_mode": "past"}), 400)


def test_recall_ranks_by_cosine_and_clamps_limit(api: httpx.Client, served: SQLiteDriver) -> None:  # noqa: F811
    """With a query (or an ``embedding``), recall ranks by the store's cosine similarity;
    ``limit`` defaults to 5 and is at most 100 (AutoMem's RECALL_MAX_LIMIT)."""
    for i in range(120):
        store(api, f"alpha note number {i}")
    body = api.get("/recall", params={"query": "alpha note number 7"}).json()
    assert body["count"] == 5 and body["results"][0]["memory"]["content"] == "alpha note number 7"
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True) and scores[0] == pytest.approx(1.0)
    assert api.get("/recall", params={"query": "alpha", "limit": 1000}).json()["count"] == 100
    assert api.get("/recall", params={"query": "alpha", "limit": "many"}).json()["count"] == 5
    vector = served.embedder.embed_query("alpha note number 9")
    by_vector = api.get(
        "/recall", params={"embedding": ",".join(str(float(x)) for x in vector), "limit": 1}
    ).json()
    assert by_vector["results"][0]["memory"]["content"] == "alpha note number 9"
    bad = api.get("/recall", params={"embedding": "1,2,3"})
    assert "exactly 256 values" in error_of(bad, 400)


# ---------------------------------------------------------------------- associations
def test_associate_and_related_like_automem(
    api: httpx.Client,
    served: SQLiteDriver,  # noqa: F811
) -> None:
    a = store(api, "moved to Lisbon", importance=0.9)
    b = store(api, "learning Portuguese", importance=0.5)
    c = store(api, "used to live in Paris", importance=0.7)
    made = api.post("/associate", json={"memory1_id": a, "memory2_id": b, "type": "leads_to"})
    assert made.status_code == 201
    assert made.json()["relation_type"] == "LEADS_TO" and made.json()["strength"] == 0.5
    api.post("/associate", json={"memory1_id": c, "memory2_id": a, "type": "OCCURRED_BEFORE"})
    assert (
        error_of(api.post("/associate", json={"memory1_id": a, "memory2_id": a}), 400)
        == "Cannot associate a memory with itself"
    )
    assert "Relation type must be one of" in error_of(
        api.post("/associate", json={"memory1_id": a, "memory2_id": b, "type": "LIKES"}), 400
    )
    assert error_of(api.post("/associate", json={"memory1_id": a}), 400) == (
        "'memory1_id' and 'memory2_id' are required"
    )
    missing = "3f2b8c1e-4d5a-4b6c-9d7e-8f9a0b1c2d3e"
    assert (
        error_of(api.post("/associate", json={"memory1_id": a, "memory2_id": missing}), 404)
        == "One or both memories do not exist"
    )
    batch = api.post(
        "/associate",
        json={"associations": [{"memory1_id": b, "memory2_id": c}, {"memory1_id": b}]},
    )
    assert batch.status_code == 207 and batch.json()["created_count"] == 1
    assert batch.json()["failed"][0]["index"] == 1
    related = api.get(f"/memories/{a}/related").json()
    # both directions, most important first, summarized as AutoMem does
    assert [m["id"] for m in related["related_memories"]] == [c, b]
    assert set(related["related_memories"][0]) <= {
        "id",
        "type",
        "timestamp",
        "importance",
        "content",
        "tags",
    }
    only = api.get(f"/memories/{a}/related", params={"relationship_types": "leads_to"}).json()
    assert [m["id"] for m in only["related_memories"]] == [b]
    deep = api.get(f"/memories/{a}/related", params={"max_depth": 2, "limit": 1}).json()
    assert deep["count"] == 1 and deep["max_depth"] == 2
    assert api.get(f"/memories/{missing}/related").json()["count"] == 0  # AutoMem: 200, empty
    links = api.get(f"/memory/{a}").json()["memory"]["metadata"]["memory_drivers"]["links"]
    made = served.related(a)[0].created_at
    assert links == [{"to": b, "type": "LEADS_TO", "strength": 0.5, "created_at": made.isoformat()}]
    # An import keeps a link's time (created_at is memory-drivers' own field of /associate).
    kept = api.post(
        "/associate",
        json={
            "memory1_id": c,
            "memory2_id": a,
            "type": "PART_OF",
            "created_at": "2020-01-02T03:04:05.678901Z",
        },
    )
    assert kept.status_code == 201 and kept.json()["created_at"].startswith("2020-01-02T03:04:05")
    assert [(r.memory.id, r.created_at.year) for r in served.related(c, "PART_OF")] == [(a, 2020)]
    bad = api.post("/associate", json={"memory1_id": c, "memory2_id": b, "created_at": "soon"})
    assert "created_at" in error_of(bad, 400)


# ---------------------------------------------------------------------- mapping
def test_plain_client_and_driver_share_one_store(
    api: httpx.Client,
    automem: AutoMemDriver,  # noqa: F811
    served: SQLiteDriver,  # noqa: F811
) -> None:
    """What the automem driver writes lands in the store natively (same id, user, tags,
    metadata); AutoMem clients see its plain tags and top-level metadata and may edit them;
    what they store belongs to MEMORY_SERVER_DEFAULT_USER ("automem")."""
    mine = automem.store(
        "alice",
        "Alice prefers window seats",
        "trip-1",
        ["travel"],
        {"airline": "TAP"},
        memory_type="preference",
        source="chat",
    )
    assert served.get(mine.id) == mine
    seen = api.get(f"/memory/{mine.id}").json()["memory"]
    assert seen["type"] == "Preference" and seen["metadata"]["airline"] == "TAP"
    assert "travel" in seen["tags"] and wire.user_tag("alice") in seen["tags"]
    edited = {**seen["metadata"], "deprecated": True}
    api.patch(f"/memory/{mine.id}", json={"metadata": edited, "type": "Preference"})
    again = automem.get(mine.id)
    assert again is not None and again.metadata == {"airline": "TAP", "deprecated": True}
    assert again.memory_type == "preference"
    theirs = store(api, "Team standup is at 9:30", tags=["work"], type="Insight")
    hits = automem.recall("automem", query="standup", use_vector=False)
    assert [h.memory.id for h in hits] == [theirs]
    assert hits[0].memory.memory_type == "reflection" and hits[0].memory.tags == ["work"]
    assert automem.recall("alice", query="standup", use_vector=False) == []
    assert [m.content for m in automem.iter_memories("alice")] == ["Alice prefers window seats"]


# ---------------------------------------------------------------------- the command
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening_addresses(port: int) -> set[str]:
    """The local addresses that listen on ``port`` (Linux /proc/net/tcp, hex little-endian)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


@pytest.fixture
def serve_command(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Runs ``memory-drivers serve ...`` (sqlite store in tmp, hashing embedder); stops it."""
    monkeypatch.setenv("EMBEDDING_PROVIDER", "hashing")
    monkeypatch.setenv("MEMORY_DB_URL", f"sqlite:///{clean_env}/served/memories.db")
    started: list[subprocess.Popen[str]] = []

    def run(*args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "memory_drivers", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        started.append(process)
        return process

    yield run
    for process in started:
        if process.poll() is None:
            process.terminate()
        process.communicate(timeout=20)


def wait_for(url: str, process: subprocess.Popen[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"serve exited with {process.returncode}: {process.communicate()[1]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail("serve did not answer /health in time")


@pytest.mark.slow
def test_serve_command_binds_loopback_and_checks_the_token(
    serve_command: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``memory-drivers serve --driver sqlite --port P`` listens on 127.0.0.1 only (by
    default), takes the token from MEMORY_SERVER_API_TOKEN, serves the store, and stops
    cleanly on SIGTERM."""
    port = free_port()
    monkeypatch.setenv("MEMORY_SERVER_API_TOKEN", "from-env")
    process = serve_command("serve", "--driver", "sqlite", "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    wait_for(url, process)
    if Path("/proc/net/tcp").exists():
        assert listening_addresses(port) == {"127.0.0.1"}
    assert error_of(httpx.get(f"{url}/recall"), 401) == "Unauthorized"
    headers = {"X-API-Key": "from-env"}
    made = httpx.post(f"{url}/memory", json={"content": "from the command"}, headers=headers)
    assert made.status_code == 201
    listed = httpx.get(f"{url}/recall", headers=headers).json()
    assert [r["memory"]["content"] for r in listed["results"]] == ["from the command"]
    process.terminate()
    _, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert re.search(rf"on http://127\.0\.0\.1:{port} \(token required\)", err)


@pytest.mark.slow
def test_serve_command_verbose_log_redacts_a_query_token(serve_command: Any) -> None:
    """``memory-drivers -v serve`` logs every request, with a token sent as ``?api_key=``
    replaced by ``[redacted]``: the token never reaches the log."""
    port = free_port()
    secret = "s3cret-sent-in-the-query"
    process = serve_command("-v", "serve", "--port", str(port), "--token", secret)
    url = f"http://127.0.0.1:{port}"
    wait_for(url, process)
    assert httpx.get(f"{url}/recall", params={"api_key": secret, "limit": 2}).status_code == 200
    process.terminate()
    out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert "GET /recall?api_key=[redacted]&limit=2" in out + err
    assert secret not in out + err


@pytest.mark.slow
def test_serve_command_refuses_an_open_address_without_a_token(serve_command: Any) -> None:
    process = serve_command("serve", "--host", "0.0.0.0", "--port", str(free_port()))
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "refusing to serve on 0.0.0.0 without a token" in err
