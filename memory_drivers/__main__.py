"""``python -m memory_drivers``: the ``memory-drivers`` command (see :mod:`memory_drivers.cli`)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
