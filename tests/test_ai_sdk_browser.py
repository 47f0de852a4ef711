"""React chat pages (tests/node/react-chat, bundled by esbuild) in Chromium against a
real gunicorn server with the scripted backend (tests/apps/scripted.py): the page and its
script are served at the server's origin by Playwright routes, every /api/chat request
goes to the server.

* useChat (@ai-sdk/react): a reply's reasoning and tool call with its result; a
  client-side tool the page answers, whose output the server continues the reply with;
  a reload mid-reply resumes it (the reply bound to this browser's cookie, which another
  browser cannot read);
* assistant-ui: its own resume (``resumable`` on AssistantChatTransport), which follows
  the ``x-resumable-stream-id`` header after a reload.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.ai_sdk_live import APP, LOCATION, NODE_DIR, WEATHER, scripted_env
from tests.apps.scripted import script_text
from tests.servers import OUR_WORKER, Server, gunicorn_server

pytestmark = [pytest.mark.slow, pytest.mark.browser]

APP_DIR = NODE_DIR / "react-chat"
PAGES = {"use-chat": ("index.html", "bundle.js"),
         "assistant-ui": ("assistant-ui.html", "assistant-ui.js")}
READY = ("document.querySelector('[data-testid=status]')?.textContent === 'ready'")
ASSISTANT = "[data-testid=message][data-role=assistant]"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "esbuild").is_dir():
        pytest.skip("node or the npm packages are missing (scripts/test installs them)")
    built = {}
    for name, (_, script) in PAGES.items():
        out = tmp_path_factory.mktemp("react-chat") / script
        done = subprocess.run(["node", str(APP_DIR / "build.mjs"), "--page", name, str(out)],
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        built[name] = out.read_bytes()
    return built


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    # 0.2 s a piece: the "parts" reply runs 2 s, long enough to reload in the middle
    with gunicorn_server(APP, env=scripted_env(0.2), config=None,
                         worker_class=OUR_WORKER) as running:
        yield running


@pytest.fixture
def open_page(chromium: Any, bundles: dict[str, bytes], server: Server
              ) -> Iterator[Callable[..., Any]]:
    """``open_page(name, query)``: page ``name`` at the server's origin, in a context
    (a browser profile: its own cookies) of its own."""
    contexts = []

    def open_page(name: str, query: str = "") -> Any:
        html, script = PAGES[name]
        context = chromium.new_context()
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.errors = []
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        page.route(lambda url: url.split("?")[0] == f"{server.url}/", lambda route:
                   route.fulfill(body=(APP_DIR / html).read_bytes(), content_type="text/html"))
        page.route(f"{server.url}/{script}", lambda route: route.fulfill(
            body=bundles[name], content_type="text/javascript"))
        page.goto(f"{server.url}/{query}")
        return page

    yield open_page
    for context in contexts:
        context.close()


def send(page: Any, text: str) -> None:
    page.get_by_test_id("input").fill(text)
    page.get_by_test_id("input").press("Enter")


def test_use_chat_shows_reasoning_and_a_tool_call_with_its_result(open_page: Any) -> None:
    page = open_page("use-chat", "?chat=browser-parts")
    send(page, "parts please")
    assistant = page.locator(ASSISTANT)
    assistant.get_by_text("It is sunny in Paris, 21 °C.").wait_for()
    page.wait_for_function(READY)
    reasoning = assistant.get_by_test_id("reasoning")
    assert reasoning.get_attribute("data-state") == "done"
    assert reasoning.locator("pre").text_content() == "The user asks about the weather."
    tool = assistant.locator("[data-tool=get_weather]")
    assert tool.get_attribute("data-state") == "output-available"
    assert json.loads(tool.get_by_test_id("tool-input").text_content()) == {"city": "Paris"}
    assert json.loads(tool.get_by_test_id("tool-output").text_content()) == WEATHER
    assert assistant.get_by_test_id("source").get_attribute("href") == \
        "https://weather.example/paris"
    assert json.loads(assistant.get_by_test_id("data").text_content()) == {"done": 1, "of": 1}
    assert "".join(assistant.get_by_test_id("text").all_text_contents()) == \
        script_text("parts")
    assert page.errors == []


def test_use_chat_answers_a_client_side_tool_and_the_server_continues(
        open_page: Any) -> None:
    page = open_page("use-chat", "?chat=browser-tool")
    send(page, "client-tool please")
    assistant = page.locator(ASSISTANT)
    said = json.dumps(LOCATION, separators=(",", ":"))
    assistant.get_by_text(f"the tool said: {said}").wait_for()
    page.wait_for_function(READY)
    assert assistant.count() == 1  # the continuation is the same message
    call = assistant.locator("[data-tool=get_location]")
    assert call.get_attribute("data-state") == "output-available"
    assert json.loads(call.get_by_test_id("tool-output").text_content()) == LOCATION
    assert assistant.get_by_test_id("text").all_text_contents() == \
        ["I need your location. ", f"the tool said: {said}"]
    assert page.errors == []


def test_use_chat_resumes_its_bound_reply_after_a_reload(
        open_page: Any, chromium: Any, server: Server) -> None:
    chat = "browser-resume"
    page = open_page("use-chat", f"?chat={chat}&resume=1")
    send(page, "hello")  # the first request: from here on the browser has its cookie
    page.locator(ASSISTANT).get_by_text("the script.").wait_for()
    page.wait_for_function(READY)
    send(page, "held-parts please")  # waits after its tool call until released
    page.locator(f"{ASSISTANT} [data-tool=get_weather]").wait_for()  # mid-reply
    other = chromium.new_context()  # another browser: the reply is not its to read
    try:
        assert other.request.get(f"{server.url}/api/chat/{chat}/stream").status == 204
    finally:
        other.close()
    page.reload()
    assistant = page.locator(ASSISTANT)  # the page kept no messages: only the resumed one
    assistant.locator("[data-tool=get_weather]").wait_for()  # replayed from its start
    assert page.request.post(f"{server.url}/release").json() == {"released": True}
    assistant.get_by_text("It is sunny in Paris, 21 °C.").wait_for()
    page.wait_for_function(READY)
    assert assistant.count() == 1
    assert assistant.get_by_test_id("text").all_text_contents() == \
        ["Let me look that up. ", "It is sunny in Paris, 21 °C."]
    assert assistant.locator("[data-tool=get_weather]").get_attribute("data-state") == \
        "output-available"
    assert page.errors == []


def test_assistant_ui_resumes_a_reply_after_a_reload_from_the_header(open_page: Any) -> None:
    page = open_page("assistant-ui", "?resumable=1")
    send(page, "parts please")
    page.locator(f"{ASSISTANT} [data-testid=tool]").wait_for()  # mid-reply
    assert page.evaluate("sessionStorage.getItem('aui-resumable-stream-id')")
    page.reload()
    assistant = page.locator(ASSISTANT)
    assistant.get_by_text("It is sunny in Paris, 21 °C.").wait_for()
    page.wait_for_function(READY)
    assert assistant.get_by_test_id("tool").get_attribute("data-tool") == "get_weather"
    assert json.loads(assistant.get_by_test_id("tool-output").text_content()) == WEATHER
    # the finish chunk came through: nothing is left to resume
    assert page.evaluate("sessionStorage.getItem('aui-resumable-stream-id')") is None
    assert page.errors == []
