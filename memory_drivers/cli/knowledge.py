"""Global knowledge commands: ``knowledge add``, ``search``, ``get`` and ``delete``."""

from __future__ import annotations

import json
from typing import Any

from ..errors import NotFoundError
from .options import command
from .output import CliError, one_line, plural, print_json, scalar, score_text
from .session import Session, json_object, read_text

__all__ = ["register"]


def cmd_knowledge_add(s: Session) -> int:
    a = s.args
    text = read_text(a.file, "document")
    with s.progress(None, "embedding", "chunk") as bar:

        def step(done: int, total: int) -> None:
            if bar.total != total:
                bar.total = total
                bar.refresh()
            bar.update(done)

        doc = s.driver.store_global_knowledge(
            text,
            category=a.category,
            title=a.title,
            doc_id=a.doc_id,
            metadata=json_object(a.metadata, "--metadata"),
            progress=step,
        )
    if s.json:
        print_json(doc)
    else:
        print(
            f"stored document {doc.doc_id} ({plural(len(doc.chunks), 'chunk')}, "
            f"category {doc.category})"
        )
    return 0


def cmd_knowledge_search(s: Session) -> int:
    a = s.args
    hits = s.driver.recall_global_knowledge(
        a.query, top_k=a.top_k, category=a.category, search=a.search
    )
    if s.json:
        print_json(hits)
    elif not hits:
        print("no matching knowledge")
    else:
        for hit in hits:
            c = hit.chunk
            title = f"{c.title}: " if c.title else ""
            print(
                f"{score_text(hit.score)}  {c.doc_id}#{c.chunk_index}  [{c.category}]  "
                f"{one_line(title + c.content)}"
            )
    return 0


def cmd_knowledge_get(s: Session) -> int:
    doc = s.driver.get_global_knowledge(s.args.doc_id)
    if doc is None:
        raise NotFoundError(f"no knowledge document {s.args.doc_id!r}")
    if s.json:
        print_json(doc)
    else:
        print(f"doc_id: {doc.doc_id}")
        print(f"category: {doc.category}")
        print(f"title: {scalar(doc.title)}")
        if doc.metadata:
            print(f"metadata: {json.dumps(doc.metadata, ensure_ascii=False)}")
        print(f"chunks: {len(doc.chunks)}")
        print()
        print("\n".join(c.content for c in doc.chunks))
    return 0


def cmd_knowledge_delete(s: Session) -> int:
    if not s.driver.delete_global_knowledge(s.args.doc_id):
        raise NotFoundError(f"no knowledge document {s.args.doc_id!r}")
    if s.json:
        print_json({"deleted": True, "doc_id": s.args.doc_id})
    else:
        print(f"deleted document {s.args.doc_id}")
    return 0


def _no_subcommand(s: Session) -> int:  # pragma: no cover - argparse requires an action
    raise CliError("choose an action", 2)


def register(sub: Any) -> None:
    """Add ``knowledge`` and its actions to ``sub``."""
    p = command(
        sub,
        "knowledge",
        _no_subcommand,
        "global knowledge: add, search, get, delete",
        "Global knowledge: documents shared by every user, split into chunks.",
    )
    ksub = p.add_subparsers(title="knowledge commands", metavar="ACTION", dest="action")
    ksub.required = True
    k = command(ksub, "add", cmd_knowledge_add, "store a document (replaces its --doc-id)")
    k.add_argument("file", metavar="FILE", help='the document, UTF-8 text ("-" reads stdin)')
    k.add_argument("--category", required=True, metavar="C", help="category, e.g. policies")
    k.add_argument("--title", metavar="T", help="title")
    k.add_argument(
        "--doc-id",
        metavar="D",
        help="document id (default: a new UUID); an existing one is replaced",
    )
    k.add_argument("--metadata", metavar="JSON", help="a JSON object stored with the chunks")
    k = command(ksub, "search", cmd_knowledge_search, "find the chunks that best match a query")
    k.add_argument("query", metavar="QUERY", help="what to look for")
    k.add_argument(
        "--search",
        choices=("hybrid", "vector", "keyword"),
        help="how to rank (default: RECALL_SEARCH, hybrid)",
    )
    k.add_argument("--top-k", type=int, default=5, metavar="N", help="at most N hits (5)")
    k.add_argument("--category", metavar="C", help="only this category")
    k = command(ksub, "get", cmd_knowledge_get, "show a document and its chunks")
    k.add_argument("doc_id", metavar="DOC_ID", help="document id")
    k = command(ksub, "delete", cmd_knowledge_delete, "delete a document and its chunks")
    k.add_argument("doc_id", metavar="DOC_ID", help="document id")
