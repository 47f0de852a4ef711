"""Chat backends: where the text of a streamed chat reply comes from.

A backend is any object with a ``stream(messages)`` method that yields the reply piece by
piece (see :class:`ChatBackend`). The chat blueprint turns every piece into one SSE event
as soon as it is yielded, so a backend must yield as soon as it has something, never
buffer the whole reply.

Two backends ship with the package:

* :class:`DemoBackend` needs no network and no API key. It streams a deterministic,
  prompt-dependent reply word by word, so the example app and the tests run anywhere.
* :class:`OpenAIBackend` talks to any OpenAI-compatible ``/v1/chat/completions`` server
  (OpenAI, vLLM, llama.cpp, Ollama, ...) through the official ``openai`` SDK, which is the
  optional extra ``flask-sse-stream[openai]``.

Cancellation contract: closing the generator returned by ``stream()`` (``gen.close()``,
which the blueprint does when a generation is stopped, or a ``GreenletExit`` raised into
the greenlet running it) must release the upstream request at once; tokens cost money.
Upstream failures are raised as :class:`BackendError`, whose message is safe to show to
the browser.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import sys
import time
import zlib
from collections.abc import Generator, Iterator
from typing import Any, Protocol, runtime_checkable

from .parts import Finish, Usage

__all__ = [
    "BackendError",
    "ChatBackend",
    "DemoBackend",
    "Finish",
    "OpenAIBackend",
    "Usage",
]


@runtime_checkable
class ChatBackend(Protocol):
    """What the chat blueprint needs from a backend.

    ``stream`` receives OpenAI-style messages (``{"role": ..., "content": ...}`` dicts, the
    last one normally from the user) and returns an iterator, normally a generator, of text
    pieces. Concatenating the ``str`` pieces gives the full reply. It may also yield a
    :class:`Usage` and a :class:`Finish`. Failures are raised as :class:`BackendError`.
    The blueprint calls
    ``close()`` on the iterator (if it has one) to cancel a generation, so a generator
    should release its upstream resources in a ``finally:`` block.
    """

    def stream(self, messages: list[dict[str, str]]) -> Iterator[str | Usage | Finish]:
        """Yield the reply to ``messages`` piece by piece."""
        ...


class BackendError(Exception):
    """An upstream failure, with a short message that is safe to show to a client.

    The message never contains API keys, URLs with credentials or stack traces; the
    original exception, when there is one, is chained as ``__cause__`` for the server's
    logs. ``status_code`` is the upstream HTTP status when the failure was an HTTP error.
    """

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


# --------------------------------------------------------------------------------------
# Demo backend
# --------------------------------------------------------------------------------------

_DEMO_QUOTE_LIMIT = 120

_DEMO_CLOSERS = (
    "Ask the same thing again and you will get exactly the same answer, byte for byte.",
    "Send the same prompt twice and the reply will not change by a single byte.",
    "Repeat the question and this reply repeats too — déjà vu, on purpose.",
    "The same prompt always earns the same reply, which keeps tests honest.",
)


def _last_user_text(messages: list[dict[str, str]]) -> str:
    """Return the content of the last ``user`` message (or of the last message at all)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return str(message.get("content") or "")
    return str(messages[-1].get("content") or "") if messages else ""


