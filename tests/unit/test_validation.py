"""What the chat routes accept, checked directly (chat/validation.py): each refusal has the
status and the message that says what to fix."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from flask import Flask

from flask_sse_stream.chat.validation import (
    ChatInputError,
    ChatLimits,
    Resume,
    messages_from_request,
    parse_resume,
)

LIMITS = ChatLimits(max_chars=20, max_messages=3, max_body_bytes=200)
app = Flask(__name__)


def parse_request(method: str = "POST", **kwargs: Any) -> list[dict[str, str]]:
    with app.test_request_context("/stream", method=method, **kwargs):
        from flask import request

        return messages_from_request(request, LIMITS)


def refused(status: int, match: str, method: str = "POST", **kwargs: Any) -> None:
    with pytest.raises(ChatInputError, match=match) as info:
        parse_request(method, **kwargs)
    assert info.value.status == status
    assert info.value.message == str(info.value)


@pytest.mark.parametrize(("value", "expected"), [
    (None, None),
    ("abcdefgh:0", Resume("abcdefgh", 0)),
    ("A_b-" * 16 + ":123456789", Resume("A_b-" * 16, 123456789)),
])
def test_parse_resume_accepts(value: str | None, expected: Resume | None) -> None:
    assert parse_resume(value) == expected


@pytest.mark.parametrize("value", [
    "", "abcdefgh", "abcdefgh:", "short:1", "abcdefgh:-1", "abcdefgh:1234567890",
    "a" * 65 + ":1", "abcdefgh:1 ", " abcdefgh:1", "abcdefgh:1\n", "abc/efgh:1",
    "abcdefgh:\u00b2", "abcdefgh:\u0663", "abcdefgh:\uff13", "abcdéfgh:1", "abcdefgh:1:2",
])
def test_parse_resume_refuses_anything_else_with_400(value: str) -> None:
    with pytest.raises(ChatInputError, match="Last-Event-ID") as info:
        parse_resume(value)
    assert info.value.status == 400


def test_get_takes_the_message_parameter() -> None:
    got = parse_request("GET", query_string={"message": "héllo ²"})
    assert got == [{"role": "user", "content": "héllo ²"}]


def test_get_refusals() -> None:
    refused(400, "message query parameter is required", "GET")
    refused(400, "message must not be empty", "GET", query_string={"message": " \t"})
    refused(413, "longer than 20 characters", "GET", query_string={"message": "x" * 21})


def test_post_message_and_messages() -> None:
    assert parse_request(json={"message": "hi"}) == [{"role": "user", "content": "hi"}]
    conversation = [{"role": "system", "content": "be brief"},
                    {"role": "user", "content": "hi", "name": "ann"},
                    {"role": "assistant", "content": "hello"}]
    assert parse_request(json={"messages": conversation}) == [
        {"role": m["role"], "content": m["content"]} for m in conversation]


@pytest.mark.parametrize(("body", "status", "match"), [
    ({}, 400, 'either "message" or "messages"'),
    ({"message": "a", "messages": []}, 400, 'either "message" or "messages"'),
    ([], 400, "must be a JSON object"),
    ("hi", 400, "must be a JSON object"),
    ({"message": 1}, 400, "message must be a string"),
    ({"message": ""}, 400, "message must not be empty"),
    ({"message": "x" * 21}, 413, "longer than 20"),
    ({"messages": []}, 400, "non-empty list"),
    ({"messages": {}}, 400, "non-empty list"),
    ({"messages": [{"role": "user", "content": "a"}] * 4}, 413, "at most 3 messages"),
    ({"messages": ["hi"]}, 400, r"messages\[0\] must be"),
    ({"messages": [{"role": "user", "content": "a", "x": 1}]}, 400, r"messages\[0\] must be"),
    ({"messages": [{"role": "tool", "content": "a"}]}, 400, r"messages\[0\]\.role"),
    ({"messages": [{"role": "user"}]}, 400, r"messages\[0\]\.content must be a string"),
    ({"messages": [{"role": "system", "content": "a"}]}, 400, "at least one user message"),
    ({"messages": [{"role": "user", "content": "x" * 15}] * 2}, 413,
     "messages are longer than 20"),
])
def test_post_body_refusals(body: object, status: int, match: str) -> None:
    refused(status, match, json=body)


@pytest.mark.parametrize("raw", [b'{"message": "hi \\ud800"}',
                                 b'{"messages": [{"role": "user", "content": "\\udfff x"}]}'])
def test_lone_surrogates_are_refused_with_400(raw: bytes) -> None:
    """Valid JSON, but not text: no backend can encode it (the demo backend fails on it
    mid-generation, which the client sees as an "internal error" close)."""
    with pytest.raises(ChatInputError) as info:
        parse_request(data=raw, content_type="application/json")
    assert info.value.status == 400


def test_post_transport_refusals() -> None:
    refused(415, "application/json", data=b'{"message": "hi"}', content_type="text/plain")
    refused(415, "application/json", data=b'{"message": "hi"}')
    refused(400, "not valid JSON", data=b'{"message": ', content_type="application/json")
    refused(400, "not valid JSON", data=b'{"message": "\xff"}', content_type="application/json")
    refused(400, "must be a JSON object", data=b"[" * 90 + b"]" * 90,
            content_type="application/json")
    refused(413, "larger than 200 bytes", data=json.dumps({"message": "x" * 300}),
            content_type="application/json")


def test_a_chunked_body_over_the_limit_is_refused_without_content_length() -> None:
    # no Content-Length: the bounded read is what catches it
    with app.test_request_context("/stream", method="POST", content_type="application/json",
                                  input_stream=io.BytesIO(b" " * 500),
                                  headers={"Transfer-Encoding": "chunked"},
                                  environ_overrides={"wsgi.input_terminated": True}):
        from flask import request

        assert request.content_length is None
        with pytest.raises(ChatInputError, match="larger than 200 bytes") as info:
            messages_from_request(request, LIMITS)
    assert info.value.status == 413
