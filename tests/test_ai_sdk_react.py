"""The useChat page (tests/node/react-chat: @ai-sdk/react, bundled by esbuild) in
Chromium, served by Playwright routes (no server): a reply with reasoning, a server-side
tool and a client-side tool, framed by the AI SDK framer, renders as its parts; the page
answers the client-side tool itself and posts its output back, which converts to the
backend's tool messages. The browser tests against the real app build on this page."""

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


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "esbuild").is_dir():
        pytest.skip("node or the npm packages are missing (scripts/test installs them)")
    out = tmp_path_factory.mktemp("react-chat") / "bundle.js"
    done = subprocess.run(["node", str(APP_DIR / "build.mjs"), str(out)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["warnings"] == 0
    return out.read_bytes()


@pytest.fixture
def page(chromium: Any, bundle: bytes) -> Iterator[Any]:
    context = chromium.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.route(lambda url: url.split("?")[0] == f"{ORIGIN}/", lambda route: route.fulfill(
        body=(APP_DIR / "index.html").read_bytes(), content_type="text/html"))
    page.route(f"{ORIGIN}/bundle.js", lambda route: route.fulfill(
        body=bundle, content_type="text/javascript"))
    page.errors = errors
    yield page
    context.close()


def test_use_chat_renders_reasoning_and_tools_and_posts_a_client_tool_output(page: Any) -> None:
    replies = [framed("two_tools", stream_id="firstAAA"),
               framed("after_tool", stream_id="secondBB", message_id="firstAAA")]
    posted: list[dict[str, Any]] = []

    def chat(route: Any) -> None:
        posted.append(json.loads(route.request.post_data))
        route.fulfill(status=200, headers=HEADERS, body=replies[len(posted) - 1])

    page.route(f"{ORIGIN}/api/chat", chat)
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
