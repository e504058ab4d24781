"""Agent frameworks over any driver: front-ends that translate a framework's interface into
calls of the public API and hold no rule of their own.

- :mod:`.langchain`: ``MemoryVectorStore`` (a LangChain ``VectorStore``), ``MemoryRetriever``
  (a ``BaseRetriever``), and embeddings in both directions (``LangChainEmbedder``,
  ``DriverEmbeddings``);
- :mod:`.langgraph`: ``MemoryStore``, a LangGraph ``BaseStore`` (an agent's long-term store).

Both need ``pip install "memory-drivers[langchain]"``; this package imports neither. See
docs/integrations.md.
"""
