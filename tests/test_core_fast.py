"""Issue #11, core parts, in process (no server): settings, the runtime seam, slow-client
cuts, odd Last-Event-ID values, publishing threads, leaks, the stream cap."""

from __future__ import annotations

import ast
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import pytest
from flask import Flask, Response, request
from flask.testing import FlaskClient

from flask_sse_stream import SSE, sse_stream
from flask_sse_stream.brokers import broker_kind
from flask_sse_stream.brokers.memory import MemoryBroker
from flask_sse_stream.chat import DemoBackend, create_chat_blueprint
from flask_sse_stream.chat.validation import ChatInputError, parse_resume
from flask_sse_stream.runtime import END, CloseReason, current
from flask_sse_stream.runtime.gevent import GeventMailbox
from flask_sse_stream.runtime.threads import ThreadMailbox
from flask_sse_stream.settings import SETTINGS_KEY, Settings, load_settings, settings_for
from flask_sse_stream.stream.registry import registry_for

PACKAGE = Path(__file__).resolve().parent.parent / "flask_sse_stream"


def make_app(**config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update({"SSE_HEARTBEAT_INTERVAL": 0.2, **config})
    return app


def first_chunk(response: Any) -> bytes:
    return next(iter(response.response))  # type: ignore[no-any-return]


def wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


# --------------------------------------------------------------------------- 1. settings


def test_integral_float_is_accepted_as_int_and_every_stream_works() -> None:
    app = make_app(SSE_RETRY_MS=1500.0, SSE_MAX_STREAMS=3.0, CHAT_QUEUE="64")
    SSE(app)
    settings = settings_for(app)
    assert settings.retry_ms == 1500 and type(settings.retry_ms) is int
    assert settings.max_streams == 3 and settings.chat_queue == 64
    assert app.config["SSE_RETRY_MS"] == 1500 and type(app.config["SSE_RETRY_MS"]) is int
    response = app.test_client().get("/stream?channel=a", buffered=False)
    try:
        assert response.status_code == 200
        assert first_chunk(response) == b"retry: 1500\n"
    finally:
        response.close()


def test_flask_env_json_values_are_coerced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASK_SSE_RETRY_MS", "1500.0")
    monkeypatch.setenv("FLASK_SSE_WRITE_TIMEOUT", "null")
    monkeypatch.setenv("FLASK_CHAT_MAX_GENERATIONS", "4")
    app = Flask(__name__)
    app.config.from_prefixed_env()
    SSE(app)
    settings = settings_for(app)
    assert (settings.retry_ms, settings.write_timeout, settings.chat_max_generations) == (
        1500, None, 4)


@pytest.mark.parametrize(("key", "value"), [
    ("SSE_RETRY_MS", 1500.5),
    ("SSE_RETRY_MS", "1.5e3x"),
    ("SSE_HISTORY_SIZE", None),
    ("SSE_HEARTBEAT_INTERVAL", float("nan")),
    ("SSE_WRITE_TIMEOUT", -1),
    ("SSE_DIRECT_WRITE", "maybe"),
    ("SSE_DIRECT_WRITE", 1),
    ("SSE_MAX_STREAMS", True),
    ("SSE_BROKER_URL", 42),
    ("CHAT_QUEUE", 0),
    ("CHAT_MAX_CHARS", "lots"),
    ("CHAT_GRACE_SECONDS", None),
    ("CHAT_MAX_GENERATIONS", 0),
    ("CHAT_MAX_GENERATIONS_PER_CALLER", 2.5),
])
def test_bad_values_fail_at_startup_naming_the_key(key: str, value: Any) -> None:
    with pytest.raises(ValueError, match=key):
        SSE(make_app(**{key: value}))
    if key.startswith("CHAT_"):  # the chat blueprint alone checks them too
        app = make_app(**{key: value})
        with pytest.raises(ValueError, match=key):
            app.register_blueprint(create_chat_blueprint(DemoBackend()), url_prefix="/chat")


@pytest.mark.parametrize(("value", "expected"), [
    (None, True), (False, False), ("off", False), ("0", False), ("True", True), (" yes ", True),
])
def test_direct_write_is_a_checked_bool(value: Any, expected: bool) -> None:
    app = make_app() if value is None else make_app(SSE_DIRECT_WRITE=value)
    SSE(app)
    assert settings_for(app).direct_write is expected
    assert app.config["SSE_DIRECT_WRITE"] is expected


def test_defaults_are_set_once_and_settings_are_frozen() -> None:
    app = make_app()
    settings = load_settings(app.config)
    assert app.config["CHAT_QUEUE"] == 1024 and app.config["SSE_WRITE_TIMEOUT"] == 30.0
    assert app.config["CHAT_MAX_GENERATIONS"] is None
    assert app.config["CHAT_MAX_GENERATIONS_PER_CALLER"] is None
    assert isinstance(settings, Settings)
    with pytest.raises(AttributeError):
        settings.retry_ms = 1  # type: ignore[misc]


def test_broker_kind_is_case_insensitive_and_shared() -> None:
    assert broker_kind("REDIS://localhost:6379/0") == "redis"
    assert broker_kind("Rediss://h") == "redis" and broker_kind("unix:///tmp/r.sock") == "redis"
    assert broker_kind("MEMORY://") == "memory"
    with pytest.raises(ValueError, match="SSE_BROKER_URL"):
        broker_kind("kafka://x")
    settings = load_settings({"SSE_BROKER_URL": "REDIS://localhost:1/0"})
    assert settings.broker_kind == "redis"


def test_sse_stream_without_the_extension_uses_defaults() -> None:
    app = Flask(__name__)

    @app.get("/s")
    @sse_stream
    def s() -> Any:
        yield "hi"

    response = app.test_client().get("/s")
    assert response.status_code == 200
    assert b"data: hi\n\n" in response.data
    assert app.extensions[SETTINGS_KEY].heartbeat_interval == 15.0


# --------------------------------------------------------------------------- 2. the seam


def test_only_the_runtimes_gevent_module_imports_gevent() -> None:
    importers = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            if any(name == "gevent" or name.startswith("gevent.") for name in names):
                importers.append(path.relative_to(PACKAGE).as_posix())
    assert sorted(set(importers)) == ["runtime/gevent.py"]
    sources = "".join(p.read_text() for p in PACKAGE.rglob("*.py"))
    assert '.name == "gevent"' not in sources


# --------------------------------------------------------------------------- 3. slow clients


@pytest.mark.parametrize("kind", [GeventMailbox, ThreadMailbox])
def test_a_closed_mailbox_refuses_offers_and_stays_bounded(kind: Any) -> None:
    mailbox = kind(4)
    for n in range(4):
        assert mailbox.offer(b"x%d" % n)
    assert not mailbox.offer(b"overflow")
    mailbox.close(CloseReason.OVERFLOW)
    for _ in range(10_000):
        assert not mailbox.offer(b"more")
        mailbox.close(CloseReason.OVERFLOW)
    assert mailbox.reason is CloseReason.OVERFLOW
    assert mailbox.drain() == [b"x0", b"x1", b"x2", b"x3"]
    assert mailbox.drain() == []


def test_overflow_tells_the_owner_once() -> None:
    calls: list[CloseReason] = []

    class Owner:
        def mailbox_closed(self, reason: CloseReason) -> None:
            calls.append(reason)

    mailbox = GeventMailbox(1)
    mailbox.owner = Owner()
    mailbox.offer(b"a")
    mailbox.close(CloseReason.OVERFLOW)
    mailbox.close(CloseReason.DISCONNECTED)
    assert calls == [CloseReason.OVERFLOW]
    assert mailbox.take(0) == [b"a", END]


def test_gevent_mailbox_one_waiter_slot_serves_reader_and_producer() -> None:
    mailbox = GeventMailbox(2)
    got: list[bytes] = []

    def produce() -> None:
        for n in range(20):
            assert mailbox.put(b"%d," % n, timeout=5)
        mailbox.close(CloseReason.FINISHED)

    def consume() -> None:
        while True:
            chunks = mailbox.take(5)
            assert chunks is not None
            if chunks[-1] is END:
                got.extend(chunks[:-1])
                return
            got.extend(chunks)

    gevent.joinall([gevent.spawn(produce), gevent.spawn(consume)], timeout=10, raise_error=True)
    assert b"".join(got) == b"".join(b"%d," % n for n in range(20))


# --------------------------------------------------------------------------- 4. odd ids

ODD_IDS = ["²", "1-²", "x.1-\u0661\u0662", "x-\uff11\uff12", "\xb2\xb3", "-", "",
           "9" * 40, "\x00", "a-b-c"]


@pytest.mark.parametrize("value", ODD_IDS)
def test_odd_last_event_id_gets_a_reset_not_a_500(value: str) -> None:
    app = make_app()
    sse = SSE(app)
    with app.app_context():
        sse.publish("one", channel="c")
    client = app.test_client()
    for kwargs in ({"headers": {"Last-Event-ID": value}},
                   {"query_string": {"channel": "c", "lastEventId": value}}):
        url = "/stream" if "query_string" in kwargs else "/stream?channel=c"
        response = client.get(url, buffered=False, **kwargs)
        try:
            assert response.status_code == 200
            chunk = first_chunk(response)
            if value:
                assert b"event: reset\n" in chunk and b"data: one\n" in chunk
        finally:
            response.close()


def test_raw_latin1_header_bytes_never_give_a_500() -> None:
    app = make_app()
    SSE(app)
    app.register_blueprint(create_chat_blueprint(DemoBackend(delay=0)), url_prefix="/chat")
    raw = bytes(range(0x20, 0x100)).replace(b"\x7f", b"").decode("latin-1")
    client = app.test_client()
    for url in ("/stream?channel=c", "/chat/stream?message=hi"):
        response = client.get(url, headers={"Last-Event-ID": raw}, buffered=False)
        try:
            assert response.status_code < 500
        finally:
            response.close()


@pytest.mark.parametrize(
    "value", ["abcdefgh:²", "abcdefgh:\u0661", "abcdefgh:\uff11", "abcdéfgh:1"])
def test_chat_resume_ids_are_ascii_only(value: str) -> None:
    with pytest.raises(ChatInputError) as caught:
        parse_resume(value)
    assert caught.value.status == 400
    app = make_app()
    app.register_blueprint(create_chat_blueprint(DemoBackend(delay=0)), url_prefix="/chat")
    response = app.test_client().get("/chat/stream", headers={"Last-Event-ID": value})
    assert response.status_code == 400 and "error" in response.get_json()


# --------------------------------------------------------------------------- 5. threads


def _ids(chunks: list[bytes]) -> list[int]:
    text = b"".join(chunks).decode()
    return [int(line.rsplit("-", 1)[1]) for line in text.splitlines() if line.startswith("id:")]


def test_publishing_threads_deliver_in_id_order() -> None:
    broker = MemoryBroker(history_size=10)
    mailbox = ThreadMailbox(100_000)
    sub = broker.subscribe("c", mailbox)
    barrier = threading.Barrier(4)

    def publish() -> None:
        barrier.wait()
        for n in range(300):
            broker.publish("c", n)

    threads = [threading.Thread(target=publish) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = _ids(mailbox.drain())
    assert ids == list(range(1, 1201))
    sub.close()


def test_publish_from_a_native_thread_under_gevent_reaches_the_subscriber() -> None:
    """A threadpool (or C callback) publishing must wake the subscribers' hub, not
    schedule its fan-out on a hub of its own that never runs."""
    broker = MemoryBroker()
    result: dict[str, Any] = {}

    def subscriber() -> None:
        assert current().cooperative  # inside a greenlet: the gevent primitives
        mailbox = GeventMailbox(10_000)
        broker.subscribe("c", mailbox)
        pool = gevent.get_hub().threadpool

        def publish_many() -> None:
            for n in range(200):
                broker.publish("c", n)

        pool.spawn(publish_many).get(timeout=10)
        chunks: list[bytes] = []
        deadline = time.monotonic() + 5
        while len(_ids(chunks)) < 200 and time.monotonic() < deadline:
            got = mailbox.take(1.0)
            if got:
                chunks.extend(got)
        result["ids"] = _ids(chunks)

    gevent.spawn(subscriber).get(timeout=15)
    assert result["ids"] == list(range(1, 201))


def test_an_id_from_another_channel_is_a_reset() -> None:
    broker = MemoryBroker()
    a = [broker.publish("a", n) for n in range(3)]
    b = [broker.publish("b", n) for n in range(3)]
    assert a[0].rsplit("-", 1)[1] == "1" and a[0] != b[0]
    sub = broker.subscribe("b", ThreadMailbox(8), a[1])
    assert sub.prelude.startswith(b"event: reset\n")
    sub.close()
    same = broker.subscribe("b", ThreadMailbox(8), b[1])
    assert same.prelude.count(b"id: ") == 1 and b[2].encode() in same.prelude
    same.close()


# --------------------------------------------------------------------------- 6. leaks


def test_a_raising_after_request_closes_the_stream() -> None:
    app = make_app()
    SSE(app)
    finished = threading.Event()
    torn_down = threading.Event()

    @app.get("/gen")
    @sse_stream
    def gen() -> Any:
        try:
            while True:
                yield "tick"
                time.sleep(0.01)
        finally:
            finished.set()

    @app.after_request
    def broken(response: Response) -> Response:
        if request.path == "/gen":
            raise RuntimeError("after_request failed")
        return response

    @app.teardown_request
    def teardown(exc: BaseException | None) -> None:
        if request.path == "/gen":
            torn_down.set()

    response = app.test_client().get("/gen")
    assert response.status_code == 500
    assert finished.wait(5), "the producer is still running"
    assert torn_down.wait(5), "the pushed request context was never popped"
    assert len(registry_for(app)) == 0


def test_chat_close_data_is_compact_json() -> None:
    app = make_app()
    app.register_blueprint(create_chat_blueprint(DemoBackend(delay=0)), url_prefix="/chat")
    response = app.test_client().get("/chat/stream", headers={"Last-Event-ID": "abcdefgh:3"})
    assert response.status_code == 200
    data = [line[6:] for line in response.data.decode().splitlines()
            if line.startswith("data: ")]
    assert data == ['{"finish_reason":"error","error":"this reply is no longer available"}']
    assert json.loads(data[0])["finish_reason"] == "error"


# --------------------------------------------------------------------------- 7. the cap


@pytest.fixture
def capped() -> Iterator[tuple[Flask, FlaskClient]]:
    app = make_app(SSE_MAX_STREAMS=1)
    SSE(app)

    @app.get("/view")
    @sse_stream
    def view() -> Any:
        if request.args.get("bad"):
            return {"error": "bad"}, 400

        def events() -> Any:
            yield "x"

        return events()

    yield app, app.test_client()


def test_over_the_cap_eventsource_gets_200_retry_and_others_503(
    capped: tuple[Flask, FlaskClient],
) -> None:
    app, client = capped
    held = client.get("/stream?channel=a", buffered=False)
    try:
        assert held.status_code == 200
        for url in ("/stream?channel=b", "/view"):
            es = client.get(url, headers={"Accept": "text/event-stream"})
            assert es.status_code == 200 and es.mimetype == "text/event-stream"
            retry = es.data.decode()
            assert retry.startswith("retry: ") and retry.endswith("\n")
            assert 1000 <= int(retry[7:]) <= 5000 and "\n\n" not in retry
            other = client.get(url)
            assert other.status_code == 503 and int(other.headers["Retry-After"]) >= 1
            assert "too many" in other.get_json()["error"]
            post = client.post(url, headers={"Accept": "text/event-stream"})
            assert post.status_code in (405, 503)
    finally:
        held.close()
    assert len(registry_for(app)) == 0


def test_a_place_is_held_before_subscribe_and_given_back_on_refusals(
    capped: tuple[Flask, FlaskClient],
) -> None:
    app, client = capped
    registry = registry_for(app)
    state = app.extensions["sse"]
    seen: list[int] = []
    original = state.broker.subscribe

    def subscribe(*args: Any) -> Any:
        seen.append(len(registry))  # a blocking subscribe (Redis) runs here
        return original(*args)

    state.broker.subscribe = subscribe
    response = client.get("/stream?channel=a", buffered=False)
    response.close()
    assert seen == [1] and len(registry) == 0
    # a view that answers 400, a bad channel, a refused authorize: the place comes back
    assert client.get("/view?bad=1").status_code == 400
    assert client.get("/stream?channel=bad%20name").status_code == 400
    assert len(registry) == 0
    ok = client.get("/view")
    assert ok.status_code == 200 and len(registry) == 1
    ok.close()  # the test client closes the body here (a server at the response's end)
    assert len(registry) == 0


def test_overflow_while_writing_shuts_the_socket_and_a_write_deadline_cuts_too() -> None:
    """In process: the stream's socket is shut down the moment its queue overflows while
    the server is still busy with the chunk it was given (stuck in a write)."""
    import socket

    from flask_sse_stream.stream.body import StreamBody
    from flask_sse_stream.stream.options import StreamOptions as StreamSettings
    from flask_sse_stream.stream.registry import StreamRegistry

    app = make_app(SSE_WRITE_TIMEOUT=0.5)
    from flask_sse_stream.settings import settings_for

    settings = StreamSettings(settings_for(app))
    for cause in ("overflow", "deadline"):
        ours, peer = socket.socketpair()
        try:
            mailbox = ThreadMailbox(2)
            registry = StreamRegistry()
            body = StreamBody(mailbox, settings, registry, sock=ours)
            assert next(body).startswith(b": ok")  # handed to the "server", which is writing
            if cause == "overflow":
                for n in range(3):
                    if not mailbox.offer(b"data: %d\n\n" % n):
                        mailbox.close(CloseReason.OVERFLOW)  # what a broker's delivery does
            else:
                body.tick(time.monotonic() + 1.0)  # the registry's timer, past the deadline
            peer.settimeout(2)
            assert peer.recv(100) == b""  # shut down: the peer sees the end at once
            with pytest.raises(OSError):
                ours.sendall(b"x")  # and a write blocked on it fails instead of waiting
            body.close()
            assert len(registry) == 0
        finally:
            ours.close()
            peer.close()


def test_an_upper_case_redis_url_gives_redis_to_channels_and_chat() -> None:
    """One factory rule (the scheme, case-insensitively) for both stores. Nothing
    connects before first use, so no server is needed here."""
    from flask_sse_stream.brokers.redis import RedisBroker
    from flask_sse_stream.chat.store.redis import RedisGenerationStore

    app = make_app(SSE_BROKER_URL="REDIS://127.0.0.1:1/0")
    SSE(app)
    app.register_blueprint(create_chat_blueprint(DemoBackend()), url_prefix="/chat")
    assert isinstance(app.extensions["sse"].broker, RedisBroker)
    chat = app.extensions["flask_sse_stream.chat.chat"]
    assert isinstance(chat.generations.store, RedisGenerationStore)


def test_simultaneous_subscribes_that_block_cannot_pass_the_cap() -> None:
    """Threads mode, a subscribe that blocks (as on Redis): 20 at once against a cap of
    5. Counting only registered streams let all 20 through."""
    app = make_app(SSE_MAX_STREAMS=5)
    SSE(app)
    broker = app.extensions["sse"].broker
    original = broker.subscribe
    inside = threading.Barrier(5, timeout=10)

    def slow_subscribe(*args: Any) -> Any:
        inside.wait()  # the 5 admitted ones are all inside at once
        return original(*args)

    broker.subscribe = slow_subscribe
    client = app.test_client()
    results: list[tuple[bytes, Any]] = []
    lock = threading.Lock()
    start = threading.Barrier(20, timeout=10)

    def subscribe() -> None:
        start.wait()
        response = client.get("/stream?channel=burst", buffered=False,
                              headers={"Accept": "text/event-stream"})
        chunk = first_chunk(response)
        with lock:
            results.append((chunk, response))

    threads = [threading.Thread(target=subscribe) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    try:
        held = [c for c, _ in results if c.startswith(b": ok")]
        refused = [c for c, _ in results if c.startswith(b"retry: ")]
        assert (len(held), len(refused)) == (5, 15)
        assert len(registry_for(app)) == 5
    finally:
        for _, response in results:
            response.close()
    assert len(registry_for(app)) == 0