class DemoBackend:
    """The embedded default backend: no network, a deterministic reply, word by word.

    The reply quotes the last user message and says a few things about it, so it is
    different for every prompt but byte-identical for the same prompt (tests compare it
    with :meth:`reply_for`). It contains non-ASCII text and one paragraph break (``\\n\\n``)
    to exercise UTF-8 and multi-line SSE data. Each piece is one word plus the whitespace
    that follows it, so ``"".join(pieces) == reply_for(messages)``.

    ``delay`` seconds are slept before each piece with :func:`time.sleep`, looked up at call
    time, so under gunicorn's gevent worker (which monkey-patches it) the wait is
    cooperative and thousands of demo streams can run in one worker.
    """

    def __init__(self, delay: float = 0.05) -> None:
        if delay < 0:
            raise ValueError("delay must be >= 0")
        self.delay = float(delay)

    @staticmethod
    def reply_for(messages: list[dict[str, str]]) -> str:
        """Return the full reply that :meth:`stream` would send for ``messages``."""
        prompt = _last_user_text(messages)
        words = prompt.split()
        quote = " ".join(words)
        if len(quote) > _DEMO_QUOTE_LIMIT:
            quote = quote[: _DEMO_QUOTE_LIMIT - 1].rstrip() + "…"
        if not quote:
            opening = "You sent an empty message, so there is nothing to echo."
        else:
            opening = f"You said: “{quote}”."
        n_words = len(words)
        n_chars = len(prompt)
        closer = _DEMO_CLOSERS[zlib.crc32(prompt.encode("utf-8")) % len(_DEMO_CLOSERS)]
        return (
            f"{opening} This is the demo backend of flask-sse-stream — it streams a canned "
            f"reply one word at a time, so you can watch Server-Sent Events arrive without "
            f"a model server or an API key.\n\n"
            f"Your message had {n_words} {'word' if n_words == 1 else 'words'} and "
            f"{n_chars} {'character' if n_chars == 1 else 'characters'}, and the "
            f"conversation so far holds {len(messages)} "
            f"{'message' if len(messages) == 1 else 'messages'}. {closer}"
        )

    def stream(self, messages: list[dict[str, str]]) -> Generator[str | Usage, None, None]:
        """Yield :meth:`reply_for` word by word, sleeping ``delay`` before each word.

        Ends with a :class:`Usage` whose counts are words (prompt) and pieces (reply).
        """
        pieces = re.findall(r"\s*\S+\s*", self.reply_for(messages))
        for piece in pieces:
            time.sleep(self.delay)  # module attribute: gevent's patch applies at call time
            yield piece
        prompt_tokens = sum(len(str(m.get("content") or "").split()) for m in messages)
        yield Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=len(pieces),
            total_tokens=prompt_tokens + len(pieces),
        )


# --------------------------------------------------------------------------------------
# OpenAI-compatible backend
# --------------------------------------------------------------------------------------

_MAX_SERVER_MESSAGE = 200
_KEY_PATTERN = re.compile(r"\b(sk-|Bearer\s+)[A-Za-z0-9_\-*]{4,}", re.IGNORECASE)


def _exception_names(exc: BaseException) -> set[str]:
    """Names of every class in ``exc``'s MRO.

    Matching on names lets one mapping cover ``openai`` 1.x (whose streams can leak raw
    ``httpx`` errors), 2.x/3.x (``httpx2`` underneath, wrapped in ``APIConnectionError``)
    and plain socket errors, without importing any of those packages here.
    """
    return {cls.__name__ for cls in type(exc).__mro__}


def _make_trio_import_safe() -> None:
    """Keep a gevent-patched process from crashing when httpcore imports ``trio``.

    httpcore (and httpcore2, under ``openai`` 3.x) does ``try: import trio`` and only
    catches ``ImportError``, but gevent's ``patch_all()`` (which gunicorn's gevent worker
    runs first) removes ``select.epoll``/``select.kqueue``, and some trio versions then
    fail with ``AttributeError: module 'select' has no attribute 'epoll'``
    (python-trio/trio#2848). Building the SDK client would crash the worker. If trio is
    not importable in this process, record it as absent so those imports see a clean
    ``ImportError``; trio could not run under gevent anyway, and nothing changes where
    the import works or the ``select`` module is intact.
    """
    if sys.platform == "win32" or "trio" in sys.modules:
        return
    if hasattr(select, "epoll") or hasattr(select, "kqueue"):
        return  # not monkey-patched: trio imports normally
    try:
        import trio  # noqa: F401
    except Exception:
        sys.modules["trio"] = None  # type: ignore[assignment]


