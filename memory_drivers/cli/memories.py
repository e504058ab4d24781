"""Memory commands: store, recall, get, update, delete, count, associate, related, cleanup."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import NotFoundError, ValidationError
from .options import command
from .output import memory_line, one_line, plural, print_json, print_mapping, score_text
from .session import Session, json_object, read_content

__all__ = ["register"]


def cmd_store(s: Session) -> int:
    a = s.args
    memory = s.driver.store(
        user_id=a.user,
        content=read_content(a.content),
        conversation_id=a.conversation,
        tags=a.tags,
        metadata=json_object(a.metadata, "--metadata"),
        memory_type=a.type,
        importance=a.importance,
        source=a.source,
    )
    if s.json:
        print_json(memory)
    else:
        print(memory.id)
    return 0


def cmd_recall(s: Session) -> int:
    a = s.args
    hits = s.driver.recall(
        user_id=a.user,
        conversation_id=a.conversation,
        query=a.query,
        top_k=a.top_k,
        search="keyword" if a.keyword else a.search,
        now=a.now,
        exclude_tags=a.exclude_tags,
        memory_types=a.types,
        tags=a.tags,
        tag_mode="all" if a.all_tags else "any",
        since=a.since,
        until=a.until,
        min_importance=a.min_importance,
        metadata=json_object(a.metadata, "--metadata"),
    )
    if s.json:
        print_json(hits)
    elif not hits:
        print("no matching memories")
    else:
        for hit in hits:
            print(f"{score_text(hit.score)}  {memory_line(hit.memory)}")
    return 0


def cmd_get(s: Session) -> int:
    memory = s.driver.get(s.args.id, user_id=s.args.user)
    if memory is None:
        raise NotFoundError(_no_memory(s.args.id, s.args.user))
    if s.json:
        print_json(memory)
    else:
        print_mapping(memory.model_dump(mode="json"))
    return 0


def cmd_update(s: Session) -> int:
    a = s.args
    if a.clear_tags and a.tags:
        raise ValidationError("give --tag or --clear-tags, not both")
    tags = [] if a.clear_tags else a.tags
    memory = s.driver.update(
        a.id,
        user_id=a.user,
        content=read_content(a.content) if a.content is not None else None,
        tags=tags,
        metadata=json_object(a.metadata, "--metadata"),
        importance=a.importance,
        memory_type=a.type,
    )
    if s.json:
        print_json(memory)
    else:
        print(f"updated {memory.id}")
    return 0


def cmd_delete(s: Session) -> int:
    if not s.driver.delete(s.args.id, user_id=s.args.user):
        raise NotFoundError(_no_memory(s.args.id, s.args.user))
    if s.json:
        print_json({"deleted": True, "id": s.args.id})
    else:
        print(f"deleted {s.args.id}")
    return 0


def _no_memory(memory_id: str, user: str | None) -> str:
    owner = f" for user {user!r}" if user is not None else ""
    return f"no memory {memory_id}{owner}"


def cmd_count(s: Session) -> int:
    n = s.driver.count(s.args.user)
    if s.json:
        print_json({"count": n, "user_id": s.args.user})
    else:
        print(n)
    return 0


def cmd_associate(s: Session) -> int:
    a = s.args
    link = s.driver.associate(
        a.id, a.related_id, relationship_type=a.type, strength=a.strength, user_id=a.user
    )
    if s.json:
        print_json(link)
    else:
        print(
            f"{link.source_id} -{link.relationship_type} ({link.strength:.2f})-> {link.target_id}"
        )
    return 0


def cmd_related(s: Session) -> int:
    a = s.args
    items = s.driver.related(a.id, relationship_type=a.type, user_id=a.user)
    if s.json:
        print_json(items)
    elif not items:
        print("no related memories")
    else:
        for item in items:
            print(
                f"{item.strength:.2f}  {item.direction}  {item.relationship_type}  "
                f"{memory_line(item.memory)}"
            )
    return 0


def cmd_cleanup(s: Session) -> int:
    a = s.args
    result = s.driver.cleanup(
        user_id=a.user,
        max_age_days=a.max_age_days,
        min_importance=a.min_importance,
        dry_run=not a.yes,
    )
    if s.json:
        print_json(result)
        return 0
    if not result.count:
        print("nothing to remove")
        return 0
    if result.dry_run:
        print(f"would remove {plural(result.count, 'memory')} (dry run; add --yes to remove them):")
    else:
        print(f"removed {plural(result.count, 'memory')}:")
    for m in result.memories:
        print(
            f"  {m.id}  {m.user_id}  {m.created_at.isoformat(timespec='seconds')}  "
            f"importance={m.importance:g}  {one_line(m.content)}"
        )
    return 0


# ---------------------------------------------------------------------- the parsers
def _add_memory_fields(parser: argparse.ArgumentParser, *, update: bool = False) -> None:
    parser.add_argument(
        "--tag",
        dest="tags",
        action="append",
        metavar="TAG",
        help="a tag (repeat for several)" + ("; replaces all tags" if update else ""),
    )
    parser.add_argument(
        "--type",
        metavar="TYPE",
        help="memory type (episodic, semantic, procedural, reflection, fact, "
        "context, preference, or one from MEMORY_EXTRA_TYPES)"
        + ("" if update else "; default: MEMORY_DEFAULT_TYPE"),
    )
    parser.add_argument(
        "--importance",
        type=float,
        metavar="X",
        help="importance from 0 to 1" + ("" if update else " (default 0.5)"),
    )
    parser.add_argument(
        "--metadata",
        metavar="JSON",
        help='a JSON object, e.g. \'{"topic": "food"}\''
        + ("; replaces all metadata" if update else ""),
    )


def register(sub: Any) -> None:
    """Add the memory commands to ``sub`` (the program's subparsers)."""
    p = command(sub, "store", cmd_store, "store a memory and print its id")
    p.add_argument("content", metavar="CONTENT", help='the memory\'s text ("-" reads stdin)')
    p.add_argument("--user", required=True, metavar="U", help="the user the memory belongs to")
    p.add_argument("--conversation", metavar="C", help="conversation id")
    _add_memory_fields(p)
    p.add_argument("--source", metavar="S", help="where the memory came from")

    p = command(
        sub,
        "recall",
        cmd_recall,
        "recall a user's memories (by words and meaning, or newest)",
        "Recall a user's memories. With QUERY, the best matches come first: by keywords and "
        "meaning together (hybrid, the default: RECALL_SEARCH), by meaning alone (--search "
        "vector) or by keywords alone (--search keyword, or --keyword); without QUERY, the "
        "newest. Time expressions in QUERY ('last week') are read against --now (default: now). "
        "Filters apply before --top-k. Text output: score (3 decimals; - without QUERY), id, "
        "type, [tags], content.",
    )
    p.add_argument("query", nargs="?", metavar="QUERY", help="what to look for")
    p.add_argument("--user", required=True, metavar="U", help="whose memories")
    p.add_argument("--conversation", metavar="C", help="only this conversation")
    p.add_argument("--top-k", type=int, default=10, metavar="N", help="at most N hits (10)")
    p.add_argument(
        "--search",
        choices=("hybrid", "vector", "keyword"),
        help="how to rank: hybrid (keywords and meaning), vector or keyword (default: "
        "RECALL_SEARCH, hybrid)",
    )
    p.add_argument("--keyword", action="store_true", help="the same as --search keyword")
    p.add_argument(
        "--now",
        metavar="TIME",
        help="the time 'yesterday' or 'last week' in QUERY count from (ISO 8601; default: now)",
    )
    p.add_argument(
        "--tag",
        dest="tags",
        action="append",
        metavar="T",
        help="only memories with this tag (repeatable: any of them)",
    )
    p.add_argument("--all-tags", action="store_true", help="require every --tag, not any")
    p.add_argument(
        "--exclude-tag",
        dest="exclude_tags",
        action="append",
        metavar="T",
        help="skip memories with this tag (repeatable)",
    )
    p.add_argument(
        "--type",
        dest="types",
        action="append",
        metavar="T",
        help="only this memory type (repeatable)",
    )
    p.add_argument("--since", metavar="ISO", help="created at or after this time (ISO 8601)")
    p.add_argument("--until", metavar="ISO", help="created before this time (ISO 8601)")
    p.add_argument("--min-importance", type=float, metavar="X", help="importance at least X")
    p.add_argument(
        "--metadata",
        metavar="JSON",
        help='metadata must contain these key/values, e.g. \'{"topic": "food"}\'',
    )

    p = command(sub, "get", cmd_get, "show one memory")
    p.add_argument("id", metavar="ID", help="memory id")
    p.add_argument("--user", metavar="U", help="only if it belongs to this user")

    p = command(sub, "update", cmd_update, "change a memory's content, tags, type, ...")
    p.add_argument("id", metavar="ID", help="memory id")
    p.add_argument("--user", metavar="U", help="only if it belongs to this user")
    p.add_argument("--content", metavar="TEXT", help='new text ("-" reads stdin); re-embedded')
    _add_memory_fields(p, update=True)
    p.add_argument("--clear-tags", action="store_true", help="remove every tag")

    p = command(sub, "delete", cmd_delete, "delete one memory (and its associations)")
    p.add_argument("id", metavar="ID", help="memory id")
    p.add_argument("--user", metavar="U", help="only if it belongs to this user")

    p = command(sub, "count", cmd_count, "count memories (of one user, or of everyone)")
    p.add_argument("--user", metavar="U", help="only this user's")

    p = command(sub, "associate", cmd_associate, "link one memory to another")
    p.add_argument("id", metavar="ID", help="the memory the link starts from")
    p.add_argument("related_id", metavar="RELATED_ID", help="the memory it points to")
    p.add_argument(
        "--type",
        default="RELATES_TO",
        metavar="TYPE",
        help="relationship type (default RELATES_TO; LEADS_TO, PART_OF, ...)",
    )
    p.add_argument("--strength", type=float, default=0.5, metavar="X", help="0 to 1 (default 0.5)")
    p.add_argument("--user", metavar="U", help="both memories must belong to this user")

    p = command(sub, "related", cmd_related, "list the memories linked to one, strongest first")
    p.add_argument("id", metavar="ID", help="memory id")
    p.add_argument("--type", metavar="TYPE", help="only this relationship type")
    p.add_argument("--user", metavar="U", help="only if it belongs to this user")

    p = command(
        sub,
        "cleanup",
        cmd_cleanup,
        "remove old and/or unimportant memories (dry run unless --yes)",
        "Remove memories older than --max-age-days and/or less important than "
        "--min-importance (both must hold when both are given). Without --yes, only "
        "shows what would be removed.",
    )
    p.add_argument("--user", metavar="U", help="only this user's memories")
    p.add_argument("--max-age-days", type=float, metavar="N", help="older than N days")
    p.add_argument("--min-importance", type=float, metavar="X", help="importance below X")
    p.add_argument("--yes", "-y", action="store_true", help="really remove them")
