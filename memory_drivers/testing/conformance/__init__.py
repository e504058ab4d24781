"""The conformance suite every driver passes in full.

Subclass :class:`MemoryDriverConformance` in a test module and supply one fixture,
``driver_factory``: a callable ``factory(*, embedder, settings) -> driver`` that opens **the same
store** each time it is called within a test (so close-and-reopen can be tested), empty at the
first call, and that cleans up after the test::

    import pytest
    from memory_drivers.testing import MemoryDriverConformance

    class TestMyDriver(MemoryDriverConformance):
        @pytest.fixture
        def driver_factory(self, tmp_path):
            def factory(*, embedder, settings):
                return MyDriver(settings.replace(my_path=str(tmp_path)), embedder=embedder)
            yield factory

Every test's docstring says what a failure usually means. Most tests use a fast deterministic
embedder; the ``test_semantic_*`` tests use the real default model.

Layout: the suite is one class made of one mixin per area (:mod:`.storage`, :mod:`.recall`,
:mod:`.ranking`, :mod:`.knowledge`, :mod:`.associations`, :mod:`.maintenance`, :mod:`.bad_input`,
:mod:`.limits`, :mod:`.differential`, :mod:`.equivalence`, :mod:`.transfer`), each built on
:class:`~.base.ConformanceBase` (fixtures and helpers).
"""

from __future__ import annotations

from .associations import AssociationTests
from .bad_input import BadInputTests
from .differential import DifferentialTests
from .equivalence import EquivalenceTests
from .knowledge import KnowledgeTests
from .limits import LimitTests
from .maintenance import MaintenanceTests
from .ranking import RankingTests
from .recall import RecallTests
from .storage import StorageTests
from .transfer import TransferTests

__all__ = ["MemoryDriverConformance"]


# pytest collects inherited tests base class first, so the areas are listed last to first: the
# tests run in the order of the areas above.
class MemoryDriverConformance(
    TransferTests,
    EquivalenceTests,
    DifferentialTests,
    LimitTests,
    BadInputTests,
    MaintenanceTests,
    AssociationTests,
    KnowledgeTests,
    RankingTests,
    RecallTests,
    StorageTests,
):
    """The shared semantics, as tests. Subclasses supply ``driver_factory`` (see module doc)."""
