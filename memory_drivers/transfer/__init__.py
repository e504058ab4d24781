"""Moving memories between stores: a versioned export format, export, import and copy.

::

    from memory_drivers import get_memory_driver
    from memory_drivers.transfer import copy_store, export_store, import_store, open_location

    export_store(get_memory_driver(), "backup.jsonl.gz")            # everything, gzipped
    import_store(get_memory_driver("pgvector"), "backup.jsonl.gz")  # idempotent, resumable
    with open_location("sqlite:///old.db") as old, open_location("pgvector") as new:
        copy_store(old, new)

The format is specified in docs/portability.md and :mod:`.format`.
"""

from __future__ import annotations

from .core import (
    TransferResult,
    copy_store,
    export_records,
    export_store,
    import_records,
    import_store,
)
from .format import FORMAT, VERSION, read_records
from .locations import location_settings, open_location

__all__ = [
    "FORMAT",
    "VERSION",
    "TransferResult",
    "copy_store",
    "export_records",
    "export_store",
    "import_records",
    "import_store",
    "location_settings",
    "open_location",
    "read_records",
]
