"""Subscribe tokens on the channel route (fast tier: Flask's test client)."""

from __future__ import annotations

import time

import pytest
from flask import Flask, request

from flask_sse_stream import SSE
from flask_sse_stream.testing import read_events


def make_app(tokens: bool = True, **config: object) -> tuple[Flask, SSE]:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test-secret", SSE_SUBSCRIBE_TOKENS=tokens,
                      SSE_HEARTBEAT_INTERVAL=0, **config)
    sse = SSE(app, authorize=lambda ch: ch != "vip" or request.headers.get("X-User") == "admin")
    return app, sse


@pytest.fixture
def app_sse() -> tuple[Flask, SSE]:
    return make_app()


def token_for(app: Flask, sse: SSE, channels: list[str], expires_in: float = 300) -> str:
    with app.app_context():
        return sse.subscribe_token(channels, expires_in=expires_in)


def test_right_channel_streams_and_replays(app_sse) -> None:
    app, sse = app_sse
    token = token_for(app, sse, ["news", "other"])
    with app.app_context():
        first = sse.publish({"n": 1}, channel="news")
        sse.publish({"n": 2}, channel="news")
    response = app.test_client().get(f"/stream?channel=news&token={token}", buffered=False,
                                     headers={"Last-Event-ID": first})
    assert response.status_code == 200
    events = read_events(response, count=1, timeout=2)
    assert [e.data for e in events] == ['{"n":2}']


def test_missing_forged_and_expired_tokens_get_401(app_sse) -> None:
    app, sse = app_sse
    client = app.test_client()
    good = token_for(app, sse, ["news"])
    missing = client.get("/stream?channel=news")
    assert missing.status_code == 401 and "token" in missing.json["error"]
    forged = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    assert client.get(f"/stream?channel=news&token={forged}").status_code == 401
    assert client.get("/stream?channel=news&token=not.a.token").status_code == 401
    # signed with another key: as good as forged
    other, other_sse = make_app()
    other.config["SECRET_KEY"] = "another-secret"
    foreign = token_for(other, other_sse, ["news"])
    assert client.get(f"/stream?channel=news&token={foreign}").status_code == 401
    # a token with the right signature but another salt's payload is refused too
    from itsdangerous import URLSafeSerializer
    wrong_salt = URLSafeSerializer("test-secret", salt="other").dumps({"c": ["news"], "e": 2**40})
    assert client.get(f"/stream?channel=news&token={wrong_salt}").status_code == 401

    # expired: the same signature over an expiry one second in the past (no sleeping)
    from flask_sse_stream.tokens import _serializer

    expired = _serializer(app).dumps({"c": ["news"], "e": int(time.time()) - 1})
    response = client.get(f"/stream?channel=news&token={expired}")
    assert response.status_code == 401 and "expired" in response.json["error"]
    assert response.mimetype == "application/json"


def test_channel_not_in_token_gets_403_and_authorize_still_applies(app_sse) -> None:
    app, sse = app_sse
    client = app.test_client()
    token = token_for(app, sse, ["a", "vip"])
    wrong = client.get(f"/stream?channel=b&token={token}")
    assert wrong.status_code == 403 and "'b'" in wrong.json["error"]
    assert client.get(f"/stream?channel=vip&token={token}").status_code == 403  # authorize
    ok = client.get(f"/stream?channel=vip&token={token}", headers={"X-User": "admin"},
                    buffered=False)
    assert ok.status_code == 200
    ok.close()


def test_check_token_takes_every_channel_of_a_stream(app_sse) -> None:
    """A token for [a] never reads b, whatever else the request names (multi-channel)."""
    from flask_sse_stream.tokens import check_token

    app, sse = app_sse
    token = token_for(app, sse, ["a"])
    with app.test_request_context():
        assert check_token(token, ["a"]) is None
        denied = check_token(token, ["a", "b"])
        assert denied is not None and denied.status_code == 403
        both = token_for(app, sse, ["a", "b"])
        assert check_token(both, ["b", "a"]) is None
        assert check_token(None, ["a"]).status_code == 401  # type: ignore[union-attr]


def test_tokens_off_by_default_and_token_ignored() -> None:
    app, _sse = make_app(tokens=False)
    response = app.test_client().get("/stream?channel=x", buffered=False)
    assert response.status_code == 200
    response.close()
    assert Flask(__name__).config.get("SSE_SUBSCRIBE_TOKENS") is None
    plain = Flask(__name__)
    SSE(plain)
    assert plain.config["SSE_SUBSCRIBE_TOKENS"] is False


def test_secret_key_missing_is_named() -> None:
    app = Flask(__name__)
    sse = SSE(app)
    with app.app_context(), pytest.raises(RuntimeError, match="SECRET_KEY"):
        sse.subscribe_token(["a"])
    strict = Flask(__name__)
    strict.config["SSE_SUBSCRIBE_TOKENS"] = True
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        SSE(strict)


def test_bad_arguments(app_sse) -> None:
    app, sse = app_sse
    with app.app_context():
        for channels, expires in ((["bad channel"], 300), ([], 300), (["a"], 0), (["a"], -1),
                                  (["a"], float("inf"))):
            with pytest.raises(ValueError):
                sse.subscribe_token(channels, expires_in=expires)
        # a single name is one channel, not a list of characters
        token = sse.subscribe_token("news")
    assert app.test_client().get(f"/stream?channel=n&token={token}").status_code == 403


def test_key_rotation_accepts_fallback(app_sse) -> None:
    app, sse = app_sse
    old = token_for(app, sse, ["news"])
    app.config.update(SECRET_KEY="new-secret", SECRET_KEY_FALLBACKS=["test-secret"])
    response = app.test_client().get(f"/stream?channel=news&token={old}", buffered=False)
    assert response.status_code == 200
    response.close()
