"""Playwright helpers and fixtures for the browser tests of the example chat page.

- ``chromium``: Debian's ``/usr/bin/chromium`` driven by Playwright (never a downloaded
  browser), one per test session.
- ``chat_server``: the real example app on gunicorn with gevent workers.
- ``proxy``: a loopback TCP proxy between the browser and gunicorn that can cut every open
  connection (``drop()``) or refuse new ones for a while (``outage()``), to simulate a
  network drop in the middle of a streamed reply.
- ``open_chat(...)``: a fresh page on the chat page, with the length of ``#reply`` recorded
  after every DOM change in ``window.__lengths`` (to see the reply grow piece by piece).
- ``full_reply(prompt)``: the complete reply the demo backend gives for a prompt, to compare
  the page against; ``read_stream(...)`` reads (or resumes) a chat stream with httpx.

A test module makes the fixtures visible to pytest by binding them at module level
(``open_chat = browser.open_chat``), as tests/test_browser.py does.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    Playwright,
    sync_playwright,
)

from tests.servers import ROOT, Server, gunicorn_server

__all__ = [
    "ChatPage",
    "TcpProxy",
    "chat_server",
    "chromium",
    "full_reply",
    "open_chat",
    "playwright_instance",
    "proxy",
    "read_stream",
]

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# A token every 50 ms: slow enough to watch (and to interrupt), fast enough for a test.
SERVER_ENV = {
    "FLASK_CHAT_DEMO_DELAY": "0.05",
    "FLASK_SSE_RETRY_MS": "300",  # reconnect quickly after the simulated network drop
    "FLASK_TICKER_INTERVAL": "1",  # tests/conftest.py turns the ticker off by default
}
SCREENSHOT = ROOT / "docs" / "screenshot.png"

# Records every distinct length of #reply (the reply being written) in window.__lengths.
RECORD_LENGTHS = """
window.__lengths = [];
window.addEventListener("DOMContentLoaded", () => {
  const record = () => {
    const reply = document.getElementById("reply");
    const n = reply ? reply.textContent.length : 0;
    if (window.__lengths[window.__lengths.length - 1] !== n) window.__lengths.push(n);
  };
  new MutationObserver(record).observe(document.getElementById("transcript"),
    { subtree: true, childList: true, characterData: true });
});
"""


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def playwright_instance() -> Iterator[Playwright]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def chromium(playwright_instance: Playwright) -> Iterator[Browser]:
    browser = playwright_instance.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def chat_server() -> Iterator[Server]:
    with gunicorn_server(env=SERVER_ENV) as server:
        yield server


@pytest.fixture
def proxy(chat_server: Server) -> Iterator[TcpProxy]:
    with TcpProxy(chat_server.port) as p:
        yield p


@dataclass
class ChatPage:
    """A browser page showing the chat, plus what went wrong on it."""

    page: Page
    base_url: str
    page_errors: list[str] = field(default_factory=list)

    def send(self, message: str, mode: str = "get") -> None:
        self.page.check(f"#mode-{mode}")
        self.page.fill("#message", message)
        self.page.press("#message", "Enter")

    @property
    def reply(self) -> Locator:
        return self.page.locator("#reply")

    def reply_text(self) -> str:
        return str(self.page.eval_on_selector("#reply", "el => el.textContent"))

    def lengths(self) -> list[int]:
        return list(self.page.evaluate("() => window.__lengths"))

    def wait_for_length(self, n: int, timeout: float = 20_000) -> None:
        """Wait until the reply being written has at least ``n`` characters."""
        self.page.wait_for_function(
            "n => (document.getElementById('reply')?.textContent.length ?? 0) >= n",
            arg=n,
            timeout=timeout,
        )

    def wait_for_state(self, *states: str, timeout: float = 30_000) -> str:
        """Wait until ``#reply`` has ended in one of ``states``; return the state."""
        self.page.wait_for_function(
            "states => states.includes(document.getElementById('reply')?.dataset.state)",
            arg=list(states),
            timeout=timeout,
        )
        return str(self.reply.get_attribute("data-state"))

    def dataset(self) -> dict[str, str]:
        return dict(self.page.eval_on_selector("#reply", "el => ({...el.dataset})"))


