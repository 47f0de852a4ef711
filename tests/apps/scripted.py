"""A chat backend that yields scripted replies with parts, chosen by the last user
message, for protocol tests on real servers (no model, no network).

The last user message names the script (its first word); ``delay`` seconds pass before
each piece (cooperative under gevent), so a reply can be cut and resumed mid-parts.
A tool message in the conversation (a client-side tool's result) makes the reply
``"the tool said: <content>"``, so a round trip is visible in the text.

Scripts: ``parts`` (reasoning, text, a server-side tool call and its result, a source,
a data part, more text), ``client-tool`` (text, then a call the client must run),
``tool-error`` (a call whose result is an error, then text), ``reasoning-only``,
``two-steps`` (two server-side tool steps), ``options`` (echoes the tools and tool_choice
it was given), ``held-parts`` (``parts`` that stops after the tool call until
:meth:`ScriptedBackend.release` is called: a test can act mid-reply without racing the
reply's end), anything else: a short text reply.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

from flask_sse_stream.chat import (
    Data,
    Finish,
    Reasoning,
    Source,
    ToolCall,
    ToolResult,
    Usage,
)
from flask_sse_stream.chat.parts import Part

__all__ = ["SCRIPTS", "ScriptedBackend", "script_text"]

WEATHER = ToolCall("call_weather", "get_weather", {"city": "Paris"})

SCRIPTS: dict[str, list[str | Part]] = {
    "parts": [
        Reasoning("The user asks "), Reasoning("about the weather."),
        "Let me look that up. ",
        WEATHER,
        ToolResult("call_weather", result={"city": "Paris", "sky": "sunny", "celsius": 21}),
        Source("https://weather.example/paris", "Paris weather"),
        Data("progress", {"done": 1, "of": 1}),
        "It is sunny ", "in Paris, ", "21 °C.",
    ],
    "client-tool": [
        "I need your location. ",
        ToolCall("call_where", "get_location", {"precision": "city"}),
    ],
    "tool-error": [
        ToolCall("call_broken", "get_weather", {"city": "Atlantis"}),
        ToolResult("call_broken", error="no such city: Atlantis"),
        "I could not find that city.",
    ],
    "reasoning-only": [Reasoning("Only "), Reasoning("thinking, "), Reasoning("no text.")],
    "two-steps": [
        ToolCall("call_1", "lookup", {"q": "first"}), ToolResult("call_1", result="one"),
        "Between the steps. ",
        ToolCall("call_2", "lookup", {"q": "second"}), ToolResult("call_2", result="two"),
        "Done.",
    ],
}


HOLD = "<hold>"  # in a script: wait here until released
SCRIPTS["held-parts"] = [*SCRIPTS["parts"][:4], HOLD, *SCRIPTS["parts"][4:]]


def script_text(name: str) -> str:
    """The text a script's reply holds (its ``str`` pieces joined)."""
    return "".join(p for p in SCRIPTS[name] if isinstance(p, str) and p != HOLD)


def _last(messages: list[dict[str, Any]], role: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = None
    for message in messages:
        if message.get("role") == role:
            found = message
    return found


class ScriptedBackend:
    """See the module docstring. ``calls`` records what each ``stream`` call got."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[dict[str, Any]] = []
        self._released = threading.Event()  # cooperative under gevent's patching

    def release(self) -> None:
        """Let every reply waiting at a hold go on (and later ones pass it)."""
        self._released.set()

    def stream(
        self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None,
        tool_choice: Any = None,
    ) -> Iterator[str | Part | Usage | Finish]:
        self.calls.append({"messages": messages, "tools": tools, "tool_choice": tool_choice})
        last_message = messages[-1] if messages else {}
        if last_message.get("role") == "tool":
            pieces: list[str | Part] = [f"the tool said: {last_message.get('content')}"]
        else:
            user = _last(messages, "user") or {}
            name = str(user.get("content") or "").split(" ", 1)[0]
            if name == "options":
                pieces = [json.dumps({"tools": tools, "tool_choice": tool_choice},
                                     sort_keys=True)]
            else:
                pieces = SCRIPTS.get(name, ["Hello ", "from ", "the script."])
        for piece in pieces:
            if piece == HOLD:
                self._released.wait(60)
                continue
            if self.delay:
                time.sleep(self.delay)  # module attribute: gevent's patch applies
            yield piece
        yield Usage(prompt_tokens=len(messages), completion_tokens=len(pieces),
                    total_tokens=len(messages) + len(pieces))
