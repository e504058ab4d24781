"""``memory-drivers mcp`` tested with the ``mcp`` package's own client: over stdio (the client
starts the command as a subprocess) and over streamable HTTP on loopback (with and without the
bearer token), against a real SQLite store."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from conftest import require_module

from memory_drivers.cli import main
from memory_drivers.config import build_settings
from memory_drivers.drivers.sqlite import SQLiteDriver

mcp = require_module("mcp", 'pip install "memory-drivers[mcp]"')

from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

pytestmark = pytest.mark.usefixtures("clean_env")

MEMORY_TOOLS = {
    "store_memory",
    "recall_memories",
    "get_memory",
    "update_memory",
    "delete_memory",
    "associate_memories",
    "related_memories",
}
ALL_TOOLS = MEMORY_TOOLS | {"search_knowledge", "store_knowledge", "health"}


def store_env(directory: Path) -> dict[str, str]:
    """The environment of a server whose store is a SQLite file in ``directory`` (the hashing
    embedder: the protocol is under test here, not the model)."""
    return {
        "MEMORY_DRIVER": "sqlite",
        "MEMORY_DB_URL": f"sqlite:///{directory}/memories.db",
        "EMBEDDING_PROVIDER": "hashing",
    }


def open_store(directory: Path) -> SQLiteDriver:
    """The same store, opened in this process (to seed it or to check what the server wrote)."""
    settings = build_settings(
        memory_db_url=f"sqlite:///{directory}/memories.db", embedding_provider="hashing"
    )
    return SQLiteDriver(settings)


def stdio(directory: Path, *args: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "memory_drivers", "mcp", *args],
        env=store_env(directory),
        cwd=str(directory),
    )


def structured(result: Any) -> Any:
    assert not result.is_error, result.content
    content = result.structured_content
    return content["result"] if set(content) == {"result"} else content


def error_text(result: Any) -> str:
    assert result.is_error, result
    return " ".join(block.text for block in result.content)


def run(coroutine_function: Any) -> Any:
    return anyio.run(coroutine_function)


# ---------------------------------------------------------------------- stdio, one user
def test_stdio_tools_act_for_the_fixed_user(tmp_path: Path) -> None:
    """The tools over stdio: listed with schemas without user_id, every memory tool scoped to
    --user-id, filters and search modes reaching recall, errors with the driver's message."""
    with open_store(tmp_path) as seed:
        bobs = seed.store("bob", "Bob keeps bees in the garden")

    async def session() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        async with Client(stdio(tmp_path, "--user-id", "alice")) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            seen["tools"] = tools
            tea = structured(
                await client.call_tool(
                    "store_memory",
                    {
                        "content": "Alice drinks green tea every morning",
                        "tags": ["food"],
                        "metadata": {"source": "chat"},
                        "importance": 0.9,
                    },
                )
            )
            hike = structured(
                await client.call_tool(
                    "store_memory", {"content": "Alice went hiking in the Alps", "tags": ["trip"]}
                )
            )
            seen["tea"], seen["hike"] = tea, hike
            seen["recall"] = structured(
                await client.call_tool("recall_memories", {"query": "green tea", "top_k": 5})
            )
            seen["recall_tagged"] = structured(
                await client.call_tool(
                    "recall_memories", {"query": "green tea", "tags": ["trip"], "search": "vector"}
                )
            )
            seen["recall_keyword"] = structured(
                await client.call_tool(
                    "recall_memories", {"query": "hiking", "search": "keyword", "explain": True}
                )
            )
            seen["recent"] = structured(await client.call_tool("recall_memories", {}))
            seen["get"] = structured(await client.call_tool("get_memory", {"memory_id": tea["id"]}))
            seen["get_bobs"] = structured(
                await client.call_tool("get_memory", {"memory_id": bobs.id})
            )
            seen["update"] = structured(
                await client.call_tool(
                    "update_memory", {"memory_id": tea["id"], "tags": ["food", "morning"]}
                )
            )
            seen["associate"] = structured(
                await client.call_tool(
                    "associate_memories",
                    {
                        "memory_id": tea["id"],
                        "related_memory_id": hike["id"],
                        "relationship_type": "occurred_before",
                        "strength": 0.7,
                    },
                )
            )
            seen["related"] = structured(
                await client.call_tool("related_memories", {"memory_id": hike["id"]})
            )
            seen["bad_importance"] = error_text(
                await client.call_tool("store_memory", {"content": "x y", "importance": 5})
            )
            seen["bad_filter"] = error_text(
                await client.call_tool("recall_memories", {"query": "tea", "top_k": 0})
            )
            seen["update_bobs"] = error_text(
                await client.call_tool("update_memory", {"memory_id": bobs.id, "content": "mine"})
            )
            seen["knowledge"] = structured(
                await client.call_tool(
                    "store_knowledge",
                    {"content": "The office opens at nine.", "category": "handbook"},
                )
            )
            seen["knowledge_hits"] = structured(
                await client.call_tool("search_knowledge", {"query": "when does the office open"})
            )
            seen["health"] = structured(await client.call_tool("health", {}))
            seen["delete"] = structured(
                await client.call_tool("delete_memory", {"memory_id": hike["id"]})
            )
            seen["delete_bobs"] = structured(
                await client.call_tool("delete_memory", {"memory_id": bobs.id})
            )
        return seen

    seen = run(session)
    tools = seen["tools"]
    assert set(tools) == ALL_TOOLS
    for name in ALL_TOOLS:
        assert tools[name].description, name
        assert "user_id" not in tools[name].input_schema.get("properties", {}), name
    recall_schema = tools["recall_memories"].input_schema["properties"]
    assert {"query", "top_k", "search", "tags", "tag_mode", "since", "metadata"} <= set(
        recall_schema
    )
    assert tools["store_memory"].input_schema["required"] == ["content"]
    assert tools["recall_memories"].annotations.read_only_hint is True
    assert tools["delete_memory"].annotations.destructive_hint is True

    tea, hike = seen["tea"], seen["hike"]
    assert tea["user_id"] == "alice" and tea["tags"] == ["food"] and tea["importance"] == 0.9
    assert tea["metadata"] == {"source": "chat"}
    assert seen["recall"][0]["memory"]["id"] == tea["id"]
    assert [h["memory"]["id"] for h in seen["recall_tagged"]] == [hike["id"]]
    assert [h["memory"]["id"] for h in seen["recall_keyword"]] == [hike["id"]]
    assert seen["recall_keyword"][0]["explanation"] is not None
    assert seen["recall"][0]["explanation"] is None
    assert [h["memory"]["id"] for h in seen["recent"]] == [hike["id"], tea["id"]]
    assert all(h["score"] is None for h in seen["recent"])
    assert seen["get"]["content"] == "Alice drinks green tea every morning"
    assert seen["get_bobs"] is None  # another user's memory is a missing one
    assert seen["update"]["tags"] == ["food", "morning"]
    assert seen["associate"]["relationship_type"] == "OCCURRED_BEFORE"
    assert [(r["memory"]["id"], r["direction"]) for r in seen["related"]] == [
        (tea["id"], "incoming")
    ]
    assert "ValidationError: importance must be from 0 to 1, got 5" in seen["bad_importance"]
    assert "ValidationError: top_k must be >= 1, got 0" in seen["bad_filter"]
    assert f"NotFoundError: no memory {bobs.id} for user 'alice'" in seen["update_bobs"]
    assert seen["knowledge"]["chunks"] == 1 and seen["knowledge"]["category"] == "handbook"
    assert seen["knowledge_hits"][0]["chunk"]["content"] == "The office opens at nine."
    assert seen["health"]["status"] == "ok" and seen["health"]["driver"] == "sqlite"
    assert seen["delete"] is True and seen["delete_bobs"] is False

    with open_store(tmp_path) as check:  # what the server wrote is in the store
        assert [m.content for m in check.iter_memories("alice")] == [
            "Alice drinks green tea every morning"
        ]
        assert check.get(bobs.id) is not None
        assert check.get(tea["id"]).tags == ["food", "morning"]


