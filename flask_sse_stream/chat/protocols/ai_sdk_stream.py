"""A generation's log entries as the AI SDK's UI message chunks (stream protocol v1).

Pure: no Flask, no I/O. What a reply becomes, entry by entry (``useChat`` builds its
message parts from these; every chunk is ``data: <compact JSON>`` and a blank line):

================  ============================================================  ==========
log entry         chunks                                                        UI part
================  ============================================================  ==========
(opening)         ``start`` (``messageId``), ``start-step``                     step-start
text              ``text-start`` (first of a run), ``text-delta``               text
reasoning         ``reasoning-start`` (first of a run), ``reasoning-delta``     reasoning
tool-call         ``tool-input-start``, ``tool-input-available``                tool-<name>
tool-result       ``tool-output-available`` or ``tool-output-error``            (the same)
data              ``data-<name>``                                               data-<name>
source            ``source-url`` (``sourceId`` = the entry's id)                source-url
close             end of the open run, ``finish-step``, then ``finish``, or
                  ``error`` + ``finish`` (``"error"``), or ``abort``
                  (``"cancelled"``); then ``data: [DONE]``
================  ============================================================  ==========

A run of text (or reasoning) ends with ``text-end`` (``reasoning-end``) when an entry of
another kind comes, or at the close. Each model call is one step: the first entry after a
``tool-result`` that is not itself one starts a new step (``finish-step``, ``start-step``).

So an entry's frame is a function of the previous entry's kind and the entry alone:
``frame = transition(previous kind, kind) + body(entry)``. The body is cached per entry
(bytes of the log), shared by every follower; the transition is a few constant chunks
(empty inside a run). A text-only reply costs one cached frame per entry, as before.

Fields are only those every supported ``ai`` release knows: ``ai`` 5.0.x before 5.0.217
and 6.0.x before 6.0.231 validate chunks with strict schemas (an unknown field fails the
whole stream), so ``abort`` carries no ``reason`` and ``source-url`` no ``title: null``.
"""

from __future__ import annotations

import threading
from typing import Any

from ...wire.event import to_bytes
from ..entries import (
    CLOSE,
    DATA,
    REASONING,
    SOURCE,
    TEXT,
    TOOL_CALL,
    TOOL_RESULT,
    Entry,
    parse_entry,
)

__all__ = [
    "DONE",
    "FINISH_REASONS",
    "REASONING_ID",
    "TEXT_ID",
    "UIMessageFollower",
    "UIMessageFramer",
    "body",
    "frame_entry",
    "transition",
]

DONE = b"data: [DONE]\n\n"
# One id per kind of run: runs never overlap, and a delta cannot know where its run began.
TEXT_ID = "text-0"
REASONING_ID = "reasoning-0"
_CACHE_SIZE = 4096

# OpenAI finish reasons as the AI SDK spells them; anything else is "other".
FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content-filter",
    "tool_calls": "tool-calls",
    "function_call": "tool-calls",
    "error": "error",
}


def _chunk(value: dict[str, Any]) -> bytes:
    """``data: <compact JSON>`` and the blank line (JSON escapes every line break)."""
    return to_bytes(value)


_RUNS = {
    TEXT: (_chunk({"type": "text-start", "id": TEXT_ID}),
           _chunk({"type": "text-end", "id": TEXT_ID})),
    REASONING: (_chunk({"type": "reasoning-start", "id": REASONING_ID}),
                _chunk({"type": "reasoning-end", "id": REASONING_ID})),
}
_START_STEP = _chunk({"type": "start-step"})
_FINISH_STEP = _chunk({"type": "finish-step"})
_NEXT_STEP = _FINISH_STEP + _START_STEP


def transition(previous: str | None, kind: str) -> bytes:
    """What goes between an entry of kind ``previous`` (None: the opening) and one of
    ``kind``: the end of the run that stops, a step boundary, the start of a new run."""
    if previous == kind and kind in _RUNS:
        return b""  # inside a run: the common case, nothing to add
    ended = _RUNS.get(previous) if previous is not None else None
    out = ended[1] if ended is not None else b""
    if previous == TOOL_RESULT and kind not in (TOOL_RESULT, CLOSE):
        out += _NEXT_STEP  # the next model call's output begins
    if kind in _RUNS:
        out += _RUNS[kind][0]
    return out


def body(entry: Entry) -> bytes:
    """The chunks of ``entry`` itself (without what its place in the reply adds)."""
    kind, data = entry.kind, entry.data
    if kind == TEXT:
        return _chunk({"type": "text-delta", "id": TEXT_ID, "delta": entry.content})
    if kind == REASONING:
        return _chunk({"type": "reasoning-delta", "id": REASONING_ID, "delta": entry.content})
    if kind == TOOL_CALL:
        call = {"toolCallId": str(data.get("id")), "toolName": str(data.get("name"))}
        return (_chunk({"type": "tool-input-start", **call})
                + _chunk({"type": "tool-input-available", **call,
                          "input": data.get("arguments") or {}}))
    if kind == TOOL_RESULT:
        call_id = str(data.get("id"))
        if data.get("error") is not None:
            return _chunk({"type": "tool-output-error", "toolCallId": call_id,
                           "errorText": str(data["error"])})
        return _chunk({"type": "tool-output-available", "toolCallId": call_id,
                       "output": data.get("result")})
    if kind == DATA:
        return _chunk({"type": f"data-{data.get('name')}", "data": data.get("data")})
    if kind == SOURCE:
        source = {"type": "source-url", "sourceId": f"{entry.stream_id}:{entry.seq}",
                  "url": str(data.get("url"))}
        if isinstance(data.get("title"), str):
            source["title"] = data["title"]  # absent, never null: the schema wants a string
        return _chunk(source)
    if kind == CLOSE:
        return _close(data)
    return b""  # a kind this release does not know (a newer writer): shown as nothing


