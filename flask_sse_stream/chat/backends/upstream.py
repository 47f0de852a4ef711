"""One OpenAI-compatible server, read at wire speed: ``httpx`` and our own SSE parser.

:class:`Upstream` holds what the official SDK gave users (the base URL, the API key, the
``OpenAI-Organization`` / ``OpenAI-Project`` headers, default headers, a connect and a
between-chunk read timeout, retries, safe error messages) and one ``httpx.Client`` whose
connection pool is sized for thousands of concurrent replies: httpx's default of 100
connections would make the 101st reply wait for a free one.

:meth:`Upstream.chunks` posts one request and yields the streamed ``chat.completion.chunk``
objects as plain dicts: the bytes httpx reads go through
:class:`~flask_sse_stream.wire.parse.EventParser` and each message's data through one
``json.loads``. That is the whole per-chunk path (the SDK builds pydantic models on top,
at twenty times the CPU); see ``bench/upstream_read.py``.

Retries happen only before the first byte of a successful response: connection errors,
and HTTP 408, 409, 429 and 5xx (honouring ``Retry-After`` / ``retry-after-ms`` and
``x-should-retry``), with exponential back-off, at most ``max_retries`` times. Once a
``2xx`` response has begun nothing is retried: a retried stream would repeat text the
client has already shown. A read timeout is not retried either: the server took the
request and may be generating; asking again would double its work and the user's wait.

Closing the generator :meth:`Upstream.chunks` returned (or a ``GreenletExit`` in the
greenlet reading it) closes the HTTP response at once, and with it the connection, so
the server sees the client leave and stops generating.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import os
import random
import re
import select
import sys
import time
from collections.abc import Generator, Iterator, Mapping
from typing import Any

from ... import runtime
from ...wire.parse import EventParser
from .base import BackendError

__all__ = ["DEFAULT_BASE_URL", "Upstream"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUSES = frozenset({408, 409, 429})  # and every 5xx
INITIAL_BACKOFF = 0.5  # seconds; doubled per retry, with jitter (the SDK's schedule)
MAX_BACKOFF = 8.0
MAX_RETRY_AFTER = 30.0  # a server asking for a longer wait gets its error reported now
DRAIN_TIMEOUT = 1.0  # after [DONE], how long the body's end may take to keep the connection
_MAX_ERROR_BODY = 64 * 1024
_MAX_SERVER_MESSAGE = 200
_KEY_PATTERN = re.compile(r"\b(sk-|Bearer\s+)[A-Za-z0-9_\-*]{4,}", re.IGNORECASE)


def _make_trio_import_safe() -> None:
    """Keep a gevent-patched process from crashing when httpcore imports ``trio``.

    httpcore does ``try: import trio`` and only catches ``ImportError``, but gevent's
    ``patch_all()`` (which gunicorn's gevent worker runs first) removes
    ``select.epoll``/``select.kqueue``, and some trio versions then fail with
    ``AttributeError`` (python-trio/trio#2848), which would crash the worker. If trio is
    not importable in this process, record it as absent so that import sees a clean
    ``ImportError``; trio could not run under gevent anyway, and nothing changes where the
    import works or the ``select`` module is intact.
    """
    if sys.platform == "win32" or "trio" in sys.modules:
        return
    if hasattr(select, "epoll") or hasattr(select, "kqueue"):
        return  # not monkey-patched: trio imports normally
    try:
        import trio  # noqa: F401
    except Exception:
        sys.modules["trio"] = None  # type: ignore[assignment]


_make_trio_import_safe()
import httpx  # noqa: E402  (after the guard above)


class Upstream:
    """The HTTP side of :class:`~flask_sse_stream.chat.OpenAIBackend` (see the module doc).

    ``client``: an ``httpx.Client`` to send with instead of the one built here (for
    proxies, client certificates, a custom transport); the caller owns it, sizes its pool
    and closes it. The URL, headers, timeouts and retries still come from here.
    """

    def __init__(
        self,
        *,
        base_url: str | None,
        api_key: str | None,
        organization: str | None = None,
        project: str | None = None,
        default_headers: Mapping[str, str] | None = None,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
        max_retries: int = 2,
        max_connections: int = 10_000,
        client: httpx.Client | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        base = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        self.base_url = base.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or "not-needed"
        organization = organization or os.environ.get("OPENAI_ORG_ID")
        project = project or os.environ.get("OPENAI_PROJECT_ID")
        self.headers: dict[str, str] = {
            "Authorization": f"Bearer {self.api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            # No compression: a compressor buffers tokens, and decompressing costs CPU.
            "Accept-Encoding": "identity",
            "User-Agent": "flask-sse-stream",
        }
        if organization:
            self.headers["OpenAI-Organization"] = organization
        if project:
            self.headers["OpenAI-Project"] = project
        self.headers.update(default_headers or {})
        self.max_retries = max_retries
        # read: between two chunks; pool: waiting for a free connection of the pool
        self.timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self._owns_client = client is None
        if client is None:
            limits = httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=5.0,
            )
            client = httpx.Client(limits=limits, timeout=self.timeout, follow_redirects=False)
        self.client = client

    def close(self) -> None:
        """Close the connection pool, if it was built here."""
        if self._owns_client:
            self.client.close()

    # -- the stream ------------------------------------------------------------------

    def chunks(self, body: bytes) -> Generator[Any, None, None]:
        """POST ``body`` (the JSON request) and yield each streamed chunk, decoded.

        Ends at ``data: [DONE]`` or at the end of the body (the caller tells a complete
        reply by its ``finish_reason``). Raises :class:`BackendError` for every failure.
        """
        response = self._open(body)
        pieces = response.iter_bytes()
        done = False
        try:
            feed = EventParser().feed
            loads = json.loads
            clean = False  # the parser holds nothing: its last input ended with a blank line
            try:
                for raw in pieces:
                    if clean and raw[:6] == b"data: " and raw[-2:] == b"\n\n" and (
                        raw.count(b"\n") == 2 and b"\r" not in raw
                    ):
                        # The shape of nearly every chunk: one whole ``data:`` line and its
                        # blank line. The parser would return exactly this data (its state
                        # is clean); skipping it halves the cost of a chunk.
                        data = raw[6:-2].decode("utf-8", "replace")
                        if data == "[DONE]":
                            done = True
                            return
                        yield loads(data)
                        continue
                    clean = raw[-2:] == b"\n\n"
                    for event in feed(raw):
                        data = event.data
                        if data == "[DONE]":
                            done = True
                            return
                        yield loads(data)
            except Exception as exc:
                raise self.error(exc, started=True) from exc
        finally:
            self._release(response, pieces, done)

    def _release(self, response: httpx.Response, pieces: Iterator[bytes], done: bool) -> None:
        """Close ``response``. After ``[DONE]`` the body's end normally follows at once:
        under gevent it is read (bounded) so the connection goes back to the pool for the
        next reply instead of costing a new TCP (and TLS) handshake."""
        run = runtime.current()
        if done and run.cooperative:
            with contextlib.suppress(Exception):
                run.call_with_timeout(DRAIN_TIMEOUT, lambda: _read_to_end(pieces))
        with contextlib.suppress(Exception):
            response.close()

    def _open(self, body: bytes) -> httpx.Response:
        """Send the request, retrying before the first byte; a 2xx streaming response."""
        attempt = 0
        while True:
            try:
                request = self.client.build_request(
                    "POST", self.url, content=body, headers=self.headers, timeout=self.timeout
                )
                response = self.client.send(request, stream=True)
            except Exception as exc:
                if attempt < self.max_retries and _retryable(exc):
                    attempt += 1
                    time.sleep(_backoff(attempt))  # module attribute: gevent patches it
                    continue
                raise self.error(exc, started=False) from exc
            if response.status_code < 300:
                return response
            detail = self._error_detail(response)
            wait = self._retry_wait(response, attempt)
            if wait is None:
                status = response.status_code
                message = f"the model server answered HTTP {status}"
                raise BackendError(f"{message}: {detail}" if detail else message,
                                   status_code=status)
            attempt += 1
            time.sleep(wait)

    def _retry_wait(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying this error response, or None: no retry."""
        if attempt >= self.max_retries:
            return None
        status = response.status_code
        should = response.headers.get("x-should-retry")
        if should == "false":
            return None
        if should != "true" and status not in RETRY_STATUSES and status < 500:
            return None
        after = _retry_after(response.headers)
        if after is None:
            return _backoff(attempt + 1)
        return None if after > MAX_RETRY_AFTER else after

    def _error_detail(self, response: httpx.Response) -> str:
        """The safe message of an error response's body (read bounded, then closed)."""
        try:
            raw = bytearray()
            for piece in response.iter_bytes():
                raw += piece
                if len(raw) > _MAX_ERROR_BODY:
                    break
            text = raw.decode("utf-8", "replace")
            try:
                body: Any = json.loads(text)
            except ValueError:
                body = text
            return self.server_message(body)
        except Exception:
            return ""
        finally:
            with contextlib.suppress(Exception):
                response.close()

    # -- safe messages ---------------------------------------------------------------

    def safe(self, text: str) -> str:
        """Shorten a server-provided message and strip anything that looks like a key."""
        text = " ".join(text.split())
        if self.api_key and len(self.api_key) >= 4:
            text = text.replace(self.api_key, "***")
        text = _KEY_PATTERN.sub(lambda m: m.group(1) + "***", text)
        if len(text) > _MAX_SERVER_MESSAGE:
            text = text[: _MAX_SERVER_MESSAGE - 1].rstrip() + "…"
        return text

    def server_message(self, body: object) -> str:
        """The human-readable message of an OpenAI-style error body, made safe."""
        if isinstance(body, dict):
            for key in ("message", "error", "detail"):
                value = body.get(key)
                if isinstance(value, dict):
                    return self.server_message(value)
                if isinstance(value, str) and value:
                    return self.safe(value)
            return ""
        if isinstance(body, str) and "<" not in body:  # skip HTML error pages
            return self.safe(body)
        return ""

    def error(self, exc: Exception, *, started: bool) -> BackendError:
        """Any failure as a client-safe :class:`BackendError` (never the URL or the key).

        ``started``: the response had begun, to tell "could not reach the server" from
        "the connection broke mid-reply".
        """
        if isinstance(exc, BackendError):
            return exc
        if isinstance(exc, httpx.PoolTimeout):
            return BackendError("too many requests to the model server at once "
                                "(no free connection in the pool)")
        if isinstance(exc, httpx.TimeoutException | TimeoutError):
            return BackendError("the model server did not answer in time (timeout)")
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
            return BackendError("the model server URL is not a valid http(s) URL")
        if isinstance(exc, httpx.TransportError | OSError):
            if started:
                return BackendError("the connection to the model server was lost mid-reply")
            return BackendError("could not connect to the model server")
        if isinstance(exc, ValueError | TypeError | AttributeError | KeyError | IndexError):
            # json.JSONDecodeError is a ValueError: ``data:`` lines that are not JSON.
            return BackendError("the model server sent a malformed response")
        return BackendError("the model server request failed")


def _read_to_end(pieces: Iterator[bytes]) -> None:
    for _ in pieces:
        pass


def _retryable(exc: Exception) -> bool:
    """A failure before any response byte that a new attempt may not meet again.

    Not a read timeout (the server has the request and may be generating), nor a full
    pool, nor a bad URL.
    """
    if isinstance(exc, httpx.ReadTimeout | httpx.PoolTimeout):
        return False
    return isinstance(
        exc,
        httpx.ConnectError | httpx.ConnectTimeout | httpx.ReadError | httpx.WriteError
        | httpx.WriteTimeout | httpx.RemoteProtocolError,
    )


def _backoff(retry: int) -> float:
    """Seconds before retry number ``retry`` (from 1): 0.5, 1, 2, ... 8, less up to 25 %."""
    return min(INITIAL_BACKOFF * 2.0 ** (retry - 1), MAX_BACKOFF) * (1 - 0.25 * random.random())


def _retry_after(headers: httpx.Headers) -> float | None:
    """The wait a server asks for: ``retry-after-ms``, else ``Retry-After`` (seconds or an
    HTTP date); None when absent or unreadable."""
    millis = headers.get("retry-after-ms")
    if millis:
        with contextlib.suppress(ValueError):
            return max(float(millis) / 1000.0, 0.0)
    value = headers.get("retry-after")
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return max(float(value), 0.0)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(when.timestamp() - time.time(), 0.0)
