"""The embedded default backend: no network, a deterministic reply, word by word."""

from __future__ import annotations

import re
import time
import zlib
from collections.abc import Generator
from typing import Any

from ..parts import Data, Finish, Reasoning, Source, ToolCall, Usage
from .base import Message, Piece
from .tools import Tool, run_tool

__all__ = ["DemoBackend", "word_count"]

_QUOTE_LIMIT = 120
_WORDS = re.compile(r"\s*\S+\s*")

_CLOSERS = (
    "Ask the same thing again and you will get exactly the same answer, byte for byte.",
    "Send the same prompt twice and the reply will not change by a single byte.",
    "Repeat the question and this reply repeats too — déjà vu, on purpose.",
    "The same prompt always earns the same reply, which keeps tests honest.",
)

DEMO_SOURCE = Source(
    "https://html.spec.whatwg.org/multipage/server-sent-events.html",
    "HTML Standard — Server-sent events",
)


def word_count(text: str) -> dict[str, int]:
    """Count the words and characters of a text.

    Args:
        text: the text to count
    """
    return {"words": len(text.split()), "characters": len(text)}


WORD_COUNT = Tool.from_function(word_count)


def _last_user_text(messages: list[Message]) -> str:
    """The content of the last ``user`` message (or of the last message at all)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return str(message.get("content") or "")
    return str(messages[-1].get("content") or "") if messages else ""


class DemoBackend:
    """The embedded default backend: no network, a deterministic reply, word by word.

    The reply quotes the last user message and says a few things about it, so it is
    different for every prompt but byte-identical for the same prompt (tests compare it
    with :meth:`reply_for`). It contains non-ASCII text and one paragraph break (``\\n\\n``)
    to exercise UTF-8 and multi-line SSE data. Each piece is one word plus the whitespace
    that follows it, so the text pieces join to ``reply_for(messages)``; a ``Usage`` ends
    the stream.

    ``parts=True`` shows every kind of part without a model, still deterministically:
    ``Reasoning`` pieces (:meth:`reasoning_for`), a ``ToolCall`` of the server-side demo
    tool :func:`word_count` on the prompt and its ``ToolResult``, a ``Source``, a
    ``Data("word-count", ...)`` with the counts, then the same text as without parts. If
    the request carries tools (``stream(messages, tools=[...])``, a client-side tool of
    the page) it calls the first function tool instead, with arguments made from its
    schema (the prompt for strings, its word count for numbers), and ends with
    ``Finish("tool_calls")``; when the client sends the result back (the last message is
    a ``tool`` message) the reply says what the tool answered.

    ``delay`` seconds are slept before each piece with :func:`time.sleep`, looked up at call
    time, so under gunicorn's gevent worker (which monkey-patches it) the wait is
    cooperative and thousands of demo streams can run in one worker.
    """

    def __init__(self, delay: float = 0.05, *, parts: bool = False) -> None:
        if delay < 0:
            raise ValueError("delay must be >= 0")
        self.delay = float(delay)
        self.parts = bool(parts)

    @staticmethod
    def reply_for(messages: list[Message]) -> str:
        """Return the full text that :meth:`stream` sends for ``messages``."""
        prompt = _last_user_text(messages)
        words = prompt.split()
        quote = " ".join(words)
        if len(quote) > _QUOTE_LIMIT:
            quote = quote[: _QUOTE_LIMIT - 1].rstrip() + "…"
        if not quote:
            opening = "You sent an empty message, so there is nothing to echo."
        else:
            opening = f"You said: “{quote}”."
        n_words = len(words)
        n_chars = len(prompt)
        closer = _CLOSERS[zlib.crc32(prompt.encode("utf-8")) % len(_CLOSERS)]
        return (
            f"{opening} This is the demo backend of flask-sse-stream — it streams a canned "
            f"reply one word at a time, so you can watch Server-Sent Events arrive without "
            f"a model server or an API key.\n\n"
            f"Your message had {n_words} {'word' if n_words == 1 else 'words'} and "
            f"{n_chars} {'character' if n_chars == 1 else 'characters'}, and the "
            f"conversation so far holds {len(messages)} "
            f"{'message' if len(messages) == 1 else 'messages'}. {closer}"
        )

    @staticmethod
    def reasoning_for(messages: list[Message]) -> str:
        """The reasoning that ``parts=True`` streams before the reply."""
        n_words = len(_last_user_text(messages).split())
        return (f"The user sent {n_words} {'word' if n_words == 1 else 'words'}. "
                "I will count them with the word_count tool, cite the SSE specification, "
                "and answer in a deterministic way.")

    def stream(
        self, messages: list[Message], *, tools: list[dict[str, Any]] | None = None,
        tool_choice: Any = None,
    ) -> Generator[Piece, None, None]:
        """Yield the reply (see the class doc), sleeping ``delay`` before each piece."""
        if not self.parts:
            pieces = yield from self._words(self.reply_for(messages))
            yield self._usage(messages, pieces)
            return
        if messages and messages[-1].get("role") == "tool":
            pieces = yield from self._words(_after_tool(messages))
            yield self._usage(messages, pieces)
            return
        thought = yield from self._words(self.reasoning_for(messages), Reasoning)
        tool = _client_tool(tools) if tool_choice != "none" else None
        prompt = _last_user_text(messages)
        call_id = f"call_{zlib.crc32(prompt.encode('utf-8')):08x}_{len(messages)}"
        if tool is not None:
            self._sleep()
            yield ToolCall(call_id, tool["name"], _sample_arguments(tool, prompt))
            yield Finish("tool_calls")
            yield self._usage(messages, thought + 1)
            return
        arguments = {"text": prompt}
        self._sleep()
        yield ToolCall(call_id, WORD_COUNT.name, arguments)
        result = run_tool(WORD_COUNT, call_id, arguments, None)
        self._sleep()
        yield result
        self._sleep()
        yield DEMO_SOURCE
        yield Data("word-count", result.result)
        pieces = yield from self._words(self.reply_for(messages))
        yield self._usage(messages, thought + 1 + pieces)

    def _sleep(self) -> None:
        time.sleep(self.delay)  # module attribute: gevent's patch applies at call time

    def _words(self, text: str, kind: type[Reasoning] | None = None
               ) -> Generator[Piece, None, int]:
        """Yield ``text`` word by word (as ``kind`` parts, or text); return how many."""
        pieces = _WORDS.findall(text)
        for piece in pieces:
            self._sleep()
            yield piece if kind is None else kind(piece)
        return len(pieces)

    @staticmethod
    def _usage(messages: list[Message], pieces: int) -> Usage:
        """Words of the prompt and pieces of the reply, as token counts."""
        prompt_tokens = sum(len(str(m.get("content") or "").split()) for m in messages)
        return Usage(prompt_tokens=prompt_tokens, completion_tokens=pieces,
                     total_tokens=prompt_tokens + pieces)


def _client_tool(tools: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """The first function tool of a request, as its ``function`` object."""
    for spec in tools or ():
        function = spec.get("function") if isinstance(spec, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return function
    return None


def _sample_arguments(function: dict[str, Any], prompt: str) -> dict[str, Any]:
    """Arguments that fit a simple schema: every required property gets a value."""
    schema = function.get("parameters")
    schema = schema if isinstance(schema, dict) else {}
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    arguments: dict[str, Any] = {}
    for name in schema.get("required") or ():
        spec = properties.get(name)
        spec = spec if isinstance(spec, dict) else {}
        kind = spec.get("type")
        if isinstance(spec.get("enum"), list) and spec["enum"]:
            arguments[name] = spec["enum"][0]
        elif kind in ("integer", "number"):
            arguments[name] = len(prompt.split())
        elif kind == "boolean":
            arguments[name] = True
        elif kind == "array":
            arguments[name] = []
        elif kind == "object":
            arguments[name] = {}
        else:
            arguments[name] = prompt
    return arguments


def _after_tool(messages: list[Message]) -> str:
    """The reply once a client-side tool's result came back."""
    content = " ".join(str(messages[-1].get("content") or "").split())
    if len(content) > _QUOTE_LIMIT:
        content = content[: _QUOTE_LIMIT - 1].rstrip() + "…"
    return f"The tool answered: {content or '(nothing)'}. That is the demo backend's " \
           "client-side tool round trip, done."
