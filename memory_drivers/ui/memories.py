"""The pages about memories: users, search, one memory (edit, delete, associations), health."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..errors import NotFoundError, ValidationError
from ..models import Memory
from .core import PageBase, page
from .forms import SearchForm, form_text, json_object, line_list, number
from .graph import layout

__all__ = ["MemoryPages"]


class MemoryPages(PageBase):
    @page
    async def users(self, request: Request) -> Response:
        """Every user with their memory count and newest activity; ``find`` narrows by id."""
        find = request.query_params.get("find", "").strip()
        users = await self.call(self.driver.list_users)
        shown = [u for u in users if find.casefold() in u.user_id.casefold()]
        return self.render(request, "users.html", users=shown, total=len(users), find=find)

    @page
    async def search(self, request: Request) -> Response:
        form = SearchForm.from_query(request.query_params)
        driver = self.driver
        hits: list[Any] | None = None
        error = None
        if form.ready:
            try:
                hits = await self.call(driver.recall, **form.recall_arguments())
            except ValidationError as exc:
                error = str(exc)
        return self.render(
            request,
            "search.html",
            400 if error else 200,
            form=form,
            hits=hits,
            error=error,
            memory_types=sorted(driver.settings.memory_types),
            search_modes=("hybrid", "vector", "keyword"),
            default_search=driver.settings.recall_search,
            users=[u.user_id for u in await self.call(driver.list_users)],
            deleted=request.query_params.get("deleted"),
        )

    async def _memory(self, request: Request) -> Memory:
        memory_id = request.path_params["memory_id"]
        memory = await self.call(self.driver.get, memory_id)
        if memory is None:
            raise NotFoundError(f"no memory {memory_id}; it may have been deleted")
        return memory

    async def _show(
        self, request: Request, memory: Memory, status: int = 200, **context: Any
    ) -> Response:
        related = await self.call(self.driver.related, memory.id)
        return self.render(
            request,
            "memory.html",
            status,
            memory=memory,
            metadata_json=json.dumps(memory.metadata, indent=2, ensure_ascii=False),
            related=related,
            graph=layout(memory, related),
            memory_types=sorted(self.driver.settings.memory_types),
            **context,
        )

    @page
    async def memory(self, request: Request) -> Response:
        memory = await self._memory(request)
        return await self._show(request, memory, saved=request.query_params.get("saved") == "1")

    @page
    async def edit(self, request: Request) -> Response:
        """Change what differs from the memory as shown (new content is embedded again)."""
        memory = await self._memory(request)
        form = await request.form()
        changes: dict[str, Any] = {}
        try:
            content = form_text(form, "content")
            if content != memory.content:
                changes["content"] = content
            tags = line_list(form_text(form, "tags"))
            if tags != memory.tags:
                changes["tags"] = tags
            metadata = json_object(form_text(form, "metadata"), "metadata") or {}
            if metadata != memory.metadata:
                changes["metadata"] = metadata
            importance = number(form_text(form, "importance"), "importance")
            if importance is None:
                raise ValidationError("importance is required: a number from 0 to 1")
            if importance != memory.importance:
                changes["importance"] = importance
            memory_type = form_text(form, "memory_type")
            if memory_type != memory.memory_type:
                changes["memory_type"] = memory_type
            if changes:
                await self.call(self.driver.update, memory.id, **changes)
        except ValidationError as exc:
            typed = {name: form_text(form, name) for name in ("content", "tags", "metadata")}
            return await self._show(request, memory, 400, error=str(exc), typed=typed)
        return self.redirect(request, f"/memories/{memory.id}", saved="1")

    @page
    async def confirm_delete(self, request: Request) -> Response:
        memory = await self._memory(request)
        return self.render(request, "delete.html", what="memory", memory=memory)

    @page
    async def delete(self, request: Request) -> Response:
        memory = await self._memory(request)
        await self.call(self.driver.delete, memory.id)
        return self.redirect(request, "/search", user_id=memory.user_id, deleted=memory.id)

    @page
    async def health(self, request: Request) -> Response:
        driver = self.driver
        report = await self.call(driver.health_check)
        stats = await self.call(driver.stats) if report.get("status") != "error" else {}
        # what the health check already shows is not repeated
        stats = {key: value for key, value in stats.items() if report.get(key) != value}
        return self.render(request, "health.html", report=report, stats=stats)
