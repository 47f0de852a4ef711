"""Adversarial review of subscribe tokens on the channel route (fast tier)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from hypothesis import given, settings
from hypothesis import strategies as st

from flask_sse_stream import SSE
from flask_sse_stream.tokens import _serializer


def make_app(**config: Any) -> tuple[Flask, SSE]:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="review-key", SSE_SUBSCRIBE_TOKENS=True,
                      SSE_HEARTBEAT_INTERVAL=0, **config)
    return app, SSE(app)


APP, SSE_EXT = make_app()


def status(app: Flask, channels: list[str], tokens: list[str]) -> int:
    params = [("channel", c) for c in channels] + [("token", t) for t in tokens]
    response = app.test_client().get("/stream", query_string=params, buffered=False)
    code = response.status_code
    if code != 200:
        assert response.mimetype == "application/json" and (response.json or {})["error"]
    response.close()
    return code


@pytest.mark.parametrize(
    "payload",
    [
        {"c": [["a"]], "e": 2**40},  # defect: unhashable names were a 500
        {"c": [{"a": 1}], "e": 2**40},
        {"c": [1], "e": 2**40},
        {"c": "a", "e": 2**40},
        {"c": ["a"], "e": True},
        {"c": ["a"], "e": 2.0**40},
        {"c": ["a"]},
        [["a"], 2**40],
        None,
    ],
)
def test_odd_payloads_signed_with_the_key_are_401_never_500(payload: Any) -> None:
    assert status(APP, ["a"], [_serializer(APP).dumps(payload)]) == 401


def test_expiry_is_checked_against_the_clock_without_sleeping() -> None:
    now = int(time.time())
    serializer = _serializer(APP)
    assert status(APP, ["a"], [serializer.dumps({"c": ["a"], "e": now - 1})]) == 401
    assert status(APP, ["a"], [serializer.dumps({"c": ["a"], "e": now + 60})]) == 200
    with APP.app_context():  # a huge lifetime is allowed; 0, inf and nan are not
        assert status(APP, ["a"], [SSE_EXT.subscribe_token(["a"], expires_in=1e300)]) == 200
        assert status(APP, ["a"], [SSE_EXT.subscribe_token(["a"], expires_in=1e-9)]) == 200
        for bad in (0, -0.0, float("nan"), float("inf"), True, "300", None):
            with pytest.raises(ValueError):
                SSE_EXT.subscribe_token(["a"], expires_in=bad)  # type: ignore[arg-type]


def test_other_signers_with_the_same_key_are_refused() -> None:
    cookie = SecureCookieSessionInterface().get_signing_serializer(APP)
    assert cookie is not None
    assert status(APP, ["a"], [cookie.dumps({"c": ["a"], "e": 2**40})]) == 401


def test_a_token_for_one_channel_never_reads_another() -> None:
    with APP.app_context():
        only_a = SSE_EXT.subscribe_token(["a"])
        both = SSE_EXT.subscribe_token(["a", "b"])
    assert status(APP, ["a", "b"], [only_a]) == 403
    assert status(APP, ["b", "a", "a"], [only_a]) == 403
    # a repeated ?token= is not a union: the first one is the token
    assert status(APP, ["a", "b"], [only_a, both]) == 403
    assert status(APP, ["a", "b"], [both, only_a]) == 200
    assert status(APP, ["a", "b"], ["", both]) == 401
    with APP.app_context(), pytest.raises(ValueError):
        SSE_EXT.subscribe_token([])


def test_rotation_drops_a_key_once_it_leaves_the_fallbacks() -> None:
    app, sse = make_app()
    with app.app_context():
        old = sse.subscribe_token(["a"])
    app.config.update(SECRET_KEY="next", SECRET_KEY_FALLBACKS=["review-key"])
    assert status(app, ["a"], [old]) == 200
    app.config["SECRET_KEY_FALLBACKS"] = []
    assert status(app, ["a"], [old]) == 401


@settings(max_examples=150, deadline=None)
@given(st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=300))
def test_junk_tokens_are_401(junk: str) -> None:
    assert status(APP, ["a"], [junk]) == 401
