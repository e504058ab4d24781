"""``memory-drivers mcp``: the memory API as Model Context Protocol tools, on any driver.

::

    memory-drivers mcp --user-id alice                      # stdio, for a desktop MCP client
    memory-drivers mcp --transport http --token s3cret      # streamable HTTP on 127.0.0.1:8002/mcp

Python::

    from memory_drivers import get_memory_driver
    from memory_drivers.mcp import create_server
    server = create_server(get_memory_driver(), user_id="alice")   # an mcp MCPServer
    server.run("stdio")

The tools (:mod:`.tools`) are thin functions over the public API; the user scope is fixed per
server (``user_id``) unless ``multi_user=True`` lets the client pass ``user_id`` to every memory
tool. Needs ``pip install "memory-drivers[mcp]"`` (the official ``mcp`` SDK). See docs/mcp.md.
"""

from __future__ import annotations

import hmac
from typing import Any

from ..base import BaseMemoryDriver
from ..errors import MissingDependencyError, ValidationError
from ..validation import identifier

try:
    from mcp.server.auth.provider import AccessToken
    from mcp.server.auth.settings import AuthSettings
    from mcp.server.mcpserver import MCPServer
    from mcp.types import ToolAnnotations
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise MissingDependencyError(
        f"memory-drivers mcp needs the MCP SDK ({exc}). "
        'Install with: pip install "memory-drivers[mcp]"'
    ) from exc

from .tools import MemoryTools, bind_user

__all__ = ["INSTRUCTIONS", "MemoryTools", "StaticTokenVerifier", "create_server"]

#: What the server tells clients about itself (shown to the model by most clients).
INSTRUCTIONS = (
    "Long-term memory. Store what is worth remembering across conversations with store_memory "
    "(facts, preferences, events, in full sentences); before answering, recall_memories with a "
    "question or keywords. Memories are private to one user; global knowledge "
    "(store_knowledge, search_knowledge) is shared by every user."
)


class StaticTokenVerifier:
    """The SDK's ``TokenVerifier`` for one shared bearer token, compared in constant time."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def verify_token(self, token: str) -> AccessToken | None:
        if not hmac.compare_digest(token.encode(), self._token):
            return None
        return AccessToken(token=token, client_id="memory-drivers", scopes=[])


def create_server(
    driver: BaseMemoryDriver,
    *,
    user_id: str | None = None,
    multi_user: bool = False,
    api_token: str | None = None,
    url: str = "http://127.0.0.1:8002",
    log_level: str = "WARNING",
) -> MCPServer[Any]:
    """An MCP server whose tools read and write ``driver``'s store.

    Exactly one of ``user_id`` (every memory tool acts for that user) and ``multi_user=True``
    (every memory tool takes a ``user_id`` argument) is required. ``api_token``: the bearer
    token HTTP clients must send (None: no check; stdio never checks one). ``url``: where the
    server is reached over HTTP (the token's issuer in the SDK's auth settings). The driver
    stays open; the caller closes it.
    """
    if multi_user and user_id is not None:
        raise ValidationError(
            "give either a user_id (one user per server) or multi_user=True (the client passes "
            "user_id), not both"
        )
    if not multi_user:
        if user_id is None:
            raise ValidationError(
                "the MCP server needs the user whose memories it serves: --user-id or "
                "MCP_USER_ID, or --multi-user to let the client pass user_id"
            )
        user_id = identifier(user_id, "user_id")
    auth: dict[str, Any] = {}
    if api_token:
        auth = {
            "token_verifier": StaticTokenVerifier(api_token),
            "auth": AuthSettings(issuer_url=url, resource_server_url=None),  # type: ignore[arg-type]
        }
    server: MCPServer[Any] = MCPServer(
        "memory-drivers",
        instructions=INSTRUCTIONS,
        log_level=log_level.upper(),  # type: ignore[arg-type]
        **auth,
    )
    tools = MemoryTools(driver)
    for name, fn in zip(tools.READ_ONLY, tools.functions(), strict=True):
        read_only = tools.READ_ONLY[name]
        server.add_tool(
            fn if user_id is None else bind_user(fn, user_id),
            name=name,
            annotations=ToolAnnotations(
                read_only_hint=read_only,
                destructive_hint=None if read_only else name in tools.DESTRUCTIVE,
                open_world_hint=False,
            ),
        )
    return server
