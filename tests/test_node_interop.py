"""npm's `eventsource` (GET) and `@microsoft/fetch-event-source` (POST) read our streams;
the page's own client (example_app/static/sse-client.js) passes its Node tests."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.chat import demo_reply
from tests.servers import gunicorn_server

NODE_DIR = Path(__file__).parent / "node"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_DIR / "node_modules").is_dir(),
    reason="node or the npm packages are missing (scripts/test installs them)",
)]


def test_npm_clients_consume_get_and_post_streams() -> None:
    prompt = "interop from node"
    with gunicorn_server(env={"FLASK_CHAT_DEMO_DELAY": "0.002"}) as server:
        done = subprocess.run(["node", "interop.mjs", server.url, prompt], cwd=NODE_DIR,
                              capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    expected = demo_reply(prompt)
    for name in ("get", "post"):
        got = result[name]
        assert got["text"] == expected
        assert got["close"]["finish_reason"] == "stop"
        seqs = [int(i.rsplit(":", 1)[1]) for i in got["ids"]]
        assert seqs == list(range(1, len(seqs) + 1))
    first, rest = result["resumed"]["first"], result["resumed"]["rest"]
    assert first["messages"] == 5
    assert first["text"] + rest["text"] == expected
    assert rest["close"]["finish_reason"] == "stop"


def test_page_scripts_node_tests() -> None:
    """tests/node/sse-client.test.mjs: the parser against a transcription of the spec and
    against eventsource-parser over 4,000 random streams, linear time on long lines, and
    FetchEventSource's Last-Event-ID and MIME type handling; conversation.test.mjs: the
    turns the page sends back."""
    tests = ["sse-client.test.mjs", "conversation.test.mjs"]
    done = subprocess.run(["node", "--test", *tests], cwd=NODE_DIR,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout and "# pass " in done.stdout