def test_stdio_multi_user_takes_user_id(tmp_path: Path) -> None:
    """With --multi-user every memory tool requires user_id, and users stay apart."""

    async def session() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        async with Client(stdio(tmp_path, "--multi-user")) as client:
            seen["tools"] = {tool.name: tool for tool in (await client.list_tools()).tools}
            await client.call_tool("store_memory", {"user_id": "ann", "content": "Ann likes jazz"})
            await client.call_tool("store_memory", {"user_id": "ben", "content": "Ben likes jazz"})
            seen["ann"] = structured(
                await client.call_tool("recall_memories", {"user_id": "ann", "query": "jazz"})
            )
            seen["missing"] = error_text(
                await client.call_tool("recall_memories", {"query": "jazz"})
            )
        return seen

    seen = run(session)
    for name in MEMORY_TOOLS:
        assert "user_id" in seen["tools"][name].input_schema["required"], name
    assert "user_id" not in seen["tools"]["health"].input_schema.get("properties", {})
    assert [h["memory"]["content"] for h in seen["ann"]] == ["Ann likes jazz"]
    assert "user_id" in seen["missing"]


# ---------------------------------------------------------------------- the command line
def test_the_command_needs_a_user(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mcp"]) == 2
    assert "--user-id" in capsys.readouterr().err
    assert main(["mcp", "--user-id", "a", "--multi-user"]) == 2


def test_http_refuses_a_public_address_without_a_token(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["mcp", "--transport", "http", "--host", "0.0.0.0", "--user-id", "a"])
    assert code == 2
    assert "refusing to serve MCP on 0.0.0.0 without a token" in capsys.readouterr().err


# ---------------------------------------------------------------------- streamable HTTP
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[str]:
    """``memory-drivers mcp --transport http`` in a subprocess on a free loopback port, with
    the token ``s3cret``; yields the endpoint URL and stops the process afterwards."""
    port = free_port()
    log = (tmp_path / "server.log").open("wb")
    env = {**os.environ, **store_env(tmp_path), "MCP_API_TOKEN": "s3cret"}
    command = ["mcp", "--transport", "http", "--port", str(port), "--user-id", "alice"]
    process = subprocess.Popen(
        [sys.executable, "-m", "memory_drivers", *command],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited: {(tmp_path / 'server.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("the MCP server did not listen within 60 s")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(timeout=20) == 0, (tmp_path / "server.log").read_text()
        finally:
            if process.poll() is None:
                process.kill()
            log.close()


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"},
    },
}


def test_http_requires_the_bearer_token(http_server: str) -> None:
    """Without the token, or with another one, the endpoint answers 401 before any tool
    runs; the mcp client with the token gets the tools, scoped to the server's user."""
    headers = {"Accept": "application/json, text/event-stream"}
    for auth in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        answer = httpx.post(http_server, json=INITIALIZE, headers={**headers, **auth})
        assert answer.status_code == 401, auth
        assert answer.headers["www-authenticate"].startswith("Bearer")

    async def session() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        http = create_mcp_http_client(headers={"Authorization": "Bearer s3cret"})
        async with http, Client(streamable_http_client(http_server, http_client=http)) as client:
            seen["tools"] = {tool.name for tool in (await client.list_tools()).tools}
            seen["stored"] = structured(
                await client.call_tool("store_memory", {"content": "Alice reads poetry"})
            )
            seen["hits"] = structured(
                await client.call_tool("recall_memories", {"query": "poetry"})
            )
            seen["error"] = error_text(
                await client.call_tool("get_memory", {"memory_id": "not-a-uuid"})
            )
        return seen

    seen = run(session)
    assert seen["tools"] == ALL_TOOLS
    assert seen["stored"]["user_id"] == "alice"
    assert [h["memory"]["id"] for h in seen["hits"]] == [seen["stored"]["id"]]
    assert "ValidationError: memory_id 'not-a-uuid' is not a valid memory id" in seen["error"]
    json.dumps(seen["hits"])  # structured results are plain JSON
