"""The conformance suite, importable by third-party drivers.

::

    from memory_drivers.testing import MemoryDriverConformance

    class TestMyDriver(MemoryDriverConformance):
        @pytest.fixture
        def driver_factory(self, tmp_path):
            def factory(*, embedder, settings):
                return MyDriver(settings, embedder=embedder)
            yield factory

Needs pytest (``pip install "memory-drivers[dev]"``).
"""

from .conformance import MemoryDriverConformance
from .embedders import FaultyEmbedder, RecordingEmbedder, default_embedder, fast_embedder
from .reference import assert_same_hits, expected_hits

__all__ = [
    "FaultyEmbedder",
    "MemoryDriverConformance",
    "RecordingEmbedder",
    "assert_same_hits",
    "default_embedder",
    "expected_hits",
    "fast_embedder",
]
