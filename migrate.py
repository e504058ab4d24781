#!/usr/bin/env python
"""Create or update the memory-drivers schema.

    python migrate.py            apply pending migrations
    python migrate.py status     show the current revision and what is pending
    python migrate.py rollback   undo the last migration (--steps N for more)
    python migrate.py fresh      drop everything and recreate (asks; --yes to skip)

The database is the configured driver's (MEMORY_DB_URL for sqlite), or --url.
"""

import sys

from memory_drivers.sql.migrations import main

if __name__ == "__main__":
    sys.exit(main())
