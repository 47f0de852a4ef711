"""``flask sse publish`` / ``flask sse tail``: in-process on memory, and against a running
gunicorn server over Redis (slow tier)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from flask import Flask

from flask_sse_stream import SSE
from flask_sse_stream.wire.parse import parse_events
from tests.channels import Subscriber
from tests.servers import ROOT, Server, gunicorn_server


@pytest.fixture
def app() -> Flask:
    app = Flask(__name__)
    SSE(app)
    return app


def test_publish_prints_the_id_and_parses_json(app) -> None:
    runner = app.test_cli_runner()
    first = runner.invoke(args=["sse", "publish", "news", '{"a": [1, 2]}', "--event", "note"])
    assert first.exit_code == 0, first.output
    second = runner.invoke(args=["sse", "publish", "news", "plain text, not JSON"])
    assert second.exit_code == 0
    first_id = first.stdout.strip()
    tail = runner.invoke(args=["sse", "tail", "news", "--last-event-id", "0", "--count", "3"])
    # "0" is unknown to the memory broker: reset first, then both events
    events = parse_events(tail.stdout.encode())
    assert tail.exit_code == 0, tail.output
    assert [e.event for e in events] == ["reset", "note", None]
    assert events[1].data == '{"a":[1,2]}' and events[1].id == first_id
    assert events[2].data == "plain text, not JSON" and events[2].id == second.stdout.strip()
    resumed = runner.invoke(args=["sse", "tail", "news", "--last-event-id", first_id,
                                  "--count", "1"])
    assert [e.id for e in parse_events(resumed.stdout.encode())] == [second.stdout.strip()]
    assert "memory://" in first.stderr  # told that only this process is reached


def test_bad_input_is_refused(app) -> None:
    runner = app.test_cli_runner()
    bad = runner.invoke(args=["sse", "publish", "bad channel", "x"])
    assert bad.exit_code == 2 and "A-Z" in bad.output
    bad_event = runner.invoke(args=["sse", "publish", "ok", "x", "--event", "a\nb"])
    assert bad_event.exit_code == 2 and "line break" in bad_event.output
    assert runner.invoke(args=["sse", "tail", "ok", "--count", "0"]).exit_code == 2


def flask_cli(server: Server, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **server.env, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "tests.apps.core_app:create_app", "sse", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.slow
def test_cli_reaches_a_running_gunicorn_server_over_redis(redis: Server) -> None:
    env = {"TEST_BROKER_URL": f"redis://127.0.0.1:{redis.port}/0"}
    with gunicorn_server("tests.apps.core_app:create_app()", env=env, workers=1) as server:
        marker = flask_cli(server, "publish", "deploy", "marker")
        assert marker.returncode == 0, marker.stderr
        with Subscriber(server, "deploy") as sub:
            # tail from the marker: the event comes live, or by replay if tail subscribed late
            tail = subprocess.Popen(
                [sys.executable, "-m", "flask", "--app", "tests.apps.core_app:create_app",
                 "sse", "tail", "deploy", "--last-event-id", marker.stdout.strip(),
                 "--count", "1"],
                cwd=ROOT, env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                published = flask_cli(server, "publish", "deploy", '{"v": 2}', "--event", "rel")
                assert published.returncode == 0, published.stderr
                event_id = published.stdout.strip()
                got = sub.events(1)[0]
                assert (got.type, json.loads(got.data), got.last_event_id) == (
                    "rel", {"v": 2}, event_id)
                out, err = tail.communicate(timeout=60)
            finally:
                if tail.poll() is None:
                    tail.kill()
                    tail.wait()
        assert tail.returncode == 0, err
        [printed] = parse_events(out.encode())
        assert (printed.event, printed.data, printed.id) == ("rel", '{"v":2}', event_id)
        assert "memory://" not in published.stderr
