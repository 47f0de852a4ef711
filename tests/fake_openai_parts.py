"""The fake OpenAI server's modes for reasoning and tool calls (see ``tests/fake_openai.py``).

A mixin of the fake's request handler: it uses the handler's ``_send_event``,
``_check_alive``, ``_chunk`` and ``_finish_stream``. Kept apart so each module stays
readable; the modes are documented in ``tests/fake_openai.py``.
"""

from __future__ import annotations

import json
from typing import Any

DEFAULT_REASONING = ["Let", " me", " think", " about", " this", " — ", "carefully", "."]
DEFAULT_TOOL_CALLS: list[dict[str, Any]] = [
    {"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}},
    {"name": "get_time", "arguments": {"zone": "Europe/Paris"}},
]
TOOL_REPLY_PREFIX = "The tool said: "

PARTS_MODES = (
    "reasoning_content",
    "reasoning",
    "reasoning_only",
    "tool_call",
    "tool_calls",
    "tools_forever",
)


def split_text(text: str, size: int) -> list[str]:
    """``text`` in pieces of ``size`` characters (at least one piece)."""
    return [text[i : i + size] for i in range(0, len(text), max(size, 1))] or [""]


class PartsModes:
    """Streams of reasoning and tool calls; ``self`` is the fake's request handler."""

    fake: Any

    def _send_event(self, data: str | dict[str, Any]) -> None:  # the handler's
        raise NotImplementedError

    def _check_alive(self, wait: float = 0.0) -> None:
        raise NotImplementedError

    def _chunk(self, stream_id: str, model: Any, delta: dict[str, Any],
               finish: Any = None) -> Any:
        raise NotImplementedError

    def _finish_stream(self, body: dict[str, Any], stream_id: str, model: Any,
                       finish: str, pieces: list[str]) -> None:
        raise NotImplementedError

    def _stream_parts(self, body: dict[str, Any], mode: str, stream_id: str) -> None:
        """One of :data:`PARTS_MODES` (headers and the role chunk are sent)."""
        model = body.get("model")
        messages = body.get("messages") or []
        answered = bool(messages) and isinstance(messages[-1], dict) and (
            messages[-1].get("role") == "tool")
        if mode.startswith("reasoning"):
            field = "reasoning_content" if mode == "reasoning_content" else "reasoning"
            self._send_deltas(stream_id, model, field, list(self.fake.reasoning_pieces))
            pieces = [] if mode == "reasoning_only" else list(self.fake.pieces)
            self._send_deltas(stream_id, model, "content", pieces)
            self._finish_stream(body, stream_id, model, "stop", pieces)
            return
        if answered and mode != "tools_forever":
            # the tool messages came back: answer with their content
            results = [m.get("content") for m in messages if m.get("role") == "tool"]
            pieces = [TOOL_REPLY_PREFIX, *(str(r) for r in results[-2:])]
            self._send_deltas(stream_id, model, "content", pieces)
            self._finish_stream(body, stream_id, model, "stop", pieces)
            return
        calls = self.fake.tool_calls[: 2 if mode == "tool_calls" else 1]
        self._send_tool_calls(stream_id, model, calls)
        self._finish_stream(body, stream_id, model, "tool_calls", [])

    def _send_deltas(self, stream_id: str, model: Any, field: str, pieces: list[str]) -> None:
        for i, piece in enumerate(pieces):
            if self.fake.delay and i:
                self._check_alive(self.fake.delay)
            delta: dict[str, Any] = {field: piece}
            if field != "content":
                delta["content"] = None
            self._send_event(self._chunk(stream_id, model, delta))

    def _send_tool_calls(self, stream_id: str, model: Any, calls: list[dict[str, Any]]) -> None:
        """Each call's first fragment (id, name), then its arguments in small pieces,
        the calls' fragments interleaved by index."""
        with self.fake._cond:
            self.fake._call_seq += 1
            seq = self.fake._call_seq
        streams = []
        for index, call in enumerate(calls):
            arguments = call["arguments"]
            text = arguments if isinstance(arguments, str) else json.dumps(arguments)
            head = {"index": index, "id": f"call_{seq}_{index}", "type": "function",
                    "function": {"name": call["name"], "arguments": ""}}
            rest = [{"index": index, "function": {"arguments": piece}}
                    for piece in split_text(text, self.fake.argument_chunk)]
            streams.append([head, *rest])
        longest = max((len(s) for s in streams), default=0)
        for position in range(longest):
            for fragments in streams:
                if position < len(fragments):
                    delta = {"content": None, "tool_calls": [fragments[position]]}
                    self._send_event(self._chunk(stream_id, model, delta))