class OpenAIBackend:
    """Stream replies from any OpenAI-compatible ``/v1/chat/completions`` server.

    Works with OpenAI, vLLM, llama.cpp's server, Ollama and anything else that speaks the
    streamed Chat Completions protocol. One ``openai.OpenAI`` client is built per backend,
    so its HTTP connection pool is shared by all the streams of a worker.

    ``base_url`` is the server's ``.../v1`` URL (``None``: the SDK's default, which honours
    ``OPENAI_BASE_URL``). ``api_key`` falls back to ``OPENAI_API_KEY`` and then to a
    placeholder, because local servers need none. ``timeout`` bounds every wait for data
    (a hung server fails after it instead of holding the stream open forever) and
    ``connect_timeout`` the TCP/TLS connect. Retries are off: a retried stream would repeat
    text the client has already shown. ``client`` replaces the SDK client (to use a custom
    ``http_client``, for example); the other connection arguments are then ignored.

    Requires the ``openai`` package; constructing one without it raises ``RuntimeError``
    naming the extra to install (importing this module never needs it).
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str = "gpt-4o-mini",
        *,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
        max_tokens: int | None = None,
        temperature: float | None = None,
        client: Any = None,
    ) -> None:
        _make_trio_import_safe()
        try:
            import openai
        except ImportError as exc:
            raise RuntimeError(
                "OpenAIBackend needs the openai package: pip install 'flask-sse-stream[openai]'"
            ) from exc
        self._openai: Any = openai
        self.model = model
        self.base_url = base_url
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        key = api_key or os.environ.get("OPENAI_API_KEY") or "not-needed"
        self._api_key = key
        if client is None:
            client = openai.OpenAI(
                base_url=base_url,
                api_key=key,
                # openai.Timeout is the httpx(2) Timeout class of the installed SDK.
                timeout=openai.Timeout(timeout, connect=connect_timeout),
                max_retries=0,
            )
        self.client: Any = client

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, model={self.model!r})"

    def close(self) -> None:
        """Close the SDK client and its connection pool (e.g. at application shutdown)."""
        self.client.close()

    def _request_kwargs(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        """Build the keyword arguments of ``chat.completions.create``."""
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.max_tokens is not None:
            kwargs["max_tokens"] = self.max_tokens
        if self.temperature is not None:
            kwargs["temperature"] = self.temperature
        return kwargs

    def stream(
        self, messages: list[dict[str, str]]
    ) -> Generator[str | Usage | Finish, None, None]:
        """Yield the reply's text pieces as the server streams them, then the model's
        :class:`Finish` reason and its ``Usage``.

        The request is only sent on the first ``next()``. Closing the generator (or
        killing the greenlet that runs it) closes the upstream HTTP response at once, in
        the ``finally:`` below, so the server stops generating. Every upstream failure,
        before or during the stream, is raised as :class:`BackendError`; ``GeneratorExit``
        and ``GreenletExit`` pass through untouched (only ``Exception`` is caught).
        """
        response: Any = None
        try:
            try:
                response = self.client.chat.completions.create(**self._request_kwargs(messages))
                chunks = iter(response)
            except Exception as exc:
                raise self._map_error(exc, started=False) from exc

            usage: Usage | None = None
            finished: str | None = None
            while True:
                try:
                    chunk = next(chunks)
                except StopIteration:
                    break
                except Exception as exc:
                    raise self._map_error(exc, started=True) from exc
                try:
                    piece, chunk_usage, finish_reason = self._parse_chunk(chunk)
                except Exception as exc:
                    raise BackendError("the model server sent a malformed response") from exc
                if chunk_usage is not None:
                    usage = chunk_usage
                if finish_reason:
                    finished = finish_reason
                if piece:
                    yield piece
            if not finished:
                # Every choice of a complete OpenAI stream ends with a finish_reason; a
                # stream that stops without one was cut off and the reply is incomplete.
                raise BackendError("the connection to the model server ended mid-reply")
            yield Finish(finished)
            if usage is not None:
                yield usage
        finally:
            if response is not None:
                # Closing the SDK stream closes the HTTP response and, since its body was
                # not read to the end, the connection: the server sees the client leave.
                with contextlib.suppress(Exception):
                    response.close()

    @staticmethod
    def _parse_chunk(chunk: Any) -> tuple[str, Usage | None, str | None]:
        """Return ``(text, usage, finish_reason)`` of one ``chat.completion.chunk``."""
        text = ""
        finish_reason: str | None = None
        choices = getattr(chunk, "choices", None)
        if choices is None and not hasattr(chunk, "usage"):
            raise ValueError(f"not a chat.completion.chunk: {type(chunk).__name__}")
        if choices:
            choice = choices[0]
            delta = getattr(choice, "delta", None)
            content = getattr(delta, "content", None) if delta is not None else None
            if isinstance(content, str):
                text = content
            reason = getattr(choice, "finish_reason", None)
            finish_reason = str(reason) if reason else None
        usage = None
        raw_usage = getattr(chunk, "usage", None)
        if raw_usage is not None:
            usage = Usage(
                prompt_tokens=_as_int(getattr(raw_usage, "prompt_tokens", None)),
                completion_tokens=_as_int(getattr(raw_usage, "completion_tokens", None)),
                total_tokens=_as_int(getattr(raw_usage, "total_tokens", None)),
            )
        return text, usage, finish_reason

    def _safe(self, text: str) -> str:
        """Shorten a server-provided message and strip anything that looks like a key."""
        text = " ".join(text.split())
        if self._api_key and len(self._api_key) >= 4:
            text = text.replace(self._api_key, "***")
        text = _KEY_PATTERN.sub(lambda m: m.group(1) + "***", text)
        if len(text) > _MAX_SERVER_MESSAGE:
            text = text[: _MAX_SERVER_MESSAGE - 1].rstrip() + "…"
        return text

    def _server_message(self, body: object) -> str:
        """Extract the human-readable message of an OpenAI-style error body."""
        if isinstance(body, dict):
            for key in ("message", "error", "detail"):
                value = body.get(key)
                if isinstance(value, dict):
                    return self._server_message(value)
                if isinstance(value, str) and value:
                    return self._safe(value)
            return ""
        if isinstance(body, str) and "<" not in body:  # skip HTML error pages
            return self._safe(body)
        return ""

    def _map_error(self, exc: Exception, *, started: bool) -> BackendError:
        """Turn any upstream exception into a client-safe :class:`BackendError`.

        ``started`` tells whether the response had begun (the request was accepted), to
        tell "could not reach the server" from "the connection broke mid-reply".
        """
        openai = self._openai
        if isinstance(exc, BackendError):
            return exc
        names = _exception_names(exc)
        if isinstance(exc, openai.APIStatusError):
            status = int(exc.status_code)
            detail = self._server_message(exc.body)
            message = f"the model server answered HTTP {status}"
            return BackendError(f"{message}: {detail}" if detail else message, status_code=status)
        if (
            isinstance(exc, openai.APITimeoutError)
            or names & {"TimeoutException", "TimeoutError"}
            or isinstance(exc, TimeoutError)
        ):
            return BackendError("the model server did not answer in time (timeout)")
        if isinstance(exc, openai.APIConnectionError) or names & {
            "RequestError",
            "TransportError",
            "ConnectionError",
            "EndOfStream",
        }:
            if started:
                return BackendError("the connection to the model server was lost mid-reply")
            return BackendError("could not connect to the model server")
        if isinstance(exc, openai.APIError):
            # An ``{"error": {...}}`` chunk inside a 200 stream (the server failed after it
            # had started answering), or another error the SDK detected.
            detail = self._server_message(exc.body) or self._safe(str(exc.message))
            return BackendError(f"the model server reported an error: {detail}")
        if isinstance(exc, ValueError | TypeError | AttributeError | KeyError):
            # json.JSONDecodeError is a ValueError: ``data:`` lines that are not JSON.
            return BackendError("the model server sent a malformed response")
        if isinstance(exc, OSError):
            return BackendError("the connection to the model server failed")
        return BackendError("the model server request failed")


def _as_int(value: object) -> int | None:
    """``value`` as an int when it is one (token counts), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    return None
