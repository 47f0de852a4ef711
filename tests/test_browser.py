"""The example chat page in a real browser (Chromium via Playwright) against gunicorn.

Both transports are covered: GET with the browser's EventSource and POST with the
fetch-based client in example_app/static/sse-client.js.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.browser import SCREENSHOT, SERVER_ENV, full_reply, read_stream
from tests.servers import Server, gunicorn_server

pytestmark = [pytest.mark.slow, pytest.mark.browser]


MODES = ["get", "post"]
# The demo backend echoes the prompt, so a longer prompt gives a longer reply: long enough
# to stop it or cut the network in the middle.
LONG_PROMPT = (
    "Explain server-sent events: the text/event-stream format, ids and Last-Event-ID, "
    "retry, heartbeats, and why proxies must not buffer the response. " * 3
).strip()
XSS = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=1</script>'


def distinct_increasing(lengths: list[int]) -> list[int]:
    """The strictly increasing run of values in a recorded length series."""
    run: list[int] = []
    for n in lengths:
        if not run or n > run[-1]:
            run.append(n)
    return run


@pytest.mark.parametrize("mode", MODES)
def test_reply_grows_piece_by_piece(open_chat, mode):
    prompt = f"Hello over {mode.upper()}, how are you?"
    expected = full_reply(prompt)
    chat = open_chat()

    chat.send(prompt, mode)

    # The message box is cleared, the user's message is shown, the state goes live.
    assert chat.page.input_value("#message") == ""
    assert chat.page.locator("#transcript .turn.user .bubble").last.text_content() == prompt
    assert chat.wait_for_state("done") == "done"
    assert chat.reply_text() == expected
    lengths = chat.lengths()
    growth = distinct_increasing(lengths)
    assert growth == sorted(set(lengths)), f"the reply shrank at some point: {lengths}"
    assert len(growth) >= 10, f"the reply did not arrive piece by piece: {lengths}"
    assert growth[-1] == len(expected)
    data = chat.dataset()
    assert data["finishReason"] == "stop"
    assert data["duplicates"] == "0" and data["gaps"] == "0"
    assert chat.page.locator("#status").get_attribute("data-state") == "done"
    assert chat.page.locator(f"#transcript .badge-{mode}").count() == 1
    assert chat.page.is_enabled("#send") and chat.page.is_disabled("#stop")


def test_both_modes_side_by_side(open_chat):
    """One page, one reply over GET and one over POST, each labelled with its transport.
    The POST carries the GET turn as history; the GET carried only its own message."""
    chat = open_chat()
    history: list[dict[str, str]] = []
    for mode in MODES:
        prompt = f"Same question via {mode}"
        chat.send(prompt, mode)
        chat.wait_for_state("done")
        expected = full_reply(prompt, history if mode == "post" else None)
        assert chat.reply_text() == expected
        history += [{"role": "user", "content": prompt}, {"role": "assistant", "content": expected}]
    replies = chat.page.locator("#transcript .turn.assistant")
    assert replies.count() == 2
    assert [replies.nth(i).get_attribute("data-mode") for i in range(2)] == MODES
    assert chat.page.locator("#reply").count() == 1  # only the newest reply has the id


def test_conversation_goes_back_as_messages(open_chat):
    """Two turns over POST: the second request carries the whole conversation, and the
    demo backend's reply says it received three messages. GET carries only the last."""
    chat = open_chat()
    bodies = []
    chat.page.on(
        "request",
        lambda r: bodies.append(json.loads(r.post_data or "null"))
        if r.method == "POST" and r.url.endswith("/chat/stream")
        else None,
    )
    first, second = "What is a server-sent event?", "And how does it resume after a drop?"
    chat.send(first, "post")
    chat.wait_for_state("done")
    reply = chat.reply_text()
    assert reply == full_reply(first)
    assert "holds 1 message." in reply

    chat.send(second, "post")
    chat.wait_for_state("done")
    history = [{"role": "user", "content": first}, {"role": "assistant", "content": reply}]
    assert chat.reply_text() == full_reply(second, history)
    assert "the conversation so far holds 3 messages." in chat.reply_text()
    assert chat.page.get_by_text("holds 3 messages").count() == 1  # on screen, once
    assert chat.dataset()["sentMessages"] == "3"
    assert bodies == [
        {"messages": [{"role": "user", "content": first}]},
        {"messages": [*history, {"role": "user", "content": second}]},
    ]

    # EventSource can only put the last message in the URL; the page says so.
    chat.send("Over GET now", "get")
    chat.wait_for_state("done")
    assert chat.reply_text() == full_reply("Over GET now")
    assert chat.dataset()["sentMessages"] == "1"
    assert "last message only" in (chat.page.text_content("#mode") or "")


