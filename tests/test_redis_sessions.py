"""Working memory (SessionMemory) against the real Redis server, each test under its own key
prefix. TTLs are fractions of a second so expiry is tested for real, quickly."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from redis_support import REDIS_URL, free_port, namespace, redis_client  # noqa: F401 - fixtures

from memory_drivers import BackendUnavailableError, ConflictError, NotFoundError, ValidationError
from memory_drivers.config import build_settings
from memory_drivers.redis import Message, Session, SessionMemory

MakeSessions = Callable[..., SessionMemory]


@pytest.fixture
def make(namespace: str) -> Iterator[MakeSessions]:  # noqa: F811
    opened: list[SessionMemory] = []

    def open_one(**options: Any) -> SessionMemory:
        options = {"prefix": namespace, **options}
        memory = SessionMemory(REDIS_URL, settings=build_settings(_env_file=None), **options)
        opened.append(memory)
        return memory

    yield open_one
    for memory in opened:
        memory.close()


@pytest.fixture
def sessions(make: MakeSessions) -> SessionMemory:
    return make(history_limit=5)


# ---------------------------------------------------------------------------------- sessions
def test_create_get_update_end(sessions: SessionMemory) -> None:
    before = datetime.now(timezone.utc)
    s = sessions.create("alice", data={"topic": "travel", "budget": 1200.5, "tags": ["a", None]})
    assert isinstance(s, Session) and len(s.session_id) == 32
    assert (s.user_id, s.data) == (
        "alice",
        {"topic": "travel", "budget": 1200.5, "tags": ["a", None]},
    )
    assert s.created_at == s.updated_at
    assert before - timedelta(seconds=2) <= s.created_at <= datetime.now(timezone.utc)
    assert s.expires_at - s.created_at == pytest.approx(timedelta(days=1), abs=timedelta(seconds=2))
    got = sessions.get(s.session_id)
    assert got is not None and got.expires_at >= s.expires_at, "get refreshes the TTL"
    assert got.model_copy(update={"expires_at": s.expires_at}) == s

    merged = sessions.update(s.session_id, {"topic": "flights", "seat": "window"}, remove=["tags"])
    assert merged.data == {"topic": "flights", "budget": 1200.5, "seat": "window"}
    assert merged.updated_at >= s.updated_at and merged.created_at == s.created_at
    replaced = sessions.update(s.session_id, {"only": {"nested": [1, 2]}}, replace=True)
    assert replaced.data == {"only": {"nested": [1, 2]}}
    assert sessions.get(s.session_id).data == {"only": {"nested": [1, 2]}}  # type: ignore[union-attr]

    assert sessions.end(s.session_id) is True
    assert sessions.get(s.session_id) is None
    assert sessions.end(s.session_id) is False
    assert s.session_id not in sessions.active_sessions()


def test_create_refuses_a_taken_id_and_bad_input(
    sessions: SessionMemory,
    redis_client: Any,  # noqa: F811
) -> None:
    sessions.create("alice", session_id="s1", data={"v": 1})
    with pytest.raises(ConflictError, match="s1"):
        sessions.create("bob", session_id="s1")
    assert sessions.get("s1").user_id == "alice"  # type: ignore[union-attr]
    for call in (
        lambda: sessions.create(""),
        lambda: sessions.create("alice", session_id=" padded"),
        lambda: sessions.create("alice", data={"when": datetime.now()}),
        lambda: sessions.create("alice", data=["not", "a", "dict"]),  # type: ignore[arg-type]
        lambda: sessions.create("alice", ttl=0),
        lambda: sessions.update("s1", remove="v"),  # type: ignore[arg-type]
        lambda: sessions.add_message("s1", "user", "   "),
        lambda: sessions.history("s1", last=0),
    ):
        with pytest.raises(ValidationError):
            call()
    assert sessions.active_sessions() == ["s1"]


def test_missing_or_expired_sessions_are_not_recreated(
    sessions: SessionMemory,
    redis_client: Any,  # noqa: F811
) -> None:
    """update, add_message and history of a session that is gone raise NotFoundError and
    leave no half-made keys behind."""
    sessions.create("alice", session_id="short", ttl=0.15)
    time.sleep(0.25)
    for call in (
        lambda: sessions.update("short", {"x": 1}),
        lambda: sessions.add_message("short", "user", "hello?"),
        lambda: sessions.history("short"),
        lambda: sessions.update("never", {"x": 1}),
    ):
        with pytest.raises(NotFoundError, match="ended or expired"):
            call()
    assert sessions.get("short") is None and sessions.touch("short") is False
    assert redis_client.exists(f"{sessions.prefix}:session:short") == 0
    assert redis_client.exists(f"{sessions.prefix}:history:short") == 0
    assert redis_client.exists(f"{sessions.prefix}:session:never") == 0


# ---------------------------------------------------------------------------------- TTL
def test_sessions_expire_and_access_refreshes_the_ttl(
    sessions: SessionMemory,
    redis_client: Any,  # noqa: F811
) -> None:
    kept = sessions.create("alice", ttl=1.0)
    dropped = sessions.create("alice", ttl=1.0)
    sessions.add_message(kept.session_id, "user", "hi")
    for access in (
        lambda: sessions.get(kept.session_id),
        lambda: sessions.touch(kept.session_id),
        lambda: sessions.update(kept.session_id, {"n": 1}),
        lambda: sessions.add_message(kept.session_id, "user", "still here"),
        lambda: sessions.history(kept.session_id),
    ):
        time.sleep(0.3)
        access()
    # 1.5 s after creation: the accessed session lives, the other one expired
    assert sessions.get(dropped.session_id) is None
    alive = sessions.get(kept.session_id)
    assert alive is not None and alive.expires_at > datetime.now(timezone.utc)
    assert [m.content for m in sessions.history(kept.session_id)] == ["hi", "still here"]
    assert sessions.active_sessions() == [kept.session_id]
    hash_key = f"{sessions.prefix}:session:{kept.session_id}"
    history_key = f"{sessions.prefix}:history:{kept.session_id}"
    assert redis_client.pexpiretime(hash_key) == redis_client.pexpiretime(history_key) > 0
    time.sleep(1.1)
    assert sessions.get(kept.session_id) is None
    assert redis_client.exists(history_key) == 0, "the history expires with its session"
    assert sessions.active_sessions() == []


def test_get_without_refresh_leaves_the_ttl(sessions: SessionMemory) -> None:
    s = sessions.create("alice", ttl=0.6)
    time.sleep(0.1)
    peeked = sessions.get(s.session_id, refresh=False)
    assert peeked is not None and peeked.expires_at == s.expires_at
    time.sleep(0.6)
    assert sessions.get(s.session_id) is None


def test_default_ttl_is_a_day(make: MakeSessions, redis_client: Any) -> None:  # noqa: F811
    sessions = make()
    assert sessions.ttl == 86400 and sessions.history_limit == 100
    s = sessions.create("alice")
    ttl = redis_client.pttl(f"{sessions.prefix}:session:{s.session_id}")
    assert 86_390_000 < ttl <= 86_400_000


# ---------------------------------------------------------------------------------- history
def test_history_keeps_the_last_messages(sessions: SessionMemory, redis_client: Any) -> None:  # noqa: F811
    s = sessions.create("alice")
    for i in range(8):
        length = sessions.add_message(
            s.session_id, "user" if i % 2 == 0 else "assistant", f"message {i}", {"i": i}
        )
        assert length == min(i + 1, 5)
    history = sessions.history(s.session_id)
    assert [m.content for m in history] == [f"message {i}" for i in range(3, 8)]
    assert all(isinstance(m, Message) for m in history)
    assert [m.role for m in history] == ["assistant", "user", "assistant", "user", "assistant"]
    assert history[0].metadata == {"i": 3}
    assert history == sorted(history, key=lambda m: m.created_at)
    assert [m.content for m in sessions.history(s.session_id, last=2)] == [
        "message 6",
        "message 7",
    ]
    assert redis_client.llen(f"{sessions.prefix}:history:{s.session_id}") == 5
    assert sessions.get(s.session_id).updated_at == history[-1].created_at  # type: ignore[union-attr]


def test_concurrent_messages_all_land(make: MakeSessions) -> None:
    sessions = make()
    s = sessions.create("alice")

    def talk(n: int) -> None:
        for i in range(10):
            sessions.add_message(s.session_id, "user", f"{n}-{i}")

    threads = [threading.Thread(target=talk, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    contents = [m.content for m in sessions.history(s.session_id)]
    assert sorted(contents) == sorted(f"{n}-{i}" for n in range(4) for i in range(10))
    for n in range(4):  # each thread's messages in its order
        mine = [c for c in contents if c.startswith(f"{n}-")]
        assert mine == [f"{n}-{i}" for i in range(10)]


# ---------------------------------------------------------------------------------- active set
def test_active_sessions_never_lists_an_expired_one(
    sessions: SessionMemory,
    redis_client: Any,  # noqa: F811
) -> None:
    """Sessions come and go with TTLs of 50-300 ms; every listing made at any moment contains
    exactly the sessions whose expiry (Redis's clock, the same host clock as ours) had not
    passed."""
    deadlines: dict[str, float] = {}  # id -> when its keys expire (epoch seconds)
    stop = time.monotonic() + 1.5
    n = 0
    while time.monotonic() < stop:
        s = sessions.create("alice" if n % 2 else "bob", ttl=0.05 + (n % 6) * 0.05)
        deadlines[s.session_id] = s.expires_at.timestamp()
        n += 1
        before = time.time()
        listed = set(sessions.active_sessions())
        after = time.time()
        for sid in listed:
            late = before - deadlines[sid]
            assert late <= 0.002, f"listed {sid} {late:.3f}s after it expired"
        for sid, deadline in deadlines.items():
            if deadline > after + 0.002:
                assert sid in listed, "a live session is missing"
        time.sleep(0.01)
    time.sleep(0.35)
    assert sessions.active_sessions() == []
    assert redis_client.zcard(f"{sessions.prefix}:sessions") == 0, "expired ids were pruned"


def test_active_sessions_skips_removed_keys_and_filters_by_user(
    sessions: SessionMemory,
    redis_client: Any,  # noqa: F811
) -> None:
    a = sessions.create("alice", session_id="a", ttl=60)
    sessions.create("bob", session_id="b", ttl=30)
    sessions.create("alice", session_id="c", ttl=90)
    assert sessions.active_sessions() == ["b", "a", "c"], "in the order they expire"
    assert sessions.active_sessions("alice") == ["a", "c"]
    redis_client.delete(f"{sessions.prefix}:session:{a.session_id}")  # evicted, say
    assert sessions.active_sessions() == ["b", "c"]
    assert redis_client.zscore(f"{sessions.prefix}:sessions", "a") is None


def test_prefixes_keep_applications_apart(make: MakeSessions, namespace: str) -> None:  # noqa: F811
    one, two = make(prefix=f"{namespace}:app1"), make(prefix=f"{namespace}:app2")
    one.create("alice", session_id="same", data={"app": 1})
    two.create("bob", session_id="same", data={"app": 2})
    one.add_message("same", "user", "for app 1")
    assert one.get("same").data == {"app": 1}  # type: ignore[union-attr]
    assert two.get("same").user_id == "bob"  # type: ignore[union-attr]
    assert two.history("same") == []
    assert one.end("same") and two.active_sessions() == ["same"]
    assert two.get("same") is not None


# ---------------------------------------------------------------------------------- operations
def test_health_reports_memory_and_key_counts(sessions: SessionMemory) -> None:
    for i in range(3):
        s = sessions.create("alice", session_id=f"s{i}")
        if i < 2:
            sessions.add_message(s.session_id, "user", "hello")
    report = sessions.health()
    assert report["status"] == "ok" and report["prefix"] == sessions.prefix
    assert report["keys"]["sessions"] == 3 and report["keys"]["histories"] == 2
    assert report["keys"]["database"] >= 5
    assert report["active_sessions"] == 3
    assert isinstance(report["memory"]["used_memory"], int) and report["memory"]["used_memory"] > 0


def test_unreachable_redis_is_a_clear_error() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with SessionMemory(url, settings=build_settings(_env_file=None, redis_timeout=0.5)) as dead:
        with pytest.raises(BackendUnavailableError, match=f"127.0.0.1:{url.split(':')[2]}"):
            dead.create("alice")
        report = dead.health()
        assert report["status"] == "error" and "Connection" in report["error"]


def test_settings_configure_it(namespace: str) -> None:  # noqa: F811
    settings = build_settings(
        _env_file=None,
        redis_url=REDIS_URL,
        redis_prefix=namespace,
        session_ttl=12.5,
        session_history_limit=7,
    )
    with SessionMemory(settings=settings) as sessions:
        assert (sessions.prefix, sessions.ttl, sessions.history_limit) == (namespace, 12.5, 7)
        s = sessions.create("alice")
        delta = s.expires_at - s.created_at
        assert timedelta(seconds=12) < delta <= timedelta(seconds=12.5)
