"""``python migrate.py [upgrade|status|rollback|fresh]`` in a checkout: the same command as
``memory-drivers migrate`` (the documented way; this file is not in the wheel)."""

from memory_drivers.sql.migrate import main

raise SystemExit(main(prog="python migrate.py"))