@pytest.mark.parametrize("mode", MODES)
def test_stop_stops_the_reply(open_chat, chat_server, mode):
    expected = full_reply(LONG_PROMPT)
    chat = open_chat()
    chat.send(LONG_PROMPT, mode)
    chat.wait_for_length(20)

    chat.page.click("#stop")

    assert chat.wait_for_state("stopped") == "stopped"
    stopped_at = chat.reply_text()
    assert 0 < len(stopped_at) < len(expected)
    assert expected.startswith(stopped_at)
    chat.page.wait_for_function("() => document.getElementById('reply').dataset.deleteStatus")
    data = chat.dataset()
    assert data["deleteStatus"] == "204"
    assert chat.page.locator("#status").get_attribute("data-state") == "stopped"
    assert chat.page.is_enabled("#send") and chat.page.is_disabled("#stop")

    # The server really stopped generating: resuming after the last piece the page got
    # yields at most the few pieces made before the DELETE, then a "cancelled" close.
    rest = read_stream(chat_server.url, last_event_id=f"{data['streamId']}:{data['lastSeq']}")
    if rest.status == 200:
        assert rest.close is not None and rest.close["finish_reason"] == "cancelled", rest
        assert len(stopped_at + rest.text) < len(expected)
    else:
        assert rest.status == 204  # the cancelled generation is already gone
    # And nothing more reached the page after Stop.
    assert chat.reply_text() == stopped_at
    assert chat.lengths()[-1] == len(stopped_at)


@pytest.mark.parametrize("mode", MODES)
def test_resume_after_dropped_connection(open_chat, proxy, mode):
    expected = full_reply(LONG_PROMPT)
    chat = open_chat(proxy.url)
    chat.send(LONG_PROMPT, mode)
    chat.wait_for_length(30)

    with proxy.outage():  # every connection is reset; new ones are refused for now
        chat.page.wait_for_function(
            "() => document.getElementById('status').dataset.state === 'reconnecting'"
        )
        at_drop = chat.reply_text()
    assert len(at_drop) < len(expected), "the reply ended before the drop: use a longer prompt"

    assert chat.wait_for_state("done") == "done"
    assert chat.reply_text() == expected  # nothing lost, nothing doubled
    data = chat.dataset()
    assert int(data["reconnects"]) >= 1
    assert data["duplicates"] == "0" and data["gaps"] == "0"
    growth = distinct_increasing(chat.lengths())
    assert growth[-1] == len(expected) and len(at_drop) in growth
    assert proxy.dropped >= 1


@pytest.mark.parametrize("mode", MODES)
def test_html_in_message_and_reply_is_text(open_chat, mode):
    # bypass_csp: the page's Content-Security-Policy would block inline scripts anyway;
    # switch it off to prove the page never turns text into HTML in the first place.
    chat = open_chat(bypass_csp=True)
    chat.send(XSS, mode)

    assert chat.wait_for_state("done") == "done"
    assert chat.page.locator("#transcript .turn.user .bubble").last.text_content() == XSS
    reply = chat.reply_text()
    assert XSS in reply
    assert reply == full_reply(XSS)
    assert chat.page.locator("#transcript img, #transcript script").count() == 0
    assert chat.page.evaluate("() => typeof window.__pwned") == "undefined"
    assert chat.page.get_by_text(XSS).count() >= 1  # visible, literally


