"""What assistant-ui (``@assistant-ui/react-ai-sdk``) needs from the AI SDK blueprint
beyond plain ``useChat``, on the example app (real gunicorn).

Resume: ``AssistantChatTransport({resumable: {storage, resumeApi}})`` does not use the
chat id route by itself. It stores the value of the POST response's
``x-resumable-stream-id`` header (cleared when it sees the ``finish`` chunk) and, after a
reload, GETs ``resumeApi(thatValue)``. These tests expect a value that the blueprint's
own resume route takes, so an app configures ``resumeApi: (id) =>
`/api/chat/${id}/stream```; an answer of 204 there means nothing to resume (the SDK's
reconnect then returns no stream, which is not an error).

Errors: a refused POST reaches the page as ``error.message`` holding the raw JSON body;
a message about one message must name it as the UI sent it (its index among the UI
messages, or its id), not by its index among the backend messages (the UI messages
without text are left out of those).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from flask_sse_stream.chat import DemoBackend
from tests.servers import Server, gunicorn_server

pytestmark = pytest.mark.slow

HEADER = "x-resumable-stream-id"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with gunicorn_server(env={"FLASK_CHAT_DEMO_DELAY": "0.05"}) as server:
        yield server


def ui_body(chat_id: str, *messages: dict[str, Any]) -> dict[str, Any]:
    return {"id": chat_id, "messages": list(messages), "trigger": "submit-message",
            "messageId": None}


def user(text: str, message_id: str = "u1") -> dict[str, Any]:
    return {"id": message_id, "role": "user", "parts": [{"type": "text", "text": text}]}


def deltas(raw: str) -> tuple[str, list[Any]]:
    chunks = [line[6:] if line == "data: [DONE]" else json.loads(line[6:])
              for line in raw.splitlines() if line.startswith("data: ")]
    text = "".join(c["delta"] for c in chunks if isinstance(c, dict) and c["type"] == "text-delta")
    return text, chunks


def test_the_post_names_the_stream_assistant_ui_resumes_from(server: Server) -> None:
    prompt = "resume me the assistant-ui way"
    with httpx.stream("POST", server.url + "/api/chat", timeout=30,
                      json=ui_body("aui-thread-1", user(prompt))) as posted:
        assert posted.status_code == 200
        resumable = posted.headers.get(HEADER)
        assert resumable, f"no {HEADER} header: {dict(posted.headers)}"
        for line in posted.iter_lines():
            if '"text-delta"' in line:
                break  # the page reloads mid-reply
    resumed = httpx.get(f"{server.url}/api/chat/{quote(resumable, safe='')}/stream",
                        timeout=30)
    assert resumed.status_code == 200
    assert resumed.headers["x-vercel-ai-ui-message-stream"] == "v1"
    text, chunks = deltas(resumed.text)
    assert text == DemoBackend.reply_for([{"role": "user", "content": prompt}])
    assert chunks[-2]["type"] == "finish" and chunks[-1] == "[DONE]"
    # finished: nothing to resume any more
    assert httpx.get(f"{server.url}/api/chat/{quote(resumable, safe='')}/stream").status_code \
        == 204


# the second UI message has no text (a turn stopped while the model was reasoning): it is
# not sent to the backend, so the backend's messages[1] is the UI's messages[2]
REASONING_ONLY = {"id": "a1", "role": "assistant",
                  "parts": [{"type": "step-start"}, {"type": "reasoning", "text": "hmm"}]}
BAD_THIRD = [
    {"id": "bad-third-message", "role": "wizard", "parts": [{"type": "text", "text": "hi"}]},
    {"id": "bad-third-message", "role": "user",
     "parts": [{"type": "text", "text": "x" * 9000}]},
]


@pytest.mark.parametrize("third", BAD_THIRD, ids=["bad role", "too long"])
def test_a_refusal_names_the_ui_message_it_is_about(server: Server, third: Any) -> None:
    response = httpx.post(server.url + "/api/chat", timeout=30,
                          json=ui_body("aui-errors", user("hello", "u0"), REASONING_ONLY, third))
    assert 400 <= response.status_code < 500
    error = response.json()["error"]
    assert "messages[1]" not in error, error
    assert "messages[2]" in error or "bad-third-message" in error, error
