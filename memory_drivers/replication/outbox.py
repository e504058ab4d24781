"""A durable, ordered outbox of write primitives, in a local SQLite file.

The replicated driver appends every write its primary acknowledged (the primitive's name and
its validated arguments, vectors included) and delivers the entries to each replica in order,
keeping one cursor per replica; an entry every replica has is deleted. Entries are JSON, vectors
float32 in base64 (exact), so a replica gets what the primary got, nothing re-embedded.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..base import KnowledgeRecord, MemoryRecord
from ..errors import BackendUnavailableError
from ..models import Association, KnowledgeChunk, Memory
from ..transfer.format import decode_vector, encode_vector
from ..validation import timestamp

__all__ = ["Outbox", "decode", "encode"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL,
                                   payload TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cursors (replica TEXT PRIMARY KEY, seq INTEGER NOT NULL);
"""


def _vector(value: np.ndarray | None) -> str | None:
    return None if value is None else encode_vector(value)


def encode(op: str, args: Mapping[str, Any]) -> str:
    """The JSON of one primitive call (``args`` as the primitive takes them)."""
    out: dict[str, Any] = {}
    for key, value in args.items():
        if key == "records":
            out[key] = [
                {
                    "item": (r.memory if isinstance(r, MemoryRecord) else r.chunk).model_dump(
                        mode="json"
                    ),
                    "vector": _vector(r.vector),
                    "terms": r.terms,
                }
                for r in value
            ]
        elif key == "association":
            out[key] = value.model_dump(mode="json")
        elif key in ("vector",):
            out[key] = _vector(value)
        elif key == "vectors":
            out[key] = [encode_vector(v) for v in value]
        elif key == "changes":
            out[key] = {
                k: v.isoformat() if isinstance(v, datetime) else v for k, v in value.items()
            }
        else:
            out[key] = value
    return json.dumps(out, ensure_ascii=False)


def decode(op: str, text: str) -> dict[str, Any]:
    """The arguments of one primitive call, as :func:`encode` wrote them."""
    raw = json.loads(text)
    args: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "records":
            kind = MemoryRecord if op == "insert_memories" else KnowledgeRecord
            model = Memory if op == "insert_memories" else KnowledgeChunk
            args[key] = [
                kind(
                    model.model_validate(r["item"]),  # type: ignore[arg-type]
                    decode_vector(r["vector"], "outbox"),
                    r["terms"],
                )
                for r in value
            ]
        elif key == "association":
            args[key] = Association.model_validate(value)
        elif key == "vector":
            args[key] = None if value is None else decode_vector(value, "outbox")
        elif key == "vectors":
            args[key] = np.stack([decode_vector(v, "outbox") for v in value])
        elif key == "changes":
            args[key] = {k: timestamp(v, k) if k == "updated_at" else v for k, v in value.items()}
        else:
            args[key] = value
    return args


class Outbox:
    """The outbox file: ``append`` after the primary acknowledged a write, ``pending`` and
    ``advance`` per replica. Safe to use from several threads."""

    def __init__(self, path: Path, replicas: Sequence[str]) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise BackendUnavailableError(
                f"cannot open the replication outbox {str(path)!r}: {exc}"
            ) from exc
        self._lock = threading.Lock()
        with self._lock:
            last = self._last()
            for name in replicas:
                # A new replica starts at the end: what came before is for `reconcile`.
                self._db.execute(
                    "INSERT OR IGNORE INTO cursors (replica, seq) VALUES (?, ?)", (name, last)
                )

    def _last(self) -> int:
        row = self._db.execute("SELECT MAX(seq) FROM outbox").fetchone()
        stored = self._db.execute("SELECT MAX(seq) FROM cursors").fetchone()
        return max(row[0] or 0, stored[0] or 0)

    def append(self, op: str, args: Mapping[str, Any]) -> int:
        payload = encode(op, args)
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO outbox (op, payload) VALUES (?, ?)", (op, payload)
            )
            return int(cursor.lastrowid or 0)

    def cursor(self, replica: str) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT seq FROM cursors WHERE replica = ?", (replica,)
            ).fetchone()
        return int(row[0]) if row else 0

    def last(self) -> int:
        with self._lock:
            return self._last()

    def pending(self, replica: str, limit: int = 100) -> list[tuple[int, str, str]]:
        """The next entries ``replica`` has not received, oldest first."""
        after = self.cursor(replica)
        with self._lock:
            return list(
                self._db.execute(
                    "SELECT seq, op, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after, limit),
                )
            )

    def advance(self, replica: str, seq: int) -> None:
        """``replica`` has every entry up to ``seq``; entries all replicas have are dropped."""
        with self._lock:
            self._db.execute("UPDATE cursors SET seq = ? WHERE replica = ?", (seq, replica))
            low = self._db.execute("SELECT MIN(seq) FROM cursors").fetchone()[0]
            if low is not None:
                self._db.execute("DELETE FROM outbox WHERE seq <= ?", (low,))

    def lag(self, replica: str) -> int:
        """How many entries ``replica`` has not received."""
        after = self.cursor(replica)
        with self._lock:
            return int(
                self._db.execute("SELECT COUNT(*) FROM outbox WHERE seq > ?", (after,)).fetchone()[
                    0
                ]
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