def test_ticker_updates_live(open_chat):
    chat = open_chat()
    page = chat.page
    page.wait_for_function(
        "() => /^\\d+$/.test(document.getElementById('ticker-tick').textContent)"
    )
    first = int(page.text_content("#ticker-tick") or "0")
    page.wait_for_function(
        "n => Number(document.getElementById('ticker-tick').textContent) > n",
        arg=first,
        timeout=10_000,
    )
    assert page.locator("#ticker").get_attribute("data-state") == "live"
    assert (page.text_content("#ticker-streams") or "").isdigit()
    assert re.fullmatch(r"\d\d?:\d\d:\d\d.*", page.text_content("#ticker-time") or "")


def test_error_response_is_shown_post(open_chat):
    chat = open_chat()
    chat.send("x" * 200_000, "post")  # far over any sensible message size limit

    assert chat.wait_for_state("error") == "error"
    error = chat.page.locator("#error")
    assert error.is_visible()
    assert error.text_content()
    assert chat.page.locator("#status").get_attribute("data-state") == "error"
    assert chat.page.is_enabled("#send")


@pytest.mark.parametrize("mode", MODES)
def test_json_error_is_shown(open_chat, mode):
    """A 4xx JSON error is shown, even for EventSource (which cannot read the body)."""
    chat = open_chat()
    chat.page.route(
        "**/chat/stream*",
        lambda route: route.fulfill(
            status=429, content_type="application/json", body='{"error": "slow down <b>please</b>"}'
        ),
    )
    chat.send("hello", mode)

    assert chat.wait_for_state("error") == "error"
    assert chat.page.text_content("#error") == "slow down <b>please</b>"


