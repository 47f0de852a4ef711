"""Helpers for the AI SDK tests on real servers (tests/apps/protocols_app.py with the
scripted backend of tests/apps/scripted.py): what a scripted reply looks like to useChat,
the Node runs of tests/node/ai-sdk-server.mjs, reading streams with httpx clients, and
the app's record of ``on_finish`` calls."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from flask_sse_stream.chat import ToolResult
from tests.apps.scripted import SCRIPTS, script_text
from tests.servers import Server
from tests.sse_parser import parse

APP = "tests.apps.protocols_app:create_app()"
NODE_DIR = Path(__file__).parent / "node"
LOCATION = {"city": "Paris", "lat": 48.86, "lon": 2.35}  # what the pages' getLocation says
WEATHER = next(p.result for p in SCRIPTS["parts"] if isinstance(p, ToolResult))


def scripted_env(delay: float, **extra: str) -> dict[str, str]:
    return {"FLASK_CHAT_BACKEND": "scripted", "FLASK_CHAT_DEMO_DELAY": str(delay),
            "FLASK_TICKER_INTERVAL": "0", **extra}


def need_node(*packages: str) -> None:
    if shutil.which("node") is None or not all(
            (NODE_DIR / "node_modules" / name).is_dir() for name in packages):
        pytest.skip("node or the npm packages are missing (scripts/test installs them)")


def run_node(**config: Any) -> dict[str, Any]:
    """tests/node/ai-sdk-server.mjs with ``config`` (see its header) on stdin."""
    done = subprocess.run(["node", "ai-sdk-server.mjs"], cwd=NODE_DIR,
                          input=json.dumps({"location": LOCATION, **config}),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def ui_body(chat_id: str, text: str) -> dict[str, Any]:
    """What DefaultChatTransport posts for a first user message."""
    return {"id": chat_id, "trigger": "submit-message", "messageId": None,
            "messages": [{"id": f"u-{chat_id}", "role": "user",
                          "parts": [{"type": "text", "text": text}]}]}


def chunks_of(raw: bytes) -> list[Any]:
    """The ``data:`` payloads of a UI message stream, JSON-decoded (``[DONE]`` as is)."""
    return [e.data if e.data == "[DONE]" else json.loads(e.data) for e in parse(raw).events]


def text_of(chunks: list[Any]) -> str:
    return "".join(c["delta"] for c in chunks if c != "[DONE]" and c["type"] == "text-delta")


class Reading:
    """A streamed response read chunk by chunk: ``until(marker)``, then ``rest()``."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.body = b""
        self._bytes: Iterator[bytes] = response.iter_bytes()

    def until(self, marker: bytes) -> bytes:
        while marker not in self.body:
            self.body += next(self._bytes)
        return self.body

    def rest(self) -> list[Any]:
        for piece in self._bytes:
            self.body += piece
        return chunks_of(self.body)


# -- what useChat shows for the scripted "parts" reply ----------------------------------------

PARTS_TYPES = ["step-start", "reasoning", "text", "tool-get_weather", "step-start",
               "source-url", "data-progress", "text"]
PARTS_NAMES = ["Reasoning", "Reasoning", "str", "ToolCall", "ToolResult", "Source", "Data",
               "str", "str", "str"]  # what on_finish gets, in order


def check_parts_message(parts: list[dict[str, Any]]) -> None:
    """``parts`` are those of the assembled "parts" reply, each with its content."""
    assert [p["type"] for p in parts] == PARTS_TYPES
    reasoning, first, tool, _, source, data, last = parts[1:]
    assert (reasoning["text"], reasoning["state"]) == ("The user asks about the weather.", "done")
    assert first["text"] == "Let me look that up. "
    assert (tool["toolCallId"], tool["state"], tool["input"], tool["output"]) == \
        ("call_weather", "output-available", {"city": "Paris"}, WEATHER)
    assert (source["url"], source["title"]) == ("https://weather.example/paris", "Paris weather")
    assert data["data"] == {"done": 1, "of": 1}
    assert (last["text"], last["state"]) == ("It is sunny in Paris, 21 °C.", "done")
    assert first["text"] + last["text"] == script_text("parts")


# -- on_finish, as tests/apps/protocols_app.py records it -------------------------------------


def finished(server: Server, chat_id: str, count: int = 1,
             timeout: float = 15.0) -> list[dict[str, Any]]:
    """The ``on_finish`` records of ``chat_id`` once there are ``count`` (on_finish runs
    in the generation's task after its close entry: a client may see the end first)."""
    deadline = time.monotonic() + timeout
    while True:
        replies = httpx.get(server.url + "/finished", timeout=5).json()["replies"]
        mine = [r for r in replies if r["chat_id"] == chat_id]
        if len(mine) >= count or time.monotonic() > deadline:
            return mine
        time.sleep(0.02)  # an HTTP record to poll: no event to await from here
