"""The chat pages of tests/node/react-chat (bundled by esbuild) in Chromium, served by
Playwright routes (no server), reading replies framed by the AI SDK framer:

* useChat (@ai-sdk/react): a reply with reasoning, a server-side tool and a client-side
  tool renders as its parts; the page answers the client-side tool itself and posts its
  output back, which converts to the backend's tool messages;
* assistant-ui (@assistant-ui/react-ai-sdk): reasoning, tool calls with their results or
  errors, and text, with assistant-ui's own message primitives.

The browser tests against the real app build on these pages."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flask_sse_stream.chat.protocols.ai_sdk_messages import response_message_id, ui_messages
from flask_sse_stream.chat.validation import ChatLimits
from tests.ai_sdk_cases import LOCATION, WEATHER, framed

pytestmark = [pytest.mark.slow, pytest.mark.browser]

NODE_DIR = Path(__file__).parent / "node"
APP_DIR = NODE_DIR / "react-chat"
ORIGIN = "http://chat.test"
HEADERS = {"content-type": "text/event-stream", "x-vercel-ai-ui-message-stream": "v1"}


PAGES = {"use-chat": ("index.html", "bundle.js"),
         "assistant-ui": ("assistant-ui.html", "assistant-ui.js")}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Each page's script, built by tests/node/react-chat/build.mjs."""
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "esbuild").is_dir():
        pytest.skip("node or the npm packages are missing (scripts/test installs them)")
    built = {}
    for name, (_, script) in PAGES.items():
        out = tmp_path_factory.mktemp("react-chat") / script
        done = subprocess.run(["node", str(APP_DIR / "build.mjs"), "--page", name, str(out)],
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["warnings"] == 0
        built[name] = out.read_bytes()
    return built


@pytest.fixture
def open_page(chromium: Any, bundles: dict[str, bytes]) -> Iterator[Any]:
    """``open_page(name, replies)``: the page ``name`` answering each POST to /api/chat
    with the next of ``replies``; returns the page and the list of posted bodies."""
    context = chromium.new_context()

    def open_page(name: str, replies: list[bytes]) -> tuple[Any, list[dict[str, Any]]]:
        html, script = PAGES[name]
        page = context.new_page()
        page.errors = []
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        page.route(lambda url: url.split("?")[0] == f"{ORIGIN}/", lambda route: route.fulfill(
            body=(APP_DIR / html).read_bytes(), content_type="text/html"))
        page.route(f"{ORIGIN}/{script}", lambda route: route.fulfill(
            body=bundles[name], content_type="text/javascript"))
        posted: list[dict[str, Any]] = []

        def chat(route: Any) -> None:
            posted.append(json.loads(route.request.post_data))
            route.fulfill(status=200, headers=HEADERS, body=replies[len(posted) - 1])

        page.route(f"{ORIGIN}/api/chat", chat)
        return page, posted

    yield open_page
    context.close()


def send(page: Any, text: str) -> None:
    """Type ``text``, press Enter, and wait for the reply to end."""
    page.get_by_test_id("input").fill(text)
    page.get_by_test_id("input").press("Enter")
    page.wait_for_function(
        "document.querySelector('[data-testid=status]').textContent === 'ready' && "
        "document.querySelectorAll('[data-testid=message]').length > 1")


def test_use_chat_renders_reasoning_and_tools_and_posts_a_client_tool_output(
        open_page: Any) -> None:
    page, posted = open_page("use-chat", [
        framed("two_tools", stream_id="firstAAA"),
        framed("after_tool", stream_id="secondBB", message_id="firstAAA")])
    page.goto(f"{ORIGIN}/?chat=browser-tools")
    page.get_by_test_id("input").fill("Weather here?")
    page.get_by_test_id("input").press("Enter")
    assistant = page.locator('[data-testid=message][data-role=assistant]')
    assistant.get_by_text("You are in Paris.").wait_for()
    page.wait_for_function(
        "document.querySelector('[data-testid=status]').textContent === 'ready'")

    assert page.errors == []
    assert assistant.count() == 1 and assistant.get_attribute("data-id") == "firstAAA"
    reasoning = assistant.get_by_test_id("reasoning")
    assert reasoning.get_attribute("data-state") == "done"
    assert "Weather first, then where you are." in reasoning.text_content()
    weather = assistant.locator("[data-tool=weather]")
    assert weather.get_attribute("data-state") == "output-available"
    assert json.loads(weather.get_by_test_id("tool-input").text_content()) == {"city": "Paris"}
    assert json.loads(weather.get_by_test_id("tool-output").text_content()) == WEATHER
    location = assistant.locator("[data-tool=getLocation]")
    assert location.get_attribute("data-state") == "output-available"
    assert json.loads(location.get_by_test_id("tool-output").text_content()) == LOCATION
    assert assistant.get_by_test_id("text").all_text_contents() == \
        ["Now your location.", "You are in Paris."]

    assert len(posted) == 2  # the page posted getLocation's output on its own
    messages = posted[1]["messages"]
    assert response_message_id(messages, "secondBB") == "firstAAA"
    backend = ui_messages(messages, ChatLimits())
    assert [m["role"] for m in backend] == ["user", "assistant", "tool", "assistant", "tool"]
    assert backend[1]["tool_calls"][0]["function"] == \
        {"name": "weather", "arguments": '{"city":"Paris"}'}
    assert json.loads(backend[2]["content"]) == WEATHER
    assert backend[3]["content"] == "Now your location."
    assert (backend[4]["tool_call_id"], json.loads(backend[4]["content"])) == \
        ("call_c", LOCATION)


def test_assistant_ui_renders_reasoning_tool_results_errors_and_text(open_page: Any) -> None:
    page, posted = open_page("assistant-ui", [framed("server_tools", stream_id="firstAAA"),
                                              framed("tool_error", stream_id="secondBB")])
    page.goto(f"{ORIGIN}/")
    send(page, "Weather in Paris and Oslo?")
    first = page.locator("[data-testid=message][data-role=assistant]").nth(0)
    assert first.get_by_test_id("reasoning").all_text_contents() == \
        ["ReasoningTwo cities: call the tool twice.", "ReasoningBoth known."]
    tools = first.get_by_test_id("tool")
    assert tools.count() == 2
    assert [json.loads(t) for t in tools.get_by_test_id("tool-input").all_text_contents()] \
        == [{"city": "Paris"}, {"city": "Oslo"}]
    assert json.loads(tools.nth(0).get_by_test_id("tool-output").text_content()) == WEATHER
    assert first.get_by_test_id("text").all_text_contents() == \
        ["Let me check.", "Paris is 21 °C, Oslo -3 °C."]

    page.get_by_test_id("input").fill("And Atlantis?")
    page.get_by_test_id("input").press("Enter")
    second = page.locator("[data-testid=message][data-role=assistant]").nth(1)
    second.get_by_text("I could not find Atlantis.").wait_for()
    failed = second.get_by_test_id("tool")
    assert (failed.get_attribute("data-tool"), failed.get_attribute("data-error")) == \
        ("weather", "1")
    assert page.errors == []
    # what assistant-ui posts (its own metadata on each message) converts like useChat's
    backend = ui_messages(posted[1]["messages"], ChatLimits())
    assert [m["role"] for m in backend] == \
        ["user", "assistant", "tool", "tool", "assistant", "user"]
    assert [m["content"] for m in backend[2:4]] == \
        [json.dumps(WEATHER, separators=(",", ":"), ensure_ascii=False),
         '{"city":"Oslo","temperature":-3}']
