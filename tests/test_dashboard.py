"""The example app's live dashboard: its values (fast) and, on a real server with the
memory broker, ``last=1`` giving the current value at once and presence counting the open
dashboards (slow). The page itself in Chromium: tests/test_dashboard_browser.py."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator

import httpx
import pytest

from example_app import create_app
from example_app.dashboard import rate_at, sales_total_at
from tests.rawsse import open_stream
from tests.servers import Server, gunicorn_server
from tests.sse_parser import parse

DASHBOARD_STREAM = "/stream?channel=visitors&channel=fx.eurusd&channel=sales&last=1"


def test_the_rate_walks_within_its_band_and_the_total_only_grows() -> None:
    rates = [rate_at(step) for step in range(5000)]
    assert all(1.0815 <= r <= 1.0885 for r in rates)
    assert sum(a != b for a, b in itertools.pairwise(rates)) > 4000  # it moves
    assert max(abs(a - b) for a, b in itertools.pairwise(rates)) < 0.001  # a walk
    totals = [sales_total_at(step, 1.0) for step in range(5000)]
    assert all(b > a for a, b in itertools.pairwise(totals))
    assert rate_at(123_456) == rate_at(123_456)  # the same in every worker


def test_the_dashboard_page_names_its_values_and_the_chat_page_links_it() -> None:
    app = create_app({"TICKER_INTERVAL": 0, "TESTING": True})
    client = app.test_client()
    page = client.get("/dashboard").get_data(as_text=True)
    for label in ("Online", "EUR/USD rate", "Sales total"):
        assert f">{label}</dt>" in page
    assert 'data-stream-url="/stream?channel=visitors&amp;channel=fx.eurusd&amp;channel=' \
           'sales&amp;last=1"' in page
    assert 'href="/dashboard"' in client.get("/").get_data(as_text=True)


@pytest.fixture(scope="module")
def example_server() -> Iterator[Server]:
    with gunicorn_server(env={"FLASK_DASHBOARD_INTERVAL": "0.2"}) as server:
        yield server


@pytest.mark.slow
def test_a_new_dashboard_gets_the_current_values_at_once_then_live(
    example_server: Server,
) -> None:
    with open_stream(example_server.url + "/stream?channel=fx.eurusd", timeout=15) as resp:
        resp.read_until(b'"pair"')  # wait for the feed's first value
    presence = example_server.url + "/stream/presence?channel=fx.eurusd"
    deadline = time.monotonic() + 10
    while httpx.get(presence).json()["count"]:  # until the server saw that stream go
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with open_stream(example_server.url + DASHBOARD_STREAM, timeout=15) as resp:
        body = b""
        while True:  # the prelude: newest rate and total, one presence event per channel
            body += resp.read_chunk()
            events = parse(body).events
            if {e.last_event_id.split("@")[0] for e in events if e.type == "message"} \
                    == {"fx.eurusd", "sales"} and len(events) >= 5:
                break
        # each channel's prelude in turn: its newest event (last=1), its presence count
        first = events[:5]
        assert [e.type for e in first] == ["presence", "message", "presence", "message",
                                           "presence"]
        assert json.loads(first[1].data)["pair"] == "EUR/USD"
        assert "total" in json.loads(first[3].data)
        assert [json.loads(first[i].data) for i in (0, 2, 4)] == [
            {"channel": c, "count": 1} for c in ("visitors", "fx.eurusd", "sales")]
        online = httpx.get(example_server.url + "/stream/presence?channel=visitors").json()
        assert online == {"channel": "visitors", "count": 1}
        while len([e for e in parse(body).events if e.type == "message"]) < 6:
            body += resp.read_chunk()  # and then live values