def test_screenshot_mid_reply(open_chat, tmp_path):
    """A picture of the page with a reply half-written (for the README and the docs).

    It is written to docs/screenshot.png when that file is missing or when
    UPDATE_SCREENSHOT=1; otherwise to a temporary directory, so runs leave git clean.
    """
    prompt = "How does Last-Event-ID let a dropped stream resume where it stopped?"
    expected = full_reply(prompt)
    chat = open_chat()
    chat.send("What is SSE, in one sentence?", "get")
    chat.wait_for_state("done")
    chat.send(prompt, "post")
    chat.wait_for_length(len(expected) // 2)
    chat.page.wait_for_function(
        "() => /^\\d+$/.test(document.getElementById('ticker-tick').textContent)"
    )

    path = tmp_path / "screenshot.png"
    chat.page.screenshot(path=str(path), animations="disabled")  # caret shown, not blinking

    assert chat.reply.get_attribute("data-state") == "streaming"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("UPDATE_SCREENSHOT") == "1" or not SCREENSHOT.exists():
        shutil.copyfile(path, SCREENSHOT)
    chat.page.click("#stop")


# --- the fetch-based client (static/sse-client.js) on its own -----------------------------

PARSER_CASES = [
    # (chunks fed one by one, expected [(type, data, lastEventId)], expected retry)
    (["data: a\r", "\ndata: b\r\n\r\n"], [("message", "a\nb", "")], None),  # CRLF split
    (["data:x\rdata: y\r\r"], [("message", "x\ny", "")], None),  # CR line endings
    ([": heartbeat\n", "data: 1\n", "\n"], [("message", "1", "")], None),  # comment
    (["event: close\nid: s:4\ndata: {}\n\n"], [("close", "{}", "s:4")], None),
    (["id: 7\n\n", "data: q\n\n"], [("message", "q", "7")], None),  # the id persists
    (["id: a\0b\ndata: z\n\n"], [("message", "z", "")], None),  # an id with NUL is ignored
    (["event: foo\n\n", "data: bar\n\n"], [("message", "bar", "")], None),  # no data: no event
    (["data\n\n"], [("message", "", "")], None),  # a field name alone: empty value
    (["data:  two\n\n"], [("message", " two", "")], None),  # only one space is stripped
    (["dat", "a: split fi", "eld\n", "\n"], [("message", "split field", "")], None),
    (["unknown: x\ndata: ok\n\n"], [("message", "ok", "")], None),
    (["id: s:1\ndata: done\n\nid: s:2\ndata: tail"], [("message", "done", "s:1")], None),
    (["retry: 1500\nretry: 2x\n"], [], 1500),  # only ASCII digits count
]


def test_sse_client_parses_per_whatwg(open_chat):
    chat = open_chat()
    results = chat.page.evaluate(
        """async (cases) => {
          const { EventStreamParser } = await import("/static/sse-client.js");
          return cases.map((chunks) => {
            const events = [];
            let retry = null;
            const parser = new EventStreamParser({
              onEvent: (e) => events.push([e.type, e.data, e.lastEventId]),
              onRetry: (ms) => (retry = ms),
            });
            chunks.forEach((chunk) => parser.feed(chunk));
            return { events, retry };
          });
        }""",
        [chunks for chunks, _, _ in PARSER_CASES],
    )
    for (chunks, events, retry), got in zip(PARSER_CASES, results, strict=True):
        assert [tuple(e) for e in got["events"]] == events, chunks
        assert got["retry"] == retry, chunks


RUN_SOURCE = """async ({ closeOnClose }) => {
  const { FetchEventSource } = await import("/static/sse-client.js");
  const source = new FetchEventSource("/scripted-stream", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ message: "hi" }),
  });
  const log = [];
  return await new Promise((resolve) => {
    source.addEventListener("message", (e) => log.push(["message", e.data, e.lastEventId]));
    source.addEventListener("close", (e) => {
      log.push(["close", e.data, e.lastEventId]);
      if (closeOnClose) {
        source.close();
        resolve({ log, readyState: source.readyState });
      }
    });
    source.addEventListener("error", (e) => {
      log.push(["error", source.readyState, e.detail?.status ?? null, e.detail?.message ?? null]);
      if (source.readyState === 2) resolve({ log, readyState: source.readyState });
    });
  });
}"""


def scripted_stream(page: Any, responses: list[tuple[int, Any]]) -> list[tuple[Any, ...]]:
    """Answer /scripted-stream with ``responses`` in turn; return the requests seen."""
    requests: list[tuple[Any, ...]] = []

    def handle(route: Any) -> None:
        request = route.request
        requests.append((request.method, request.headers, request.post_data))
        status, body = responses[len(requests) - 1]
        content_type = "text/event-stream" if status == 200 else "application/json"
        route.fulfill(status=status, body=body, content_type=content_type)

    page.route("**/scripted-stream", handle)
    return requests


@pytest.mark.parametrize("close_on_close", [True, False])
def test_sse_client_resumes_with_last_event_id_and_stops(open_chat, close_on_close):
    chat = open_chat()
    requests = scripted_stream(
        chat.page,
        [
            # The body ends after two events, without a close: a broken stream.
            (200, 'retry: 20\n: hi\nid: s:1\ndata: {"n":1}\n\nid: s:2\ndata: {"n":2}\n\n'),
            (200, 'id: s:3\ndata: {"n":3}\n\nevent: close\nid: s:4\ndata: {"done":1}\n\n'),
            (204, ""),  # only reached when the page does not close() on the close event
            (500, '{"error": "a finished request must never be sent again"}'),
        ],
    )
    result = chat.page.evaluate(RUN_SOURCE, {"closeOnClose": close_on_close})

    expected = [
        ["message", '{"n":1}', "s:1"],
        ["message", '{"n":2}', "s:2"],
        ["error", 0, 0, "connection lost"],  # readyState CONNECTING: it will resume
        ["message", '{"n":3}', "s:3"],
        ["close", '{"done":1}', "s:4"],
    ]
    if not close_on_close:
        expected += [["error", 0, 0, "connection lost"], ["error", 2, 204, result["log"][-1][3]]]
    assert result["log"] == expected
    assert result["readyState"] == 2
    assert len(requests) == (2 if close_on_close else 3)
    for i, (method, headers, body) in enumerate(requests):
        assert (method, body) == ("POST", '{"message":"hi"}')  # the same request each time
        assert headers["accept"] == "text/event-stream"
        assert headers.get("last-event-id") == [None, "s:2", "s:4"][i]


def test_sse_client_reports_http_errors_without_retrying(open_chat):
    chat = open_chat()
    requests = scripted_stream(chat.page, [(413, '{"error": "message too long"}')] * 2)
    result = chat.page.evaluate(RUN_SOURCE, {"closeOnClose": True})
    assert result["log"] == [["error", 2, 413, "message too long"]]
    assert len(requests) == 1


# --- token header mode (FLASK_CHAT_TOKEN) --------------------------------------------------

TOKEN = "demo-token-4711"


@pytest.fixture(scope="module")
def token_server() -> Iterator[Server]:
    with gunicorn_server(env={**SERVER_ENV, "FLASK_CHAT_TOKEN": TOKEN}) as server:
        yield server


def test_token_mode_refuses_requests_without_the_token(token_server):
    url = token_server.url + "/chat/stream"
    with httpx.Client(timeout=10) as client:
        for headers in ({}, {"token": "wrong"}, {"token": TOKEN + "x"}):
            refused = client.post(url, json={"message": "hi"}, headers=headers)
            assert refused.status_code == 401, headers
            assert refused.json() == {"error": "not authorized"}
        # The cookie is for EventSource (GET) only; a POST needs the header.
        cookie = {"Cookie": f"chat_token={TOKEN}"}
        refused = client.post(url, json={"message": "hi"}, headers=cookie)
        assert refused.status_code == 401
        assert client.get(url, params={"message": "hi"}).status_code == 401
        # With the cookie, a GET passes the check (and then fails validation: no message).
        assert client.get(url, headers=cookie).status_code == 400
        assert client.delete(url + "/abc", headers={"token": "wrong"}).status_code == 401
        assert client.delete(url + "/abc", headers={"token": TOKEN}).status_code == 404


@pytest.mark.parametrize("mode", MODES)
def test_token_mode_page_works_with_the_token(open_chat, token_server, mode):
    chat = open_chat(token_server.url)
    cookie = {c["name"]: c for c in chat.page.context.cookies()}["chat_token"]
    assert (cookie["value"], cookie["httpOnly"], cookie["sameSite"]) == (TOKEN, True, "Strict")
    sent = []
    chat.page.on(
        "request",
        lambda r: sent.append((r.method, r.headers.get("token")))
        if "/chat/stream" in r.url
        else None,
    )

    chat.send("Hello with a token", mode)
    assert chat.wait_for_state("done") == "done"
    assert chat.reply_text() == full_reply("Hello with a token")

    chat.send(LONG_PROMPT, mode)  # Stop sends DELETE with the token header too
    chat.wait_for_length(20)
    chat.page.click("#stop")
    chat.page.wait_for_function("() => document.getElementById('reply').dataset.deleteStatus")
    assert chat.dataset()["deleteStatus"] == "204"
    expected_header = None if mode == "get" else TOKEN  # EventSource: the cookie instead
    assert [h for m, h in sent if m != "DELETE"] == [expected_header] * 2
    assert [h for m, h in sent if m == "DELETE"] == [TOKEN]

    # The same page without the header is refused: the token is what lets it in.
    status = chat.page.evaluate(
        """async () => (await fetch("/chat/stream", {method: "POST",
             headers: {"Content-Type": "application/json"},
             body: JSON.stringify({message: "no token"})})).status"""
    )
    assert status == 401
