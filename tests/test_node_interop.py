"""npm's `eventsource` (GET) and `@microsoft/fetch-event-source` (POST) read our streams."""

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