@pytest.fixture
def open_chat(chromium: Browser, chat_server: Server) -> Iterator[Callable[..., ChatPage]]:
    """Open the chat page (``open_chat()``, or ``open_chat(url, bypass_csp=True)``)."""
    contexts = []
    pages: list[ChatPage] = []

    def open_(base_url: str | None = None, **context_options: object) -> ChatPage:
        base_url = base_url or chat_server.url
        context = chromium.new_context(viewport={"width": 1100, "height": 760}, **context_options)  # type: ignore[arg-type]
        contexts.append(context)
        context.add_init_script(RECORD_LENGTHS)
        page = context.new_page()
        page.set_default_timeout(20_000)
        chat = ChatPage(page, base_url)
        page.on("pageerror", lambda exc: chat.page_errors.append(str(exc)))
        page.on("console", lambda msg: _log_console(chat, msg))
        page.goto(base_url + "/")
        page.wait_for_function("() => document.getElementById('status')?.dataset.state === 'idle'")
        pages.append(chat)
        return chat

    yield open_
    for context in contexts:
        context.close()
    for chat in pages:
        assert chat.page_errors == [], f"JavaScript errors on the page: {chat.page_errors}"


def _log_console(chat: ChatPage, msg: ConsoleMessage) -> None:
    if msg.type == "error":
        print(f"[browser console] {msg.text}")  # shown by pytest when a test fails


# --- reading a reply straight from the server ---------------------------------------------


@dataclass
class StreamResult:
    status: int
    events: list[tuple[str, str, str]]  # (event, data, id)

    @property
    def text(self) -> str:
        return "".join(json.loads(d)["content"] for e, d, _ in self.events if e == "message")

    @property
    def close(self) -> dict[str, object] | None:
        closes = [json.loads(d) for e, d, _ in self.events if e == "close"]
        return closes[-1] if closes else None


def read_stream(
    base_url: str,
    message: str | None = None,
    *,
    last_event_id: str | None = None,
    timeout: float = 60.0,
) -> StreamResult:
    """POST to the chat stream and read it to the end (or resume with ``last_event_id``)."""
    from httpx_sse import EventSource

    headers = {"Accept": "text/event-stream"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    events: list[tuple[str, str, str]] = []
    body = {"message": message if message is not None else "resume"}
    with (
        httpx.Client(timeout=timeout) as client,
        client.stream("POST", base_url + "/chat/stream", json=body, headers=headers) as response,
    ):
        if response.status_code != 200:
            response.read()
            return StreamResult(response.status_code, events)
        for sse in EventSource(response).iter_sse():
            events.append((sse.event, sse.data, sse.id))
            if sse.event == "close":
                break
    return StreamResult(200, events)


def full_reply(message: str, history: list[dict[str, str]] | None = None) -> str:
    """The whole reply the demo backend gives for ``message`` after the turns in
    ``history`` (it is deterministic, and says how many messages it received)."""
    from flask_sse_stream.chat import DemoBackend

    return DemoBackend.reply_for([*(history or []), {"role": "user", "content": message}])


# --- a TCP proxy that can drop connections ------------------------------------------------


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``127.0.0.1:<target_port>``, byte for byte.

    ``drop()`` resets every open connection (both sides), like a network failure mid-reply;
    ``outage()`` also refuses new connections until the ``with`` block ends.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.sockets: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.refusing = False
        self.accepted = 0
        self.dropped = 0
        self.closed = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                _reset(client)
                continue
            with self.lock:
                self.accepted += 1
                self.sockets |= {client, upstream}
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with self.lock:
            dropped = src not in self.sockets
            self.sockets.discard(src)
        if not dropped:
            with suppress(OSError):
                dst.shutdown(socket.SHUT_WR)  # pass on a clean half-close
        with suppress(OSError):
            src.close()  # after drop() (SO_LINGER 0) this sends a reset

    def drop(self) -> int:
        """Reset every open connection now; return how many were cut."""
        with self.lock:
            victims = list(self.sockets)
            self.sockets.clear()
        for sock in victims:
            with suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                # Wakes the pump thread blocked in recv(); it closes the socket (a close
                # from here would wait for that recv() to return before anything is sent).
                sock.shutdown(socket.SHUT_RD)
        self.dropped += len(victims) // 2
        return len(victims) // 2

    @contextmanager
    def outage(self) -> Iterator[None]:
        """Cut every connection and refuse new ones until the block ends."""
        self.refusing = True
        try:
            self.drop()
            yield
        finally:
            self.refusing = False

    def close(self) -> None:
        self.closed = True
        with suppress(OSError):
            self.listener.close()
        self.drop()


def _reset(sock: socket.socket) -> None:
    """Close with RST (not FIN): the peer sees a broken connection, not a finished one."""
    with suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with suppress(OSError):
        sock.close()
