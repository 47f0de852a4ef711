"""gunicorn's gevent worker, with what SSE streams need from it.

``gunicorn -k flask_sse_stream.contrib.gunicorn.GeventWorker app:app`` (the packaged
config, ``python:flask_sse_stream.contrib.gunicorn.config``, names it) adds to plain
``-k gevent``:

* **direct writes** (``SSE_DIRECT_WRITE``): the worker calls the app, so it knows when the
  body it is about to iterate is one of our streams, with no middleware in between, and
  how gunicorn frames it; then a chunk that reaches an idle stream is written at once by
  whoever delivers it (``stream/direct.py``), framed as gunicorn frames it and counted in
  its access log;
* **a drain on every way the worker stops**: SIGTERM, but also ``max_requests`` and the
  reloader, which stop it without a signal (every open stream ends with a ``retry:`` hint
  and keep-alive is dropped, so clients reconnect to the new workers and resume);
* **startup warnings** about setups that break replies: the ``memory://`` broker under
  several workers (a resume or a DELETE lands on a worker that never saw the stream) and
  gunicorn's own HTTP/2 (it serves one stream at a time per connection).

Plain ``-k gevent`` works too, with the plain WSGI path and a drain on SIGTERM, SIGINT and
SIGQUIT (``stream/shutdown.py``).
"""

from __future__ import annotations

import logging
from typing import Any

from gunicorn.http.wsgi import Response as GunicornResponse
from gunicorn.workers.ggevent import GeventWorker as _GunicornGeventWorker

from ...stream.body import StreamBody
from ...stream.shutdown import drain, spawn

__all__ = ["GeventWorker", "check_config"]

log = logging.getLogger("flask_sse_stream")


class GeventWorker(_GunicornGeventWorker):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn's gevent worker plus direct writes, a drain on every stop and startup
    warnings (see the module docstring)."""

    @property
    def alive(self) -> bool:
        return bool(self.__dict__.get("alive", False))

    @alive.setter
    def alive(self, value: bool) -> None:
        # gunicorn stops a worker by setting alive to False (signals, max_requests, the
        # reloader); its run loop then waits for the open connections, which the drain
        # ends at once.
        was = self.__dict__.get("alive", False)
        self.__dict__["alive"] = value
        if was and not value:
            self.cfg.set("keepalive", 0)  # drained connections close instead of lingering
            spawn(drain)

    def load_wsgi(self) -> None:
        super().load_wsgi()
        app: Any = getattr(self, "wsgi")  # set by gunicorn's load_wsgi  # noqa: B009
        _warn_about_app(app, self.cfg)
        self.wsgi = DirectWrites(app)


class DirectWrites:
    """The worker's WSGI callable: the app, plus direct writes for our streams.

    gunicorn's async workers call ``self.wsgi(environ, resp.start_response)`` and iterate
    what it returns themselves; being that callable, this knows the body gunicorn will
    iterate is the stream itself (a middleware that wraps bodies would return another
    object) and takes gunicorn's ``Response`` from its ``start_response`` to read
    gunicorn's own framing decision (``chunked``: not under ``--protocol uwsgi``, not for
    HTTP/1.0 or HEAD) and to add to its byte count.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        body = self.app(environ, start_response)
        if isinstance(body, StreamBody):
            response = getattr(start_response, "__self__", None)
            if (
                isinstance(response, GunicornResponse)
                and response.chunked is True
                and response.sock is environ.get("gunicorn.socket")
                and environ.get("wsgi.url_scheme") == "http"
            ):
                body.enable_direct(ChunkedFraming(response))
        return body


class ChunkedFraming:
    """gunicorn's HTTP/1.1 chunk framing, and its access log's byte count."""

    __slots__ = ("_response",)

    def __init__(self, response: GunicornResponse) -> None:
        self._response = response

    def frame(self, chunk: bytes) -> bytes:
        return b"%X\r\n%s\r\n" % (len(chunk), chunk)

    def sent(self, size: int) -> None:
        self._response.sent += size


def _warn_about_app(app: Any, cfg: Any) -> None:
    """Warn (in each worker) when the app's broker is ``memory://`` and gunicorn runs
    several workers, and when gunicorn's own HTTP/2 is on."""
    state = getattr(app, "extensions", {}).get("sse")
    workers = int(getattr(cfg, "workers", 1) or 1)
    if state is not None and state.settings.broker_kind == "memory" and workers > 1:
        log.warning(
            "SSE_BROKER_URL is memory:// but gunicorn runs %d workers: a chat resumed with "
            "Last-Event-ID or stopped with DELETE, and a channel replay, land on a worker "
            "that never saw the stream and fail. Run one worker (-w 1: one gevent worker "
            "holds thousands of streams) or set SSE_BROKER_URL to redis://...",
            workers,
        )
    check_config(cfg)


def check_config(cfg: Any) -> None:
    """Warn when gunicorn's own HTTP/2 is on (see the deployment docs)."""
    protocols = getattr(cfg, "http_protocols", None) or []
    if isinstance(protocols, str):
        protocols = protocols.split(",")
    if any(str(p).strip().lower() == "h2" for p in protocols):
        log.warning(
            "gunicorn's own HTTP/2 is on (http_protocols=%s): under the gevent worker it "
            "serves one stream at a time per connection, so an open SSE stream blocks every "
            "other request of that browser connection. Serve HTTP/1.1 from gunicorn and "
            "terminate HTTP/2 in a proxy (nginx) in front of it.",
            ",".join(str(p) for p in protocols),
        )
