"""The extension's setup (no server needed): init_app, several apps, config errors."""

from __future__ import annotations

import pytest
from flask import Flask

from flask_sse_stream import SSE


def make_app(**config: object) -> Flask:
    app = Flask(__name__)
    app.config.update(config)
    return app


def test_one_instance_serves_several_apps_with_separate_state() -> None:
    sse = SSE()
    first, second = make_app(), make_app(SSE_URL_PREFIX="/events")
    sse.init_app(first)
    sse.init_app(second)
    assert first.extensions["sse"] is not second.extensions["sse"]
    with first.app_context():
        ids = [sse.publish({"n": n}, channel="c") for n in range(3)]
    with second.app_context():
        other = sse.publish("x", channel="c")
        stats = sse.stats()
        assert (stats["open_streams"], stats["subscribers"]) == (0, {})
        assert stats["published"] == 1  # counters are per app too
    with first.app_context():
        assert sse.stats()["published"] == 3
    assert ids[0].rsplit("-", 1)[1] == "1" and other.rsplit("-", 1)[1] == "1"
    assert [r.rule for r in first.url_map.iter_rules() if r.endpoint == "sse.channel"] == [
        "/stream"]
    assert [r.rule for r in second.url_map.iter_rules() if r.endpoint == "sse.channel"] == [
        "/events"]


def test_config_defaults_are_set_without_overriding() -> None:
    app = make_app(SSE_HEARTBEAT_INTERVAL=5)
    SSE(app)
    assert app.config["SSE_HEARTBEAT_INTERVAL"] == 5
    assert app.config["SSE_BROKER_URL"] == "memory://"
    assert app.config["SSE_RETRY_MS"] is None
    assert app.config["SSE_MAX_STREAMS"] is None


@pytest.mark.parametrize(("key", "value"), [
    ("SSE_BROKER_URL", "kafka://x"),
    ("SSE_HEARTBEAT_INTERVAL", -1),
    ("SSE_SUBSCRIBER_QUEUE", 0),
    ("SSE_URL_PREFIX", "stream"),
    ("SSE_RETRY_MS", "soon"),
])
def test_bad_config_fails_at_startup(key: str, value: object) -> None:
    with pytest.raises(ValueError, match=key):  # the message names the setting
        SSE(make_app(**{key: value}))


def test_env_strings_are_coerced() -> None:
    app = make_app(SSE_HEARTBEAT_INTERVAL="2.5", SSE_HISTORY_SIZE="10", SSE_MAX_STREAMS="3")
    SSE(app)
    assert app.config["SSE_HEARTBEAT_INTERVAL"] == 2.5
    assert app.config["SSE_HISTORY_SIZE"] == 10
    assert app.config["SSE_MAX_STREAMS"] == 3


def test_publish_validates_before_sending() -> None:
    app = make_app()
    sse = SSE(app)
    with app.app_context():
        with pytest.raises(ValueError, match="channel"):
            sse.publish("x", channel="bad name")
        with pytest.raises(ValueError, match="line break"):
            sse.publish("x", event="a\nb")
    # the library's own error for an app it was not set up on
    with make_app().app_context(), pytest.raises(RuntimeError, match="SSE is not set up"):
        sse.publish("to an app without SSE")
    with make_app().app_context(), pytest.raises(RuntimeError, match="SSE is not set up"):
        sse.stats()
    # outside any app context it is Flask's error, and nothing was published meanwhile
    with pytest.raises(RuntimeError, match="application context"):
        sse.publish("outside any app context")


def test_a_refused_publish_takes_no_id() -> None:
    app = make_app()
    sse = SSE(app)
    with app.app_context():
        with pytest.raises(ValueError, match="line break"):
            sse.publish("x", channel="c", event="a\nb")
        with pytest.raises(ValueError, match="retry"):
            sse.publish("x", channel="c", retry=-1)
        assert sse.publish("x", channel="c").endswith("-1")  # the channel's first event
