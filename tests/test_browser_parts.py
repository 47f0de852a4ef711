"""The example page shows a reply's parts in Chromium: the demo backend in its parts mode
(reasoning, a tool call with its result, a source, a data part, then the text), on both
transports, and a reply cut mid-parts that resumes shows each part exactly once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser

from flask_sse_stream.chat import DemoBackend
from tests.browser import ChatPage, TcpProxy
from tests.servers import Server, gunicorn_server

pytestmark = [pytest.mark.slow, pytest.mark.browser]

PARTS_ENV = {
    "FLASK_CHAT_DEMO_DELAY": "0.02",
    "FLASK_CHAT_DEMO_PARTS": "1",
    "FLASK_SSE_RETRY_MS": "300",
}


@pytest.fixture(scope="module")
def parts_server() -> Iterator[Server]:
    with gunicorn_server(env=PARTS_ENV) as server:
        yield server


def open_page(chromium: Browser, url: str) -> tuple[ChatPage, object]:
    context = chromium.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    chat = ChatPage(page, url)
    page.on("pageerror", lambda exc: chat.page_errors.append(str(exc)))
    page.goto(url + "/")
    page.wait_for_function("() => document.getElementById('status')?.dataset.state === 'idle'")
    return chat, context


def shown_parts(chat: ChatPage) -> dict[str, object]:
    return dict(chat.page.evaluate("""() => {
        const turn = document.getElementById('reply').closest('li');
        const text = (sel) => [...turn.querySelectorAll(sel)].map(e => e.textContent);
        return {
          reasoning: turn.querySelector('.reasoning').hidden ? null
            : turn.querySelector('.reasoning-text').textContent,
          reasoningLabel: turn.querySelector('.reasoning summary').textContent,
          folded: !turn.querySelector('.reasoning').open,
          tools: [...turn.querySelectorAll('.tool')].map(t => ({
            name: t.querySelector('.tool-name').textContent, state: t.dataset.state,
            args: JSON.parse(t.querySelector('.tool-args').textContent),
            result: JSON.parse(t.querySelector('.tool-result')?.textContent ?? 'null')})),
          links: [...turn.querySelectorAll('.sources a')].map(a => [a.href, a.textContent]),
          data: text('.data-part .data-name'),
        };
    }"""))


@pytest.mark.parametrize("mode", ["get", "post"])
def test_the_page_shows_reasoning_tool_calls_sources_and_text(
    chromium: Browser, parts_server: Server, mode: str
) -> None:
    chat, context = open_page(chromium, parts_server.url)
    try:
        prompt = "count these words please"
        chat.send(prompt, mode)
        assert chat.wait_for_state("done", "error") == "done"
        messages = [{"role": "user", "content": prompt}]
        assert chat.reply_text() == DemoBackend.reply_for(messages)
        parts = shown_parts(chat)
        assert parts["reasoning"] == DemoBackend.reasoning_for(messages)
        assert parts["folded"] and str(parts["reasoningLabel"]).startswith("Reasoning (")
        assert parts["tools"] == [{
            "name": "word_count", "state": "done", "args": {"text": prompt},
            "result": {"words": 4, "characters": len(prompt)},
        }]
        links: list[list[str]] = parts["links"]  # type: ignore[assignment]
        [(href, title)] = links
        assert href.startswith("https://html.spec.whatwg.org/") and "Server-sent events" in title
        assert parts["data"] == ["word-count"]
        assert chat.dataset()["duplicates"] == "0" and chat.dataset()["gaps"] == "0"
        assert chat.page_errors == []
    finally:
        context.close()  # type: ignore[attr-defined]


def test_a_reply_cut_mid_parts_resumes_with_each_part_once(
    chromium: Browser, parts_server: Server
) -> None:
    with TcpProxy(parts_server.port) as proxy:
        chat, context = open_page(chromium, f"http://127.0.0.1:{proxy.port}")
        try:
            chat.send("cut me off while thinking", "get")
            chat.page.wait_for_function(
                "() => document.querySelector('#reply')?.closest('li')"
                ".querySelector('.reasoning-text')?.textContent.length > 0")
            assert proxy.drop() >= 1  # the connection drops mid-reasoning: EventSource resumes
            assert chat.wait_for_state("done", "error") == "done"
            messages = [{"role": "user", "content": "cut me off while thinking"}]
            assert chat.reply_text() == DemoBackend.reply_for(messages)
            parts = shown_parts(chat)
            assert parts["reasoning"] == DemoBackend.reasoning_for(messages)
            assert len(parts["tools"]) == 1 and len(parts["links"]) == 1  # type: ignore[arg-type]
            assert int(chat.dataset()["reconnects"]) >= 1
            assert chat.dataset()["gaps"] == "0"
        finally:
            context.close()  # type: ignore[attr-defined]
