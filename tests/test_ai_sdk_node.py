"""Replies with parts, framed by the AI SDK framer, as the real ``ai`` package reads them
(no server): DefaultChatTransport's own parser and chunk schemas, readUIMessageStream,
and the Chat engine useChat wraps, in four releases (7.x, the newest 6.x, and 6.0.230 and
5.0.216, the last whose chunk schemas refuse unknown fields). tests/node/ui-message-parts.mjs
does the reading; this test frames the bodies and checks what useChat would show."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from flask_sse_stream.chat.protocols.ai_sdk_messages import response_message_id, ui_messages
from flask_sse_stream.chat.validation import ChatLimits
from tests.ai_sdk_cases import LOCATION, REPLIES, STREAM_ID, WEATHER, framed
from tests.sse_parser import parse

NODE_DIR = Path(__file__).parent / "node"
RELEASES = ("ai", "ai6", "ai6-strict", "ai5-strict")
REPLAYS_WITHOUT_DUPLICATES = ("ai", "ai6")  # resumeStreamIsReplay: ai 6.0.304 and later
FIRST, SECOND = "firstAAA", "secondBB"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("node") is None
        or not all((NODE_DIR / "node_modules" / name).is_dir() for name in RELEASES),
        reason="node or the npm packages are missing (scripts/test installs them)",
    ),
]


def chunk_types(body: bytes) -> list[str]:
    return [json.loads(e.data)["type"] for e in parse(body).events if e.data != "[DONE]"]


@pytest.fixture(scope="module")
def bodies() -> dict[str, bytes]:
    return {name: framed(name) for name in REPLIES if name != "after_tool"}


@pytest.fixture(scope="module")
def results(bodies: dict[str, bytes]) -> dict[str, Any]:
    cases = {
        "streams": {name: body.decode() for name, body in bodies.items()},
        # the connection dropped after the first tool call; the reconnect replays it all
        "resume": {"prefix": framed("server_tools", upto=3).decode(),
                   "replay": bodies["server_tools"].decode()},
        "roundTrip": {
            "first": framed("client_tool", stream_id=FIRST).decode(),
            "second": framed("after_tool", stream_id=SECOND, message_id=FIRST).decode(),
            "secondNewId": framed("after_tool", stream_id=SECOND).decode(),
            "output": LOCATION,
        },
    }
    done = subprocess.run(["node", "ui-message-parts.mjs"], cwd=NODE_DIR,
                          input=json.dumps(cases), capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.fixture(params=RELEASES)
def release(request: pytest.FixtureRequest, results: dict[str, Any]) -> dict[str, Any]:
    return {**results[request.param], "name": request.param}


def read(release: dict[str, Any], name: str) -> tuple[list[dict[str, Any]], list[str]]:
    stream = release["streams"][name]
    return (stream["message"] or {"parts": []})["parts"], stream["errors"]


def test_every_chunk_passes_the_sdk_schemas(release: dict[str, Any],
                                            bodies: dict[str, bytes]) -> None:
    for name, body in bodies.items():
        assert release["streams"][name]["types"] == chunk_types(body), name


def test_text_and_usage(release: dict[str, Any]) -> None:
    parts, errors = read(release, "text")
    assert errors == []
    assert parts == [{"type": "step-start"},
                     {"type": "text", "text": "Hello, wörld 👋\nline two", "state": "done"}]
    assert release["streams"]["text"]["message"]["metadata"]["usage"]["total_tokens"] == 8


def test_reasoning_is_a_reasoning_part_before_the_text(release: dict[str, Any]) -> None:
    parts, errors = read(release, "reasoning")
    assert errors == []
    assert [p["type"] for p in parts] == ["step-start", "reasoning", "text"]
    assert parts[1]["text"] == "The user greets; answer politely."
    assert parts[1]["state"] == "done"
    assert parts[2]["text"] == "Hello there"


def test_server_side_tools_are_tool_parts_with_output_over_two_steps(
        release: dict[str, Any]) -> None:
    parts, errors = read(release, "server_tools")
    assert errors == []
    assert [p["type"] for p in parts] == [
        "step-start", "reasoning", "text", "tool-weather", "tool-weather",
        "step-start", "reasoning", "text"]
    paris, oslo = parts[3], parts[4]
    assert (paris["toolCallId"], paris["state"], paris["input"], paris["output"]) == \
        ("call_a", "output-available", {"city": "Paris"}, WEATHER)
    assert (oslo["toolCallId"], oslo["state"], oslo["input"]) == \
        ("call_b", "output-available", {"city": "Oslo"})
    assert parts[7]["text"] == "Paris is 21 °C, Oslo -3 °C."


def test_a_client_side_tool_call_waits_for_its_output(release: dict[str, Any]) -> None:
    parts, errors = read(release, "client_tool")
    assert errors == []
    call = parts[-1]
    assert (call["type"], call["state"], call["toolCallId"], call["input"]) == \
        ("tool-getLocation", "input-available", "call_c", {})
    assert "output" not in call


def test_a_tool_error_is_an_output_error_part(release: dict[str, Any]) -> None:
    parts, errors = read(release, "tool_error")
    assert errors == []
    call = parts[1]
    assert (call["type"], call["state"], call["errorText"], call["input"]) == \
        ("tool-weather", "output-error", "unknown city: Atlantis", {"city": "Atlantis"})
    assert [p["type"] for p in parts[2:]] == ["step-start", "text"]


def test_data_and_sources_are_their_own_parts(release: dict[str, Any]) -> None:
    parts, errors = read(release, "data_sources")
    assert errors == []
    assert parts[1] == {"type": "data-progress", "data": {"done": 1, "of": 2}}
    assert {k: parts[2][k] for k in ("type", "sourceId", "url", "title")} == \
        {"type": "source-url", "sourceId": f"{STREAM_ID}:2",
         "url": "https://example.org/a?x=1&y=2", "title": "Example A"}
    assert parts[3]["url"] == "https://example.org/b" and "title" not in parts[3]
    assert parts[3]["sourceId"] != parts[2]["sourceId"]
    assert parts[5] == {"type": "data-chart", "data": [1, 2.5, None, "three"]}


@pytest.mark.parametrize(("name", "error"), [
    ("error_close", "Error: upstream failed: 502 Bad Gateway"),
    ("expired", "Error: this reply expired"),
])
def test_a_failed_reply_reaches_the_app_as_its_error_text(
        release: dict[str, Any], name: str, error: str) -> None:
    parts, errors = read(release, name)
    assert errors == [error]
    assert [p.get("state") for p in parts if p["type"] == "text"] == \
        (["done"] if name == "error_close" else [])


def test_a_cancelled_reply_ends_its_parts_without_an_error(release: dict[str, Any]) -> None:
    parts, errors = read(release, "cancelled")
    assert errors == []
    assert [(p["type"], p.get("state")) for p in parts] == \
        [("step-start", None), ("reasoning", "done"), ("text", "done")]


def test_a_replayed_resume_shows_the_reply_once(release: dict[str, Any]) -> None:
    resume = release["resume"]
    assert resume["errors"] == []
    assert resume["requests"] == ["http://stub.invalid/api/chat/chat-resume/stream"]
    assert [p["type"] for p in resume["partial"]["parts"]] == \
        ["step-start", "reasoning", "text", "tool-weather"]
    whole = release["streams"]["server_tools"]["message"]
    if release["name"] in REPLAYS_WITHOUT_DUPLICATES:
        assert resume["messages"][1:] == [whole]
    # older releases append the replay to what the page showed (an SDK limitation
    # fixed in ai 6.0.304): the README names the releases that resume without duplicates


def test_a_client_tool_output_continues_the_same_assistant_message(
        release: dict[str, Any]) -> None:
    trip = release["roundTrip"]
    assert (trip["requests"], trip["finishes"], trip["errors"], trip["status"]) == \
        (2, ["tool-calls", "stop"], [], "ready")
    _user, assistant = trip["messages"]
    assert assistant["id"] == FIRST
    assert [(p["type"], p.get("state")) for p in assistant["parts"]] == [
        ("step-start", None), ("text", "done"), ("tool-getLocation", "output-available"),
        ("step-start", None), ("text", "done")]
    assert assistant["parts"][-1]["text"] == "You are in Paris."


def test_a_new_message_id_for_the_continuation_would_show_it_twice(
        release: dict[str, Any]) -> None:
    """Why the continuation's ``start`` names the message it continues."""
    messages = release["roundTripNewId"]["messages"]
    assert [m["id"] for m in messages[1:]] == [FIRST, SECOND]
    assert [p["type"] for p in messages[2]["parts"]][:3] == \
        ["step-start", "text", "tool-getLocation"]


def test_the_posted_tool_output_reaches_the_backend_as_tool_messages(
        release: dict[str, Any]) -> None:
    trip = release["roundTrip"]
    posted = trip["posted"][1]["messages"]
    assert trip["validation"] in ("valid", None)  # validateUIMessages, where it exists
    assert response_message_id(posted, SECOND) == FIRST
    assert ui_messages(posted, ChatLimits()) == [
        {"role": "user", "content": "Where am I?"},
        {"role": "assistant", "content": "I will ask your browser.",
         "tool_calls": [{"id": "call_c", "type": "function",
                         "function": {"name": "getLocation", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_c", "content": json.dumps(
            LOCATION, separators=(",", ":"))},
    ]
    # the SDK's own conversion (convertToModelMessages) has the same shape
    model = trip["modelMessages"]
    assert [m["role"] for m in model] == ["user", "assistant", "tool"]
    assert model[2]["content"][0]["toolCallId"] == "call_c"
    assert model[2]["content"][0]["output"]["value"] == LOCATION
