"""Fast tier: docs/react.md's ``on_finish`` example does what the page says: one saved
record per reply, with its chat id, text, parts, finish reason and usage, for a finished
reply and for a stopped one. (tests/test_docs_snippets.py runs every block; this drives
that one, in process.)"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from flask_sse_stream.chat import DemoBackend, Usage
from flask_sse_stream.testing import read_events
from tests.test_docs_snippets import python_blocks

PAGE = "docs/react.md"


@pytest.fixture
def example() -> dict[str, Any]:
    [block] = [b for b in python_blocks(PAGE) if "def save_reply" in b.code]
    namespace: dict[str, Any] = {"__name__": "react_md_on_finish"}
    exec(compile(block.code, f"{PAGE}:{block.line}", "exec"), namespace)  # our own docs
    return namespace


def saved(example: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """The example's records once there are ``count`` (on_finish runs in the reply's own
    thread after its last chunk: the client may see the end first)."""
    deadline = time.monotonic() + 10
    while len(example["saved_replies"]) < count and time.monotonic() < deadline:
        time.sleep(0.005)  # a list the example appends to: nothing to await
    return list(example["saved_replies"])


def body(chat_id: str, text: str) -> dict[str, Any]:
    return {"id": chat_id, "messages": [{"id": "u1", "role": "user",
                                         "parts": [{"type": "text", "text": text}]}]}


def test_on_finish_saves_each_finished_reply_once(example: dict[str, Any],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "sleep", lambda seconds: None)  # DemoBackend's pacing
    client = example["app"].test_client()
    response = client.post("/api/chat", json=body("doc-chat", "show me parts"))
    assert response.get_data().endswith(b"data: [DONE]\n\n")
    [record] = saved(example, 1)
    pieces = list(DemoBackend(delay=0, parts=True).stream(
        [{"role": "user", "content": "show me parts"}]))
    said = [p for p in pieces if not isinstance(p, Usage)]
    assert (record["chat_id"], record["finish_reason"], record["error"]) == \
        ("doc-chat", "stop", None)
    assert record["text"] == "".join(p for p in said if isinstance(p, str))
    assert [p["type"] for p in record["parts"]] == \
        ["text" if isinstance(p, str) else type(p).__name__ for p in said]
    assert record["parts"][len(said) - 1] == {"type": "text", "text": said[-1]}
    tool = next(p for p in record["parts"] if p["type"] == "ToolCall")
    assert (tool["name"], tool["arguments"]) == ("word_count", {"text": "show me parts"})
    assert record["usage"]["total_tokens"] > 0
    json.dumps(record)  # what the page saves is plain JSON


def test_on_finish_saves_a_stopped_reply_as_cancelled(example: dict[str, Any]) -> None:
    client = example["app"].test_client()
    stream = client.post("/api/chat", json=body("doc-stop", "a long one"), buffered=False)
    read_events(stream, count=3)
    assert client.delete("/api/chat/doc-stop/stream").status_code == 204
    [record] = saved(example, 1)
    assert (record["chat_id"], record["finish_reason"]) == ("doc-stop", "cancelled")
