"""Talk to `memory-drivers mcp` with the MCP SDK's own client, as a desktop assistant would.

    pip install "memory-drivers[sqlite,embeddings,mcp]"
    python examples/mcp_client.py

The client starts `memory-drivers mcp --user-id alice` as a subprocess over stdio (the way
Claude Desktop and other MCP clients start it), lists the tools, stores two memories and
recalls one. Runs offline; the store is a fresh SQLite file in a temporary directory.
"""

from __future__ import annotations

import sys
import tempfile

import anyio
from mcp import Client, StdioServerParameters


async def main(directory: str) -> None:
    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "memory_drivers", "mcp", "--user-id", "alice"],
        env={"MEMORY_DB_URL": f"sqlite:///{directory}/memories.db"},
        cwd=directory,
    )
    async with Client(server) as client:
        tools = (await client.list_tools()).tools
        print("tools:", ", ".join(tool.name for tool in tools))
        for text in ("Alice's favourite drink is oolong tea", "Alice runs every Sunday"):
            await client.call_tool("store_memory", {"content": text, "tags": ["profile"]})
        result = await client.call_tool(
            "recall_memories", {"query": "What does Alice drink?", "top_k": 1}
        )
        for hit in result.structured_content["result"]:
            print(f"recalled: {hit['score']:.3f} {hit['memory']['content']}")
        failed = await client.call_tool("store_memory", {"content": "x", "importance": 2})
        print("an error comes back as a tool error:", failed.content[0].text)


with tempfile.TemporaryDirectory() as directory:
    anyio.run(main, directory)