def _close(data: dict[str, Any]) -> bytes:
    """The reply's end: the step closes, then ``finish``, ``error`` + ``finish`` or
    ``abort``, then ``[DONE]``. The SDK's own server sends ``abort`` last, no ``finish``."""
    reason = str(data.get("finish_reason") or "stop")
    out = [_FINISH_STEP]
    if reason == "cancelled":
        out.append(_chunk({"type": "abort"}))
    else:
        if reason == "error":
            out.append(_chunk({"type": "error",
                               "errorText": str(data.get("error") or "the reply failed")}))
        finish: dict[str, Any] = {"type": "finish",
                                  "finishReason": FINISH_REASONS.get(reason, "other")}
        if data.get("usage") is not None:
            finish["messageMetadata"] = {"usage": data["usage"]}
        out.append(_chunk(finish))
    out.append(DONE)
    return b"".join(out)


def frame_entry(previous: str | None, entry: Entry) -> bytes:
    """``entry`` as UI message chunks, after an entry of kind ``previous`` (None for the
    first entry of the reply). Pure: the same arguments always give the same bytes."""
    return transition(previous, entry.kind) + body(entry)


class UIMessageFramer:
    """The AI SDK framer shared by every follower of every reply: it caches each log
    entry's body (keyed by the entry's bytes, which hold its stream id and seq) so an
    entry is framed once, however many clients follow it. :meth:`follower` gives the
    per-follower position that supplies the previous entry's kind."""

    def __init__(self, cache_size: int = _CACHE_SIZE) -> None:
        self._cache: dict[bytes, tuple[str, bytes, bool]] = {}
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def opening(self, message_id: str) -> bytes:
        """What a reply's stream starts with: ``start`` naming the assistant message
        (the stream id; for a continuation, the id of the assistant message the client
        sent last, see :func:`..ai_sdk_messages.response_message_id`) and ``start-step``."""
        return _chunk({"type": "start", "messageId": message_id}) + _START_STEP

    def body(self, chunk: bytes) -> tuple[str, bytes, bool]:
        """The kind and cached body of one log entry (as the log encodes it), and whether
        it is a run's kind (text, reasoning: nothing to add inside a run)."""
        cached = self._cache.get(chunk)
        if cached is None:
            entry = parse_entry(chunk)
            cached = (entry.kind, body(entry), entry.kind in _RUNS)
            with self._lock:
                if len(self._cache) >= self._cache_size:
                    self._cache.clear()  # followers of a live entry are served within moments
                self._cache[chunk] = cached
        return cached

    def frame(self, previous: str | None, chunk: bytes) -> tuple[bytes, str]:
        """One log entry framed after an entry of kind ``previous``, and its own kind
        (the ``previous`` of the next entry)."""
        kind, framed, _ = self.body(chunk)
        between = transition(previous, kind)
        return (between + framed if between else framed), kind

    def follower(self) -> UIMessageFollower:
        """A new follower's position: before the first entry of the reply."""
        return UIMessageFollower(self)


class UIMessageFollower:
    """One follower of one reply: frames the entries handed to it (each exactly once, in
    log order, from seq 1) with the shared framer, remembering the last entry's kind."""

    __slots__ = ("_cache", "_framer", "previous")

    def __init__(self, framer: UIMessageFramer) -> None:
        self._framer = framer
        self._cache = framer._cache  # the hot path: one dict lookup per entry
        self.previous: str | None = None

    def opening(self, message_id: str) -> bytes:
        return self._framer.opening(message_id)

    def frame(self, chunk: bytes) -> bytes:
        """One log entry (as the log encodes it) framed for this follower."""
        kind, framed, run = self._cache.get(chunk) or self._framer.body(chunk)
        previous, self.previous = self.previous, kind
        if run and previous == kind:
            return framed  # inside a run: the cached bytes as they are
        between = transition(previous, kind)
        return between + framed if between else framed

    def frame_many(self, chunk: bytes) -> bytes:
        """Every entry in ``chunk`` framed: a replay, or a batch the log handed over at
        once (entries are joined, each ending with a blank line)."""
        if chunk.count(b"\n\n") == 1 and chunk.endswith(b"\n\n"):
            return self.frame(chunk)  # one entry: the common case, no copy of it
        if not chunk.strip():
            return b""
        return b"".join(self.frame(part + b"\n\n") for part in chunk.split(b"\n\n")
                        if part.strip())
