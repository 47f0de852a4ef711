"""``@sse_stream`` on a real gunicorn gevent worker, read with httpx-sse and raw sockets."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, connect_sse

from tests.rawsse import open_stream
from tests.servers import Server

pytestmark = pytest.mark.slow


def events(server: Server, path: str, **kwargs: Any) -> list[ServerSentEvent]:
    with (
        httpx.Client(base_url=server.url, timeout=10) as client,
        connect_sse(client, "GET", path, **kwargs) as source,
    ):
        return list(source.iter_sse())


def test_headers_arrive_before_the_first_event(core_server: Server) -> None:
    with open_stream(core_server.url + "/slow-first?wait=5", timeout=3) as resp:
        # open_stream returned: the head came while the generator is still asleep
        assert resp.status == 200
        assert resp.headers["content-type"] == "text/event-stream; charset=utf-8"
        cache = resp.headers["cache-control"]
        for directive in ("no-cache", "no-store", "no-transform"):
            assert directive in cache
        assert resp.headers["x-accel-buffering"] == "no"
        assert "content-length" not in resp.headers
        assert resp.read_chunk() == b": ok\n"


def test_heartbeats_flow_while_the_generator_is_blocked(core_server: Server) -> None:
    with open_stream(core_server.url + "/slow-first?wait=3", timeout=5) as resp:
        body = resp.read_until(b"data: late\n\n")
    before_data = body.split(b"data: late")[0]
    # opening comment, then at least a few heartbeats (0.3 s apart) during the 3 s wait
    assert before_data.startswith(b": ok\n")
    assert before_data.count(b": ping\n") >= 3
    assert b"\n\n" not in before_data  # comments never dispatch a phantom message


def test_each_yield_is_flushed_at_once(core_server: Server) -> None:
    # /blocked yields one event and then sleeps for an hour: if anything buffered the
    # output, the first event would never arrive.
    with open_stream(core_server.url + "/blocked?name=flush", timeout=10) as resp:
        body = resp.read_until(b"\n\n")
    assert b'data: {"started":"flush"}\n\n' in body


def test_kinds_of_yields_reach_httpx_sse_exactly(core_server: Server) -> None:
    with open_stream(core_server.url + "/kinds") as resp:
        assert resp.headers["x-extra"] == "yes"
        assert resp.read_chunk().startswith(b"retry: 1500\n")
    got = events(core_server, "/kinds")
    assert [(e.event, e.data, e.id) for e in got] == [
        ("message", "plain\nline two", ""),
        ("message", '{"a":1}', ""),
        ("message", "[1,2]", ""),
        ("message", "bytes", ""),
        ("custom", "named", "x1"),
    ]  # and no phantom event for the comment or the retry line
    assert got[0].retry == 1500


def test_ids_and_json_from_generator(core_server: Server) -> None:
    got = events(core_server, "/count?n=5")
    assert [json.loads(e.data)["i"] for e in got] == [0, 1, 2, 3, 4]
    assert [e.id for e in got] == ["0", "1", "2", "3", "4"]


def test_generator_runs_in_request_and_app_context(core_server: Server) -> None:
    got = events(core_server, "/context", headers={"X-User": "ada", "Last-Event-ID": "42"})
    assert json.loads(got[0].data) == {
        "path": "/context",
        "app": "tests.apps.core_app",
        "user": "ada",
        "last_event_id": "42",
    }
    got = events(core_server, "/context?lastEventId=7")
    assert json.loads(got[0].data)["last_event_id"] == "7"


def test_view_may_answer_with_a_normal_response(core_server: Server) -> None:
    response = httpx.get(core_server.url + "/validated")
    assert response.status_code == 400
    assert response.json() == {"error": "x is required"}
    assert [e.data for e in events(core_server, "/validated?x=5")] == ['{"x":"5"}']


def test_failing_generator_ends_the_stream_and_server_keeps_serving(core_server: Server) -> None:
    assert [e.data for e in events(core_server, "/fails")] == ["before"]
    assert [e.data for e in events(core_server, "/count?n=1")] == ['{"i":0}']


def test_client_disconnect_closes_a_blocked_generator(core_server: Server) -> None:
    with open_stream(core_server.url + "/stream?channel=closed", timeout=10) as watch:
        assert watch.read_chunk() == b": ok\n"
        blocked = open_stream(core_server.url + "/blocked?name=drop-1")
        blocked.read_until(b"\n\n")
        assert httpx.get(core_server.url + "/stats").json()["open_streams"] == 2
        blocked.close()  # the generator is asleep for an hour: only the EOF can stop it
        body = watch.read_until(b'"closed":"drop-1"')
    assert b'data: {"closed":"drop-1"}' in body


def test_head_request_does_not_start_a_stream(core_server: Server) -> None:
    response = httpx.head(core_server.url + "/count?n=3")
    assert response.status_code == 200
    assert response.content == b""


@pytest.mark.parametrize("http10", [True, False])
def test_http_versions(core_server: Server, http10: bool) -> None:
    with open_stream(core_server.url + "/count?n=2", http10=http10) as resp:
        body = resp.read_all()
    assert body == b': ok\nid: 0\ndata: {"i":0}\n\nid: 1\ndata: {"i":1}\n\n'
