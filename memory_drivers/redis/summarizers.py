"""Summarisers for stream consolidation: turn a window of events into one memory's text.

A summariser is any object with a ``name`` and ``summarize(stream, events) -> str``. Two come
with the package (``SUMMARIZER`` chooses):

- ``extractive`` (default): no model. It picks the window's most representative sentences
  (SumBasic: sentences rich in the window's frequent terms, then ones that add what has not
  been said) and keeps them in their original order, under a header naming the stream, the
  event ids and the count. Deterministic: the same events always give the same text.
- ``openai``: asks any OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, Mistral,
  Ollama, vLLM, LM Studio, ...) over httpx, with ``SUMMARIZER_API_URL``, ``SUMMARIZER_API_KEY``,
  ``SUMMARIZER_MODEL`` and ``SUMMARIZER_TIMEOUT``.

An event's text is its ``content`` field (or ``text``, ``message``, ``body``), prefixed by its
``role`` (or ``speaker``, ``author``, ``user_id``) when it has one; an event with none of these
fields reads as ``key=value`` pairs.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import httpx

from ..config import Settings, get_settings
from ..embeddings.openai import server_message
from ..errors import BackendUnavailableError, ConfigurationError
from ..text import terms

__all__ = [
    "ExtractiveSummarizer",
    "OpenAIChatSummarizer",
    "StreamEvent",
    "Summarizer",
    "event_text",
    "get_summarizer",
]

TEXT_FIELDS = ("content", "text", "message", "body")
SPEAKER_FIELDS = ("role", "speaker", "author", "user_id")

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")

_CHECK_SETTINGS = " (check SUMMARIZER_API_URL, SUMMARIZER_MODEL and SUMMARIZER_API_KEY)"

SYSTEM_PROMPT = (
    "You consolidate an AI agent's event log into long-term memory. Summarise the events "
    "below in a few sentences: the facts, decisions, preferences and open questions worth "
    "remembering later. Write plain prose, no preamble, no lists of event ids."
)


@dataclass(frozen=True)
class StreamEvent:
    """One entry of a Redis stream: its id (``<ms>-<seq>``) and its fields."""

    id: str
    fields: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class Summarizer(Protocol):
    """Turns a window of events into the text of one summary memory."""

    @property
    def name(self) -> str: ...

    def summarize(self, stream: str, events: Sequence[StreamEvent]) -> str: ...


def _parts(event: StreamEvent) -> tuple[str | None, str]:
    """(speaker or None, text) of one event."""
    fields = event.fields
    text = next((fields[k] for k in TEXT_FIELDS if str(fields.get(k, "")).strip()), None)
    if text is None:
        text = "; ".join(f"{k}={v}" for k, v in fields.items()) or "(empty event)"
    speaker = next((fields[k] for k in SPEAKER_FIELDS if str(fields.get(k, "")).strip()), None)
    return (" ".join(str(speaker).split()) if speaker else None), str(text).strip()


def event_text(event: StreamEvent) -> str:
    """The readable text of one event (see the module docstring), on one line."""
    speaker, text = _parts(event)
    text = " ".join(text.split())
    return f"{speaker}: {text}" if speaker else text


def _header(stream: str, events: Sequence[StreamEvent]) -> str:
    return (
        f"Summary of {len(events)} event{'s' if len(events) != 1 else ''} from stream "
        f"{stream} ({events[0].id} to {events[-1].id})."
    )


class ExtractiveSummarizer:
    """No model: up to ``max_sentences`` representative sentences, kept in their order.

    SumBasic (Nenkova & Vanderwende, 2005) over the window's keyword terms
    (:func:`memory_drivers.text.terms`): each term starts with its share of all term
    occurrences; the sentence whose distinct terms have the highest average share is taken
    (ties: the earlier one), then the shares of its terms are squared, so the next pick favours
    what has not been said yet. A repeated sentence weighs in the shares but is kept once;
    sentences of fewer than two terms ("ok", "thanks") are taken only when there is nothing
    else. Each kept sentence is cut at ``max_sentence_chars`` characters.
    """

    name = "extractive"

    def __init__(self, max_sentences: int = 5, max_sentence_chars: int = 400) -> None:
        if max_sentences < 1:
            raise ConfigurationError("max_sentences must be >= 1")
        self.max_sentences = max_sentences
        self.max_sentence_chars = max_sentence_chars

    def summarize(self, stream: str, events: Sequence[StreamEvent]) -> str:
        if not events:
            raise ValueError("nothing to summarise: no events")
        sentences: list[tuple[str, list[str]]] = []
        seen: set[str] = set()
        counts: Counter[str] = Counter()
        for event in events:
            speaker, body = _parts(event)
            prefix = f"{speaker}: " if speaker else ""
            for piece in _SENTENCE.split(body):
                piece = " ".join(piece.split())
                sentence_terms = terms(piece)
                counts.update(sentence_terms)  # repeated content weighs more...
                key = piece.casefold()
                if not piece or key in seen:
                    continue
                seen.add(key)  # ...but is said once
                sentences.append((prefix + piece, sentence_terms))
        total = sum(counts.values()) or 1
        share = {t: n / total for t, n in counts.items()}
        left = [i for i, (_, sentence_terms) in enumerate(sentences) if len(sentence_terms) > 1]
        if not left:  # only one-word sentences ("ok", "thanks"): take those
            left = [i for i, (_, sentence_terms) in enumerate(sentences) if sentence_terms]
        chosen: list[int] = []
        while left and len(chosen) < self.max_sentences:

            def weight(i: int) -> tuple[float, int]:
                distinct = sentences[i][1]
                return (-sum(share[t] for t in distinct) / len(distinct), i)

            best = min(left, key=weight)
            chosen.append(best)
            left.remove(best)
            for t in sentences[best][1]:
                share[t] *= share[t]
        lines = [_header(stream, events)]
        for i in sorted(chosen) or range(min(1, len(sentences))):
            sentence = sentences[i][0]
            if len(sentence) > self.max_sentence_chars:
                sentence = sentence[: self.max_sentence_chars - 3].rstrip() + "..."
            lines.append(f"- {sentence}")
        return "\n".join(lines)


class OpenAIChatSummarizer:
    """Calls ``POST {api_url}/chat/completions`` of any OpenAI-compatible server.

    Network errors, 408/429 and 5xx answers are retried ``retries`` times with exponential
    backoff; then :class:`BackendUnavailableError`. A 4xx answer (bad key, unknown model) is a
    :class:`ConfigurationError` naming the server's message.
    """

    RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})

    def __init__(
        self,
        model: str,
        *,
        api_url: str = "https://api.openai.com/v1",
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 2,
        backoff: float = 0.5,
        max_input_chars: int = 24_000,
        system_prompt: str = SYSTEM_PROMPT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.model = model
        self.url = api_url.rstrip("/") + "/chat/completions"
        self.retries = retries
        self.backoff = backoff
        self.max_input_chars = max_input_chars
        self.system_prompt = system_prompt
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers, transport=transport)

    @property
    def name(self) -> str:
        return f"openai:{self.model}"

    def close(self) -> None:
        self._client.close()

    def _transcript(self, stream: str, events: Sequence[StreamEvent]) -> str:
        lines = [_header(stream, events), ""]
        budget = self.max_input_chars
        for event in events:
            line = f"[{event.id}] {event_text(event)}"
            if len(line) > budget:
                lines.append(line[: max(budget, 0)] + " [...]")
                break
            lines.append(line)
            budget -= len(line) + 1
        return "\n".join(lines)

    def _post(self, payload: dict[str, Any]) -> httpx.Response:
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._client.post(self.url, json=payload)
            except httpx.HTTPError as exc:
                if last:
                    raise BackendUnavailableError(
                        f"cannot reach the summariser at {self.url}: {exc}. Check "
                        "SUMMARIZER_API_URL and that the server is running."
                    ) from exc
            else:
                if response.status_code not in self.RETRY_STATUS or last:
                    return response
            time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")

    def summarize(self, stream: str, events: Sequence[StreamEvent]) -> str:
        if not events:
            raise ValueError("nothing to summarise: no events")
        payload = {
            "model": self.model,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": self.system_prompt},
                {"role": "user", "content": self._transcript(stream, events)},
            ],
        }
        response = self._post(payload)
        if response.status_code != 200:
            error = BackendUnavailableError if response.status_code >= 500 else ConfigurationError
            raise error(
                f"the summariser at {self.url} answered {response.status_code}: "
                f"{server_message(response)}"
                + ("" if error is BackendUnavailableError else _CHECK_SETTINGS)
            )
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise BackendUnavailableError(
                f"the summariser at {self.url} sent an answer that is not an OpenAI-style chat "
                f"completion ({exc!r}): {response.text[:200]}"
            ) from None
        if not isinstance(content, str) or not content.strip():
            raise BackendUnavailableError(f"the summariser at {self.url} returned an empty summary")
        return f"{_header(stream, events)}\n{content.strip()}"


def get_summarizer(settings: Settings | None = None) -> Summarizer:
    """The summariser ``SUMMARIZER`` names, configured from the settings."""
    s = settings or get_settings()
    if s.summarizer == "openai":
        key = s.summarizer_api_key.get_secret_value() if s.summarizer_api_key else None
        return OpenAIChatSummarizer(
            s.summarizer_model,
            api_url=s.summarizer_api_url,
            api_key=key,
            timeout=s.summarizer_timeout,
        )
    return ExtractiveSummarizer(s.summarizer_max_sentences)
