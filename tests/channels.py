"""Helpers for channel tests: publish over HTTP, subscribe with a raw socket, read events."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.rawsse import RawResponse, open_stream
from tests.servers import Server
from tests.sse_parser import ParsedEvent, parse


def publish(server: Server, data: Any = None, channel: str = "sse", **extra: Any) -> dict[str, Any]:
    response = httpx.post(server.url + "/publish", json={"data": data, "channel": channel,
                                                         **extra}, timeout=30)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


class Subscriber:
    """A channel subscription over a raw socket; registered once the constructor returns
    (the server subscribes before it sends the response head)."""

    def __init__(self, server: Server, channel: str, last_event_id: str | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 15.0) -> None:
        all_headers = dict(headers or {})
        if last_event_id is not None:
            all_headers["Last-Event-ID"] = last_event_id
        self.resp: RawResponse = open_stream(f"{server.url}/stream?channel={channel}",
                                             headers=all_headers, timeout=timeout)
        assert self.resp.status == 200, self.resp.read_all()
        self.body = b""

    def events(self, count: int) -> list[ParsedEvent]:
        """Read until ``count`` events have arrived in total; return all of them."""
        while True:
            parsed = parse(self.body).events
            if len(parsed) >= count:
                return parsed
            chunk = self.resp.read_chunk()
            if not chunk:
                raise EOFError(f"stream ended after {len(parsed)} of {count} events")
            self.body += chunk

    def data(self, count: int) -> list[Any]:
        return [json.loads(e.data) for e in self.events(count) if e.type == "message"]

    def read_to_end(self) -> bytes:
        self.body += self.resp.read_all()
        return self.body

    def close(self) -> None:
        self.resp.close()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
