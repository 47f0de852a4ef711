"""The real npm `ai` (DefaultChatTransport, readUIMessageStream, reconnectToStream) and
`openai` packages against the example app's /api/chat and /v1, through 100 ms
heartbeats between slow chunks."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.chat import demo_reply
from tests.servers import gunicorn_server

NODE_DIR = Path(__file__).parent / "node"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("node") is None or not (NODE_DIR / "node_modules" / "ai").is_dir(),
        reason="node or the npm packages are missing (scripts/test installs them)",
    ),
]


def test_ai_sdk_and_openai_npm_clients() -> None:
    env = {"FLASK_CHAT_DEMO_DELAY": "0.25", "FLASK_SSE_HEARTBEAT_INTERVAL": "0.1",
           "FLASK_TICKER_INTERVAL": "0"}
    with gunicorn_server(env=env) as server:
        done = subprocess.run(["node", "protocols.mjs", server.url], cwd=NODE_DIR,
                              capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)

    whole = result["whole"]
    assert whole["text"] == demo_reply("assemble this")
    assert whole["metadata"]["usage"]["total_tokens"] > 0

    resume = result["resume"]
    assert resume["firstDeltas"] == 3
    assert resume["text"] == demo_reply("cut me off")  # replayed from the start, whole
    assert resume["afterFinish"] is None  # 204: a finished reply is not offered again
    assert resume["never"] is None

    stop = result["stop"]
    assert stop["deleted"] == 204
    assert stop["types"][:3] == ["start", "start-step", "text-start"]
    assert stop["types"][-3:] == ["text-end", "finish-step", "abort"]

    oa = result["openai"]
    expected = demo_reply("hello from the openai npm package")
    assert oa["stream"]["text"] == expected
    assert oa["stream"]["finish"] == "stop"
    assert oa["stream"]["usage"]["total_tokens"] > 0
    assert oa["whole"] == {"text": expected, "finish": "stop"}
    assert oa["error"]["status"] == 400
    assert oa["error"]["type"] == "invalid_request_error"
