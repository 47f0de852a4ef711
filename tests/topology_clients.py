"""Clients for the Redis topology tests: streams that resume like ``EventSource``,
publishers that record what succeeded, and the check that nothing was skipped in
silence (every successfully published event arrived, or a ``reset`` came before the
hole)."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx

from tests.rawsse import RawResponse, open_stream
from tests.servers import Server
from tests.sse_parser import ParsedEvent, parse


@dataclass
class Item:
    """One thing a stream delivered for a channel: an event (``n`` from its data) or a
    reset."""

    kind: str  # "event" or "reset"
    channel: str
    n: int | None = None
    event_id: str = ""


def own_id(event_id: str) -> str:
    """The broker id of an event's own channel: a multi-channel cursor names it first
    (``chan@id,other@id``); a single-channel id is the broker id."""
    return event_id.split(",", 1)[0].rpartition("@")[2]


def channel_of(event: ParsedEvent, channels: list[str]) -> str:
    """An event's channel: the id's part before ``@`` on a multi-channel stream, the
    reset's ``channel`` field, or the only channel."""
    if len(channels) == 1:
        return channels[0]
    if event.type == "reset":
        return str(json.loads(event.data)["channel"])
    return event.last_event_id.split("@", 1)[0]


class ResumingStream:
    """A channel stream read in a thread that reconnects with ``Last-Event-ID`` when the
    server ends it (as ``EventSource`` does), so a test sees what a real client keeps."""

    def __init__(self, server: Server, channels: Iterable[str], *,
                 last_event_id: str | None = None, reconnect_delay: float = 0.2) -> None:
        self.server = server
        self.channels = list(channels)
        self.last_event_id = last_event_id
        self.reconnect_delay = reconnect_delay
        self.items: list[Item] = []
        self.connects = 0
        self.errors: list[str] = []
        self._changed = threading.Condition()
        self._closed = False
        self._resp: RawResponse | None = None
        self._resp = self._connect()  # subscribed once this returns
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"{self.server.url}/stream?" + urlencode([("channel", c) for c in self.channels])

    def _connect(self) -> RawResponse:
        headers = {"Last-Event-ID": self.last_event_id} if self.last_event_id else {}
        resp = open_stream(self.url, headers=headers, timeout=30)
        self.connects += 1
        if resp.status != 200:
            body = resp.read_all()
            resp.close()
            raise RuntimeError(f"stream answered {resp.status}: {body[:300]!r}")
        return resp

    def _run(self) -> None:
        while not self._closed:
            try:
                if self._resp is None:
                    self._resp = self._connect()
                self._read(self._resp)
            except (OSError, EOFError, RuntimeError, ValueError) as exc:
                if not self._closed:
                    self.errors.append(repr(exc))
            if self._resp is not None:
                self._resp.close()
                self._resp = None
            if not self._closed:
                time.sleep(self.reconnect_delay)  # EventSource's retry wait

    def _read(self, resp: RawResponse) -> None:
        buffer = b""
        while not self._closed:
            chunk = resp.read_chunk()
            if not chunk:
                return  # the server ended the stream: reconnect
            buffer += chunk
            end = buffer.rfind(b"\n\n")
            if end < 0:
                continue
            complete, buffer = buffer[:end + 2], buffer[end + 2:]
            self._take(parse(complete).events)

    def _take(self, events: list[ParsedEvent]) -> None:
        with self._changed:
            for event in events:
                if event.type not in ("message", "reset"):
                    continue  # e.g. the example app's ``event: presence``
                channel = channel_of(event, self.channels)
                if event.type == "reset":
                    self.items.append(Item("reset", channel))
                    continue
                self.last_event_id = event.last_event_id or self.last_event_id
                data = json.loads(event.data) if event.data.startswith("{") else {}
                self.items.append(Item("event", channel, data.get("n"), event.last_event_id))
            self._changed.notify_all()

    def wait_for(self, check: Callable[[list[Item]], bool], timeout: float = 30.0) -> None:
        """Wait until ``check(items)`` holds (it is re-checked on every delivery)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not check(self.items):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"not delivered in {timeout}s; errors: {self.errors[-3:]}")
                self._changed.wait(min(left, 0.5))

    def numbers(self, channel: str) -> list[int]:
        with self._changed:
            return [i.n for i in self.items if i.kind == "event" and i.channel == channel
                    and i.n is not None]

    def of(self, channel: str) -> list[Item]:
        with self._changed:
            return [i for i in self.items if i.channel == channel]

    def local_port(self) -> int | None:
        """The client port of the current connection (to find the serving worker)."""
        resp = self._resp
        return None if resp is None else int(resp.sock.getsockname()[1])

    def close(self) -> None:
        self._closed = True
        resp = self._resp
        if resp is not None:
            resp.close()
        self._thread.join(5)


def wait_healthy(server: Server, timeout: float = 30.0) -> None:
    """Wait until the app answers ``/healthz`` (its workers booted with the broker URL);
    fail with the end of its log if it does not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            break
        try:
            if httpx.get(server.url + "/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)  # workers booting: nothing to await
    raise AssertionError(f"the app did not come up: {server.log()[-3000:]}")


def publish(server: Server, channel: str, data: Any, client: httpx.Client | None = None,
            ) -> str | None:
    """Publish through the app; the id, or None when the app answered 503."""
    post = client.post if client is not None else httpx.post
    response = post(server.url + "/publish", json={"channel": channel, "data": data},
                    timeout=30)
    if response.status_code == 503:
        return None
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


@dataclass
class Publisher:
    """Publishes ``{"n": 0, 1, ...}`` to each channel in turn, through the servers in
    turn, in a thread; records which numbers succeeded (per channel, in order)."""

    servers: list[Server]
    channels: list[str]
    ok: dict[str, list[int]] = field(default_factory=dict)
    ids: dict[str, dict[int, str]] = field(default_factory=dict)
    failed: int = 0

    def __post_init__(self) -> None:
        self._next = dict.fromkeys(self.channels, 0)
        self.ok = {c: [] for c in self.channels}
        self.ids = {c: {} for c in self.channels}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def round(self, client: httpx.Client) -> None:
        """One event for every channel (synchronously)."""
        for i, channel in enumerate(self.channels):
            n = self._next[channel]
            self._next[channel] = n + 1
            try:
                event_id = publish(self.servers[(n + i) % len(self.servers)], channel,
                                   {"n": n}, client)
            except httpx.HTTPError:
                event_id = None
            if event_id is None:
                self.failed += 1
            else:
                self.ok[channel].append(n)
                self.ids[channel][n] = event_id

    def start(self) -> None:
        def run() -> None:
            with httpx.Client() as client:
                while not self._stop.is_set():
                    self.round(client)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)

    def last_ok(self) -> dict[str, int]:
        return {c: v[-1] for c, v in self.ok.items() if v}


def silent_holes(items: list[Item], published: list[int]) -> list[str]:
    """What is wrong with one channel's delivery: events out of order or twice, or a
    successfully published number that is missing with no ``reset`` before the next
    event that did arrive (a hole at the end counts too)."""
    problems = []
    numbers = [i.n for i in items if i.kind == "event" and i.n is not None]
    if any(b <= a for a, b in itertools.pairwise(numbers)):
        problems.append(f"out of order or twice: {numbers}")
    got = set(numbers)
    for n in published:
        if n in got:
            continue
        # the items after the last event before n, up to the first event after n
        before = [k for k, i in enumerate(items) if i.kind == "event" and i.n is not None
                  and i.n < n]
        after = [k for k, i in enumerate(items) if i.kind == "event" and i.n is not None
                 and i.n > n]
        lo = before[-1] + 1 if before else 0
        hi = after[0] if after else len(items)
        if not any(i.kind == "reset" for i in items[lo:hi]):
            problems.append(f"{n} missing without a reset before it")
    return problems
