"""The AI SDK routes on a real gunicorn server (our gevent worker) with the scripted
backend of tests/apps/scripted.py: the real `ai` package reads every part kind, a
client-side tool's round trip, a reconnect mid-reply; replies bound to the browser's
cookie; stop on disconnect; on_finish once per reply."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from flask_sse_stream.chat.protocols.ai_sdk import COOKIE
from flask_sse_stream.chat.protocols.ai_sdk_messages import ui_messages
from flask_sse_stream.chat.validation import ChatLimits
from tests.ai_sdk_live import (
    APP,
    LOCATION,
    PARTS_NAMES,
    PARTS_TYPES,
    Reading,
    check_parts_message,
    chunks_of,
    finished,
    need_node,
    run_node,
    scripted_env,
    text_of,
    ui_body,
)
from tests.apps.scripted import script_text
from tests.rawsse import open_stream
from tests.servers import OUR_WORKER, Server, gunicorn_server

pytestmark = pytest.mark.slow

RELEASES = ("ai", "ai5-strict")  # the newest, and the oldest whose chunk schemas are strict
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with gunicorn_server(APP, env=scripted_env(0.1), config=None,
                         worker_class=OUR_WORKER) as running:
        yield running


@pytest.fixture(scope="module")
def node(server: Server) -> dict[str, Any]:
    need_node(*RELEASES)
    return run_node(base=server.url, resumeBase=server.url, releases=list(RELEASES),
                    scenarios=["parts", "resume", "roundTrip"])


# -- the real ai package -----------------------------------------------------------------------


@pytest.mark.parametrize("release", RELEASES)
def test_the_ai_package_shows_every_part_kind_the_server_sends(
        node: dict[str, Any], release: str) -> None:
    read = node["releases"][release]["parts"]
    assert read["errors"] == []
    check_parts_message(read["message"]["parts"])
    assert read["types"][:2] == ["start", "start-step"]
    assert read["types"][-2:] == ["finish-step", "finish"]
    assert read["message"]["metadata"]["usage"]["total_tokens"] > 0


def test_a_client_side_tool_output_posted_back_continues_the_reply(
        node: dict[str, Any]) -> None:
    trip = node["roundTrip"]
    assert (trip["finishes"], trip["errors"], trip["status"]) == \
        (["tool-calls", "stop"], [], "ready")
    _user, assistant = trip["messages"]  # one assistant message: continued, not a second
    assert [(p["type"], p.get("state")) for p in assistant["parts"]] == [
        ("step-start", None), ("text", "done"), ("tool-get_location", "output-available"),
        ("step-start", None), ("text", "done")]
    assert assistant["parts"][2]["input"] == {"precision": "city"}
    # the backend got the tool's output as a tool message: the scripted reply says it
    said = json.dumps(LOCATION, separators=(",", ":"))
    assert assistant["parts"][-1]["text"] == f"the tool said: {said}"
    posted = trip["posted"][1]["messages"]
    assert [m["role"] for m in ui_messages(posted, ChatLimits())] == \
        ["user", "assistant", "tool"]


def test_a_reconnect_mid_reply_replays_every_part_once(node: dict[str, Any]) -> None:
    resume = node["resume"]
    assert resume["cut"]["types"][-1] == "tool-input-available"
    assert [p["type"] for p in resume["cut"]["parts"]] == PARTS_TYPES[:4]
    assert resume["errors"] == [] and resume["status"] == "ready"
    assert resume["requests"][0].startswith("GET /api/chat/resume-")
    _user, assistant = resume["messages"]  # replayed into the message it had: no duplicate
    check_parts_message(assistant["parts"])
    assert resume["afterFinish"] is None  # 204 once it finished


# -- bindings -------------------------------------------------------------------------------------


@contextmanager
def browser(server: Server) -> Iterator[httpx.Client]:
    """A client with its own cookie jar, which got its cookie from one request."""
    with httpx.Client(base_url=server.url, timeout=20) as client:
        assert client.get("/api/chat/warm-up/stream").status_code == 204
        assert client.cookies.get(COOKIE, path="/api/chat")
        yield client


def test_a_reply_bound_to_a_browser_cookie_is_that_browsers_alone(server: Server) -> None:
    chat = "bound-chat"
    url = f"{server.url}/api/chat/{chat}/stream"
    with browser(server) as alice, browser(server) as mallory, \
            alice.stream("POST", "/api/chat", json=ui_body(chat, "parts please")) as mine:
        alice_reading = Reading(mine)
        alice_reading.until(b'"text-delta"')
        assert mallory.get(url).status_code == 204
        assert mallory.delete(url).status_code == 404
        assert httpx.get(url).status_code == 204  # no cookie at all
        assert httpx.delete(url).status_code == 404
        # the same chat id from another browser, and from a cookie-less client: replies
        # of their own, started while alice's runs
        with mallory.stream("POST", "/api/chat", json=ui_body(chat, "two-steps")) as theirs, \
                httpx.stream("POST", f"{server.url}/api/chat", timeout=20,
                             json=ui_body(chat, "reasoning-only")) as plain:
            theirs_reading = Reading(theirs)
            theirs_reading.until(b'"type":"start"')
            Reading(plain).until(b'"type":"start"')
            with httpx.stream("GET", url, timeout=20) as plain_again:
                assert plain_again.status_code == 200  # a cookie-less client resumes its own
                Reading(plain_again).until(b'"reasoning-delta"')
            with alice.stream("GET", url) as alice_again:
                assert alice_again.status_code == 200  # alice's still runs: hers alone
                assert b"Let me look" in Reading(alice_again).until(b'"text-delta"')
            assert text_of(theirs_reading.rest()) == script_text("two-steps")
        rest = alice_reading.rest()
    assert [c if c == "[DONE]" else c["type"] for c in rest[-3:]] == \
        ["finish-step", "finish", "[DONE]"]  # never cancelled by the others' POSTs
    assert text_of(rest) == script_text("parts")


def test_a_browsers_new_post_for_its_chat_replaces_its_running_reply(server: Server) -> None:
    chat = "replaced-chat"
    with browser(server) as alice, \
            alice.stream("POST", "/api/chat", json=ui_body(chat, "parts please")) as first:
        reading = Reading(first)
        reading.until(b'"text-delta"')
        second = alice.post("/api/chat", json=ui_body(chat, "two-steps"))
        assert text_of(chunks_of(second.content)) == script_text("two-steps")
        assert reading.rest()[-2:] == [{"type": "abort"}, "[DONE]"]
    first_end, second_end = finished(server, chat, count=2)
    assert (first_end["finish_reason"], second_end["finish_reason"]) == ("cancelled", "stop")


# -- when a reply ends, and on_finish --------------------------------------------------------------


def test_on_finish_gets_each_reply_once_with_its_text_and_parts(server: Server) -> None:
    done = httpx.post(server.url + "/api/chat", json=ui_body("saved-1", "parts please"),
                      timeout=20)
    assert chunks_of(done.content)[-1] == "[DONE]"
    [record] = finished(server, "saved-1")
    assert (record["text"], record["parts"], record["finish_reason"], record["error"]) == \
        (script_text("parts"), PARTS_NAMES, "stop", None)
    tool = httpx.post(server.url + "/api/chat", json=ui_body("saved-2", "client-tool"),
                      timeout=20)
    assert chunks_of(tool.content)[-2] == {"type": "finish", "finishReason": "tool-calls",
                                           "messageMetadata": chunks_of(tool.content)[-2][
                                               "messageMetadata"]}
    [record] = finished(server, "saved-2")
    assert (record["parts"], record["finish_reason"]) == (["str", "ToolCall"], "tool_calls")
    # stopped with the DELETE: recorded once, as cancelled, with what it had said
    with open_stream(server.url + "/api/chat", "POST", headers=JSON,
                     body=json.dumps(ui_body("saved-3", "parts please")).encode()) as raw:
        raw.read_until(b'"text-delta"')
        assert httpx.delete(server.url + "/api/chat/saved-3/stream").status_code == 204
        assert chunks_of(raw.read_all())[-2:] == [{"type": "abort"}, "[DONE]"]
    [record] = finished(server, "saved-3")
    assert record["finish_reason"] == "cancelled"
    assert record["parts"] == PARTS_NAMES[:len(record["parts"])] and "str" in record["parts"]
    for chat in ("saved-1", "saved-2", "saved-3"):  # and no second call came since
        assert len(finished(server, chat, count=2, timeout=0.3)) == 1


def test_a_dropped_client_leaves_its_reply_running_for_a_resume(server: Server) -> None:
    """Without stop_on_disconnect (and with useChat's resume on, stop() only disconnects):
    the reply runs to its end, which is why a Stop button must send the DELETE."""
    with open_stream(server.url + "/api/chat", "POST", headers=JSON,
                     body=json.dumps(ui_body("dropped-1", "parts please")).encode()) as raw:
        raw.read_until(b'"text-delta"')
    [record] = finished(server, "dropped-1")
    assert (record["finish_reason"], record["text"]) == ("stop", script_text("parts"))


def test_stop_on_disconnect_stops_the_reply_when_its_client_leaves() -> None:
    env = scripted_env(0.1, FLASK_STOP_ON_DISCONNECT="1")
    with gunicorn_server(APP, env=env, config=None, worker_class=OUR_WORKER) as stopping:
        with open_stream(stopping.url + "/api/chat", "POST", headers=JSON,
                         body=json.dumps(ui_body("left-1", "parts please")).encode()) as raw:
            raw.read_until(b'"text-delta"')
        [record] = finished(stopping, "left-1")
        assert record["finish_reason"] == "cancelled"
        assert record["text"] != script_text("parts")
        assert httpx.get(stopping.url + "/api/chat/left-1/stream").status_code == 204
        # a client that stays gets the whole reply
        whole = httpx.post(stopping.url + "/api/chat", json=ui_body("left-2", "parts"),
                           timeout=20)
        assert text_of(chunks_of(whole.content)) == script_text("parts")
