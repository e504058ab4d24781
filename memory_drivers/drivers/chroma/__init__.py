"""The ``chroma`` driver: memories in Chroma, embedded or against a Chroma server.

Environment (embedded: a local persistent directory, no server)::

    MEMORY_DRIVER=chroma
    CHROMA_PATH=storage/chromadb
    CHROMA_COLLECTION=memories                    # a prefix: memories.u.<hash of a user>, ...
    CHROMA_KNOWLEDGE_COLLECTION=global_knowledge

or against a server (``chroma run --host 127.0.0.1 --port 8000 --path /srv/chroma``)::

    MEMORY_DRIVER=chroma
    CHROMA_URL=http://127.0.0.1:8000              # set: server mode, CHROMA_PATH is not used
    CHROMA_TIMEOUT=30.0                           # seconds per request
    CHROMA_RETRIES=3                              # retries of a failed request, with backoff

Python::

    from memory_drivers.drivers.chroma import ChromaDriver
    with ChromaDriver() as driver:                # or get_memory_driver("chroma")
        driver.store(user_id="u1", content="Likes green tea")

Install: ``pip install "memory-drivers[chroma,embeddings]"``.

Chroma never embeds anything here: every collection is opened with ``embedding_function=None``
and every write and query passes the configured embedder's vectors, so Chroma's own model is
never downloaded. Anonymized telemetry is off.

What Chroma has no notion of is encoded as metadata the driver writes (see
``docs/drivers/chroma.md``): tags as a string array, keyword terms as strings, ``created_at`` as
integer microseconds, and one typed key per scalar metadata value (``meta:number:<key>``, ...),
so that every filter is a Chroma ``where`` that selects exactly the memories the shared semantics
select. Candidates are then re-checked with :meth:`MemoryFilter.matches` before ``top_k`` is
cut. Vector search is exact up to ``CHROMA_EXACT_SEARCH_LIMIT`` memories of the user (or
filtered candidates), and above it lets Chroma's HNSW index pick the best (approximate). In
embedded mode the exact scoring runs on a cache of the collections' vectors kept in the process
(:mod:`.vectors`, ``CHROMA_VECTOR_CACHE_MB``), so a recall is one read of the best records.
Keyword and recent recall order the candidates here.

Each user's memories are a collection of their own (``<CHROMA_COLLECTION>.u.<hash>``), so a
recall reads one small collection with no ``user_id`` filter; the id directory
(``<CHROMA_COLLECTION>.ids``) says whose each memory is. Stores of the earlier layout (one
collection of every memory) are migrated in place when opened.

Layout: :mod:`.records` (how records and ``where`` filters look), :mod:`.store` (the connection,
the collections, reading and writing records), :mod:`.users` (a collection per user, the
directory, migration, re-embedding), :mod:`.keywords` (conversation context, keyword evidence),
:mod:`.vectors` (the embedded mode's vector cache), :mod:`.search` (ranking) and
:mod:`.driver` (``ChromaDriver``, the primitives), each class built on the one before.
"""

from __future__ import annotations

from .driver import ChromaDriver
from .records import ASSOCIATIONS_SUFFIX, memory_where, micros

__all__ = ["ASSOCIATIONS_SUFFIX", "ChromaDriver", "memory_where", "micros"]
