"""The conformance suite, importable by third-party drivers.

::

    from memory_drivers.testing import MemoryDriverConformance

    class TestMyDriver(MemoryDriverConformance):
        @pytest.fixture
        def driver_factory(self, tmp_path):
            def factory(*, embedder, settings):
                return MyDriver(settings, embedder=embedder)
            yield factory

The same suite through the async API: ``yield through_async(factory)``.

Needs ``pip install "memory-drivers[testing]"``: pytest, the sqlite driver (the reference the
equivalence test compares with) and the default embedding model (the ``test_semantic_*`` tests).
"""

import pytest

# pytest rewrites the asserts of test files and conftest.py only; without this, a failing
# conformance assert would show no values ("AssertionError" and the source line). It must run
# before the modules are imported, so it comes before the imports below.
pytest.register_assert_rewrite(
    *(f"{__name__}.{module}" for module in ("conformance", "embedders", "reference"))
)

from .conformance import MemoryDriverConformance  # noqa: E402
from .embedders import (  # noqa: E402
    FaultyEmbedder,
    RecordingEmbedder,
    default_embedder,
    fast_embedder,
)
from .reference import assert_same_hits, expected_hits  # noqa: E402
from .through_async import through_async  # noqa: E402

__all__ = [
    "FaultyEmbedder",
    "MemoryDriverConformance",
    "RecordingEmbedder",
    "assert_same_hits",
    "default_embedder",
    "expected_hits",
    "fast_embedder",
    "through_async",
]
