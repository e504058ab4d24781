"""The pages about global knowledge: documents by category, search, store or replace, delete."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..errors import NotFoundError, ValidationError
from ..models import KnowledgeDocument
from .core import PageBase, page
from .forms import form_text, json_object, whole_number

__all__ = ["KnowledgePages"]


class KnowledgePages(PageBase):
    async def _overview(self, request: Request, status: int = 200, **context: Any) -> Response:
        params = request.query_params
        category = params.get("category", "")
        query = params.get("q", "")
        search = params.get("search", "")
        driver = self.driver
        hits = None
        error = context.pop("error", None)
        if query.strip():
            try:
                hits = await self.call(
                    driver.recall_global_knowledge,
                    query,
                    top_k=whole_number(params.get("top_k"), "top k", 5),
                    category=category or None,
                    search=search or None,
                )
            except ValidationError as exc:
                error, status = str(exc), 400
        documents = await self.call(driver.list_global_knowledge)
        categories: dict[str, list[Any]] = {}
        for document in documents:
            categories.setdefault(document.category, []).append(document)
        return self.render(
            request,
            "knowledge.html",
            status,
            categories=categories,
            category=category,
            q=query,
            search=search,
            top_k=params.get("top_k", ""),
            hits=hits,
            error=error,
            search_modes=("hybrid", "vector", "keyword"),
            **context,
        )

    @page
    async def knowledge(self, request: Request) -> Response:
        return await self._overview(request, deleted=request.query_params.get("deleted"))

    @page
    async def store(self, request: Request) -> Response:
        """Store a document; an existing ``doc_id`` is replaced whole."""
        form = await request.form()
        typed = {name: form_text(form, name) for name in ("doc_id", "category", "title", "content")}
        typed["metadata"] = form_text(form, "metadata")
        try:
            document = await self.call(
                self.driver.store_global_knowledge,
                typed["content"],
                typed["category"],
                title=typed["title"] or None,
                doc_id=typed["doc_id"] or None,
                metadata=json_object(typed["metadata"], "metadata"),
            )
        except ValidationError as exc:
            return await self._overview(request, 400, error=str(exc), typed=typed)
        return self.redirect(request, f"/knowledge/{document.doc_id}", saved="1")

    async def _document(self, request: Request) -> KnowledgeDocument:
        doc_id = request.path_params["doc_id"]
        document = await self.call(self.driver.get_global_knowledge, doc_id)
        if document is None:
            raise NotFoundError(f"no knowledge document {doc_id!r}; it may have been deleted")
        return document

    @page
    async def document(self, request: Request) -> Response:
        document = await self._document(request)
        return self.render(
            request,
            "document.html",
            document=document,
            saved=request.query_params.get("saved") == "1",
        )

    @page
    async def confirm_delete_document(self, request: Request) -> Response:
        document = await self._document(request)
        return self.render(request, "delete.html", what="document", document=document)

    @page
    async def delete_document(self, request: Request) -> Response:
        document = await self._document(request)
        await self.call(self.driver.delete_global_knowledge, document.doc_id)
        return self.redirect(request, "/knowledge", deleted=document.doc_id)
