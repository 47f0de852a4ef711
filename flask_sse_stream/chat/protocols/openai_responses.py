"""The OpenAI Responses wire format over the generation log.

One reply is one ``response`` whose ``output`` holds an item per run of the reply: a
``message`` (text, one ``output_text`` part), a ``reasoning`` item (one
``reasoning_text`` content part) or a ``function_call`` per client-side tool call
(server-side calls and results, data and sources are not shown:
:class:`~.openai_shared.ClientToolCalls`; a server-side step's end closes the open item,
so the next model call's text is a new message). Streamed, every event is ``event:
<type>`` plus JSON data carrying ``type`` and ``sequence_number`` (from 0, up by one, as
OpenAI counts)::

    response.created, response.in_progress                         (the opening)
    response.output_item.added, response.content_part.added,
    response.output_text.delta..., response.output_text.done,
    response.content_part.done, response.output_item.done          (a message)
    ... response.reasoning_text.delta... response.reasoning_text.done ...  (reasoning)
    response.output_item.added, response.function_call_arguments.delta,
    response.function_call_arguments.done, response.output_item.done    (a tool call)
    response.completed                                              (with usage)

The end of a reply that did not complete:

* a backend failure: the open item ends ``incomplete``, then ``response.failed`` (status
  ``failed``, ``error.code`` ``server_error`` and the message);
* a cancel (DELETE, or the generation's client gone): the open item ends
  ``incomplete``, then ``response.incomplete`` with status ``cancelled``. Not
  ``response.failed``: nothing went wrong, the output so far is the model's own and
  stays usable, as OpenAI keeps an incomplete response's output; the status says the
  truth (``cancelled`` is a Responses status; no ``incomplete_details.reason`` fits);
* cut at the token limit or by a content filter (``finish_reason`` ``length`` /
  ``content_filter``): ``response.incomplete``, status ``incomplete``, with
  ``incomplete_details.reason`` ``max_output_tokens`` / ``content_filter``.

Calls a failed or cancelled reply still held are dropped. Pure: no Flask, no I/O; no SSE
``id:`` (see ``openai.py``) and no ``data: [DONE]`` (the Responses API sends none).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ...wire.event import Event, compact_json
from ..entries import CLOSE, REASONING, TEXT, TOOL_CALL, TOOL_RESULT, Entry
from .openai_shared import ClientToolCalls, failure, usage_counts

__all__ = ["ResponseBuilder", "ResponseEventFramer", "response_usage"]

DEFAULTS: dict[str, Any] = {
    "instructions": None,
    "tools": [],
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "metadata": {},
    "temperature": None,
    "top_p": None,
    "max_output_tokens": None,
    "previous_response_id": None,
    "store": False,  # nothing is kept: a later previous_response_id could not find it
    "background": False,
    "text": {"format": {"type": "text"}},
    "truncation": "disabled",
}
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
_PARTS = {  # per item type: id prefix, content part type, delta and done event types
    "message": ("msg", "output_text", "response.output_text.delta", "response.output_text.done"),
    "reasoning": ("rs", "reasoning_text", "response.reasoning_text.delta",
                  "response.reasoning_text.done"),
}


def response_usage(data: dict[str, Any]) -> dict[str, Any]:
    """A close entry's usage in the Responses shape (0 where the backend said nothing)."""
    counts = usage_counts(data)
    return {
        "input_tokens": counts["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": counts["completion_tokens"],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": counts["total_tokens"],
    }


@dataclass
class _Open:
    """The item receiving deltas: a message or a reasoning item."""

    index: int
    type: str
    id: str
    texts: list[str] = field(default_factory=list)


class ResponseState:
    """One response being built from the entries of one reply: its output items, and
    the events (dicts without ``sequence_number``) that build them. After the close
    entry, :attr:`final` is the finished ``response`` object."""

    def __init__(self, response_id: str, model: str, *, echo: dict[str, Any] | None = None,
                 created_at: int | None = None) -> None:
        self.response_id = response_id
        self.model = model
        self.created_at = int(time.time()) if created_at is None else created_at
        self.echo = {**DEFAULTS, **(echo or {})}
        self.items: list[dict[str, Any]] = []
        self.final: dict[str, Any] | None = None
        self._key = response_id.removeprefix("resp_")
        self._open: _Open | None = None
        self._visible = ClientToolCalls()

    def response(self, status: str, **fields: Any) -> dict[str, Any]:
        """The ``response`` object as it stands, with ``status`` and ``fields``."""
        return {
            "id": self.response_id, "object": "response", "created_at": self.created_at,
            "status": status, "error": None, "incomplete_details": None,
            "model": self.model, "output": [], "usage": None, **self.echo, **fields,
        }

    def opening(self) -> list[dict[str, Any]]:
        start = self.response("in_progress")
        return [{"type": "response.created", "response": start},
                {"type": "response.in_progress", "response": start}]

    def feed(self, entry: Entry) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for shown in self._visible.feed(entry):
            if shown.kind == TEXT and shown.content:
                events += self._delta("message", shown.content)
            elif shown.kind == REASONING and shown.content:
                events += self._delta("reasoning", shown.content)
            elif shown.kind == TOOL_CALL:
                events += self._end("completed") + self._call(shown.data)
            elif shown.kind == TOOL_RESULT:  # a server-side step ended: so does its item
                events += self._end("completed")
            elif shown.kind == CLOSE:
                events += self._close(shown.data)
        return events

    def _delta(self, kind: str, text: str) -> list[dict[str, Any]]:
        events = []
        if self._open is None or self._open.type != kind:
            events += self._end("completed") + self._begin(kind)
        assert self._open is not None
        self._open.texts.append(text)
        event = {"type": _PARTS[kind][2], "item_id": self._open.id,
                 "output_index": self._open.index, "content_index": 0, "delta": text}
        if kind == "message":
            event["logprobs"] = []
        events.append(event)
        return events

    def _begin(self, kind: str) -> list[dict[str, Any]]:
        index = len(self.items)
        item_id = f"{_PARTS[kind][0]}_{self._key}_{index}"
        self._open = _Open(index, kind, item_id)
        item = self._item(self._open, "in_progress", [])
        self.items.append(item)
        return [
            {"type": "response.output_item.added", "output_index": index, "item": item},
            {"type": "response.content_part.added", "item_id": item_id, "output_index": index,
             "content_index": 0, "part": self._part(kind, "")},
        ]

    @staticmethod
    def _part(kind: str, text: str) -> dict[str, Any]:
        if kind == "message":
            return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        return {"type": "reasoning_text", "text": text}

    @staticmethod
    def _item(open_item: _Open, status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
        if open_item.type == "message":
            return {"id": open_item.id, "type": "message", "status": status,
                    "role": "assistant", "content": content}
        return {"id": open_item.id, "type": "reasoning", "summary": [], "content": content,
                "status": status}

    def _end(self, status: str) -> list[dict[str, Any]]:
        """The done events of the open item (none if no item is open)."""
        current, self._open = self._open, None
        if current is None:
            return []
        text = "".join(current.texts)
        where = {"item_id": current.id, "output_index": current.index, "content_index": 0}
        done: dict[str, Any] = {"type": _PARTS[current.type][3], **where, "text": text}
        if current.type == "message":
            done["logprobs"] = []
        part = self._part(current.type, text)
        item = self._item(current, status, [part])
        self.items[current.index] = item
        return [
            done,
            {"type": "response.content_part.done", **where, "part": part},
            {"type": "response.output_item.done", "output_index": current.index, "item": item},
        ]

    def _call(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        index = len(self.items)
        item_id = f"fc_{self._key}_{index}"
        arguments = compact_json(data.get("arguments") or {})
        item = {"id": item_id, "type": "function_call", "status": "in_progress",
                "call_id": str(data.get("id")), "name": str(data.get("name")), "arguments": ""}
        done = {**item, "status": "completed", "arguments": arguments}
        self.items.append(done)
        where = {"item_id": item_id, "output_index": index}
        return [
            {"type": "response.output_item.added", "output_index": index, "item": item},
            {"type": "response.function_call_arguments.delta", **where, "delta": arguments},
            {"type": "response.function_call_arguments.done", **where, "arguments": arguments},
            {"type": "response.output_item.done", "output_index": index, "item": done},
        ]

    def _close(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        message = failure(data)
        reason = str(data.get("finish_reason") or "stop")
        fields: dict[str, Any]
        if message is not None and reason == "error":
            kind, status = "response.failed", "failed"
            fields = {"error": {"code": "server_error", "message": message}}
        elif message is not None:
            kind, status, fields = "response.incomplete", "cancelled", {}
        elif reason in INCOMPLETE:
            kind, status = "response.incomplete", "incomplete"
            fields = {"incomplete_details": {"reason": INCOMPLETE[reason]}}
        else:
            kind, status = "response.completed", "completed"
            fields = {"completed_at": int(time.time())}
        events = self._end("completed" if status == "completed" else "incomplete")
        self.final = self.response(status, output=list(self.items),
                                   usage=response_usage(data), **fields)
        events.append({"type": kind, "response": self.final})
        return events


class ResponseEventFramer:
    """The entries of one reply as the Responses event stream of one request. Stateful
    (sequence numbers, the items so far): one per request, fed each entry once, in log
    order."""

    def __init__(self, response_id: str, model: str, *, echo: dict[str, Any] | None = None,
                 created_at: int | None = None) -> None:
        self.state = ResponseState(response_id, model, echo=echo, created_at=created_at)
        self._sequence = 0

    def _encode(self, events: list[dict[str, Any]]) -> bytes:
        out = []
        for event in events:
            kind = event["type"]
            data = {"type": kind, "sequence_number": self._sequence, **event}
            self._sequence += 1
            out.append(Event(data, event=kind).encode())
        return b"".join(out)

    def opening(self) -> bytes:
        """``response.created`` and ``response.in_progress``, sent before any entry."""
        return self._encode(self.state.opening())

    def frame(self, entry: Entry) -> bytes:
        """The events this request's client gets for ``entry`` (often none: a held or
        hidden entry)."""
        return self._encode(self.state.feed(entry))


class ResponseBuilder:
    """The entries of one reply gathered into one ``response`` object (the answer to a
    request without ``stream``). Feed entries with :meth:`add` until :attr:`done`; the
    object's ``status`` says how it ended (``completed``, ``incomplete``, ``cancelled``
    or ``failed`` with ``error``), and :attr:`failure` is the message of the last two."""

    def __init__(self, response_id: str, model: str, *, echo: dict[str, Any] | None = None,
                 created_at: int | None = None) -> None:
        self.state = ResponseState(response_id, model, echo=echo, created_at=created_at)
        self._failure: str | None = None

    @property
    def done(self) -> bool:
        return self.state.final is not None

    @property
    def failure(self) -> str | None:
        return self._failure

    def add(self, entry: Entry) -> None:
        if entry.kind == CLOSE:
            self._failure = failure(entry.data)
        self.state.feed(entry)

    def response(self) -> dict[str, Any]:
        """The finished ``response`` object (``in_progress`` with the output so far if
        the close entry never came)."""
        return self.state.final or self.state.response("in_progress",
                                                       output=list(self.state.items))
