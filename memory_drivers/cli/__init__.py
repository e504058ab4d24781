"""The ``memory-drivers`` command: store, recall, inspect and maintain a memory store.

``memory-drivers --help`` lists every command; ``python -m memory_drivers`` is the same program.
The store is the configured one (environment and ``.env``, see ``.env.example``); ``--driver``
picks another driver. Every command prints human-readable text, or JSON with ``--json``;
errors go to stderr, with ``--json`` as one JSON object (see :mod:`.output`). ``--version``
prints the version.

Exit codes: 0 success, 1 failure (not found, backend unavailable, unhealthy store, ...),
2 invalid arguments or configuration (including a store made by another embedder).

Layout: :mod:`.main` builds the parser from one module per command group (``memories``,
``transfer``, ``knowledge``, ``maintenance``, ``serve``, ``consolidate``, ``bench``), each adding
its own subcommands; :mod:`.output` holds everything about output, ``--json``, progress bars and
errors; :mod:`.session` what a command works with (settings, the driver, its inputs).
"""

from __future__ import annotations

from .main import build_parser, main
from .session import open_driver

__all__ = ["build_parser", "main", "open_driver"]
