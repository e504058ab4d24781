"""What one command works with: the settings, the driver (opened on first use), the output mode,
and the readers of its inputs (files, stdin, JSON options)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tqdm import tqdm

from ..base import BaseMemoryDriver
from ..config import Settings, get_settings
from ..errors import ValidationError
from ..manager import MemoryDriverManager
from .output import CliError, progress_bar

__all__ = ["Session", "json_object", "open_driver", "read_content", "read_text"]


def open_driver(
    name: str, settings: Settings, *, allow_embedder_mismatch: bool = False
) -> BaseMemoryDriver:
    """A new driver instance named ``name`` (the caller closes it).

    ``allow_embedder_mismatch=True`` opens a store whose vectors were made by another embedder,
    for re-embedding; it is passed on to driver classes whose constructor accepts it.
    """
    if not allow_embedder_mismatch:
        return MemoryDriverManager.create(name, settings)
    return MemoryDriverManager.create(name, settings, allow_embedder_mismatch=True)


class Session:
    """What one command works with: settings, the driver (opened on first use), output mode."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.json: bool = bool(getattr(args, "json", False))
        self._settings: Settings | None = None
        self._driver: BaseMemoryDriver | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = get_settings()
        return self._settings

    @property
    def driver_name(self) -> str:
        return str(self.args.driver or self.settings.memory_driver)

    @property
    def driver(self) -> BaseMemoryDriver:
        if self._driver is None:
            self._driver = open_driver(self.driver_name, self.settings)
        return self._driver

    def open_for_reembed(self) -> BaseMemoryDriver:
        """The driver, opened even though its store was made by another embedder."""
        if self._driver is None:
            self._driver = open_driver(
                self.driver_name, self.settings, allow_embedder_mismatch=True
            )
        return self._driver

    @property
    def show_progress(self) -> bool:
        """``--progress`` / ``--no-progress``; by default, whether stderr is a terminal."""
        show = self.args.progress
        return sys.stderr.isatty() if show is None else bool(show)

    def progress(self, total: int | None, desc: str, unit: str = "item") -> tqdm:
        """A progress bar on stderr (shown on a terminal, or always with ``--progress``)."""
        return progress_bar(self.show_progress, total, desc, unit)

    def close(self) -> None:
        if self._driver is not None:
            driver, self._driver = self._driver, None
            driver.close()


# ---------------------------------------------------------------------- inputs
def read_text(path: str, what: str) -> str:
    """The text of ``path`` ("-" is stdin)."""
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except UnicodeDecodeError as exc:
        raise CliError(f"cannot read {what} {path!r}: it is not UTF-8 text ({exc.reason})") from exc
    except OSError as exc:
        raise CliError(f"cannot read {what} {path!r}: {exc.strerror or exc}") from exc


def json_object(text: str | None, option: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"{option} is not valid JSON ({exc.msg}): {text!r}") from None
    if not isinstance(value, dict):
        raise ValidationError(
            f'{option} must be a JSON object such as \'{{"key": "value"}}\', got {text!r}'
        )
    return value


def read_content(value: str) -> str:
    """A CONTENT argument: "-" reads stdin (without its final line break)."""
    if value == "-":
        return sys.stdin.read().rstrip("\r\n")
    return value
