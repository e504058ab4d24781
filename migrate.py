"""``python migrate.py [upgrade|status|rollback|fresh]``: the same as ``memory-drivers migrate``."""

from memory_drivers.sql.migrate import main

raise SystemExit(main())
