"""The OpenAI-compatible backend: stream, reason, call tools, run the server-side ones."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...wire.event import compact_json
from ..parts import Finish, Reasoning, ToolResult, Usage
from .base import BackendError, Message, Piece
from .calls import Call, Fragments, RawCall, Toolbox, assistant_message, tool_message
from .tools import Tool, as_tool, run_tool

if TYPE_CHECKING:
    import httpx

    from .upstream import Upstream

__all__ = ["OpenAIBackend"]

DEFAULT_TOOL_TIMEOUT = 30.0
_STOPPED = ("length", "content_filter")  # a step cut short: its tool calls may be too


class OpenAIBackend:
    """Stream replies from any OpenAI-compatible ``/v1/chat/completions`` server.

    OpenAI, vLLM, llama.cpp's server, Ollama, LiteLLM, DeepSeek, OpenRouter, ...: the
    reply's text as ``str``, the model's reasoning as ``Reasoning`` (from
    ``delta.reasoning_content`` or ``delta.reasoning``, whichever the server sends), its
    tool calls as ``ToolCall`` (``delta.tool_calls`` fragments joined per ``index``), then
    ``Finish(reason)`` and the reply's ``Usage`` (summed over its model requests).

    Connection: ``base_url`` is the server's ``.../v1`` URL (None: ``OPENAI_BASE_URL``,
    else OpenAI's). ``api_key`` falls back to ``OPENAI_API_KEY``, then to a placeholder
    (local servers need none); ``organization`` / ``project`` (else ``OPENAI_ORG_ID`` /
    ``OPENAI_PROJECT_ID``) are sent as OpenAI's headers; ``default_headers`` go on every
    request. ``connect_timeout`` bounds the TCP/TLS connect and ``timeout`` every wait for
    data, so a hung server fails instead of holding the stream open. ``max_retries``
    retries (connection errors, 408, 409, 429, 5xx, honouring ``Retry-After``) happen only
    before the reply starts: a retried stream would repeat text. One connection pool
    serves every reply of the process, up to ``max_connections`` at once. ``client``: an
    ``httpx.Client`` to send with (proxies, certificates, a transport); you own and size
    it. (An ``openai.OpenAI`` client is refused: the backend reads the stream itself.)

    Request: ``model``, ``max_tokens``, ``temperature``, and ``extra_body`` (any other
    request fields, e.g. ``{"reasoning_effort": "low"}``).

    Tools: ``tools`` lists typed functions (server-side tools; see
    :mod:`~flask_sse_stream.chat.backends.tools`) and :class:`Tool` objects (an explicit
    schema; without ``function`` a client-side tool). ``stream(messages, tools=...,
    tool_choice=...)`` adds a request's own tools (the client's; a name the backend
    already has keeps the backend's) and forwards ``tool_choice`` on the first model
    request of the reply (later ones are left to the model, or a ``"required"`` choice
    would call tools until ``max_steps``). When the model calls a server-side tool the
    backend yields the ``ToolCall``, runs the function, yields its ``ToolResult`` and asks
    the model again with the result: at most ``max_steps`` model requests per reply.
    Arguments that are not a JSON object or do not fit the schema, an unknown tool, an
    exception, or no result within ``tool_timeout`` seconds become an error result the
    model sees and can correct. A call of a client-side tool (the backend's or the
    request's) ends the reply with ``Finish("tool_calls")`` after the step's server-side
    results. A reply that used up ``max_steps`` while the model still asks for
    server-side tools ends with ``Finish("length")``; those calls are not run (their
    results say so).

    ``tool_timeout`` (30 s by default; None: no bound) is long enough for a web search or
    a database query and short enough that a stuck tool does not hold a generation, and
    its place under ``CHAT_MAX_GENERATIONS``, for long: the model is told the tool timed
    out. Under gevent the tool runs in the generation's greenlet, so the timeout and a
    cancelled generation (``GreenletExit``) interrupt it wherever it blocks
    cooperatively. Under threads a tool cannot be interrupted: it runs in a helper
    thread, abandoned at the timeout, and a cancel takes effect when the tool returns or
    times out. Tools run outside any request context (a generation outlives its request).

    Requires ``httpx`` (the extra ``flask-sse-stream[openai]``); constructing one without
    it raises ``RuntimeError`` naming the extra (importing this module never needs it).
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
        client: httpx.Client | None = None,
        organization: str | None = None,
        project: str | None = None,
        default_headers: Mapping[str, str] | None = None,
        max_retries: int = 2,
        max_connections: int = 10_000,
        extra_body: Mapping[str, Any] | None = None,
        tools: Iterable[Tool | Callable[..., Any]] = (),
        max_steps: int = 5,
        tool_timeout: float | None = DEFAULT_TOOL_TIMEOUT,
    ) -> None:
        if max_steps < 1:
            raise ValueError("max_steps must be >= 1")
        if tool_timeout is not None and tool_timeout <= 0:
            raise ValueError("tool_timeout must be > 0 (or None)")
        try:
            from .upstream import Upstream
        except ImportError as exc:
            raise RuntimeError(
                "OpenAIBackend needs httpx: pip install 'flask-sse-stream[openai]'"
            ) from exc
        _refuse_sdk_client(client)
        self.model = model
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.extra_body = dict(extra_body or {})
        self.max_steps = max_steps
        self.tool_timeout = tool_timeout
        self.tools: tuple[Tool, ...] = tuple(as_tool(tool) for tool in tools)
        names = [tool.name for tool in self.tools]
        if len(set(names)) != len(names):
            raise ValueError(f"two tools share a name: {names}")
        self._schemas = [tool.schema() for tool in self.tools]
        self.upstream: Upstream = Upstream(
            base_url=base_url, api_key=api_key, organization=organization, project=project,
            default_headers=default_headers, timeout=timeout, connect_timeout=connect_timeout,
            max_retries=max_retries, max_connections=max_connections, client=client,
        )
        self.base_url = self.upstream.base_url
        self.client = self.upstream.client

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, model={self.model!r})"

    def close(self) -> None:
        """Close the connection pool (e.g. at application shutdown), unless it is yours."""
        self.upstream.close()

    def stream(
        self, messages: list[Message], *, tools: list[dict[str, Any]] | None = None,
        tool_choice: Any = None,
    ) -> Generator[Piece, None, None]:
        """Yield the reply to ``messages`` (see the class doc), request by request.

        The first request is sent on the first ``next()``. Closing the generator (or a
        ``GreenletExit`` in the greenlet running it) closes the upstream response at once,
        or stops the running tool. Upstream failures are raised as :class:`BackendError`;
        ``GeneratorExit`` and ``GreenletExit`` pass through untouched.
        """
        box = Toolbox(self.tools, self._schemas, tools)
        conversation = list(messages)
        usage: Usage | None = None
        for step in range(1, self.max_steps + 1):
            body = self._body(conversation, box.schemas, tool_choice if step == 1 else None)
            reply = yield from self._read_step(body)
            usage = _add_usage(usage, reply.usage)
            if not reply.calls or reply.finish in _STOPPED:
                yield Finish(reply.finish)
                break
            calls = [box.prepare(call) for call in reply.calls]
            for call in calls:
                yield call.part
            waiting = any(call.pending for call in calls)  # a client-side tool runs next
            unanswered = step == self.max_steps and not waiting
            results = []
            for call in calls:
                if not call.pending:
                    result = self._answer(call, unanswered)
                    yield result
                    results.append(result)
            if waiting or unanswered:
                yield Finish("tool_calls" if waiting else "length")
                break
            conversation.append(assistant_message("".join(reply.text), reply.calls))
            conversation.extend(tool_message(result) for result in results)
        if usage is not None:
            yield usage

    def _answer(self, call: Call, unanswered: bool) -> ToolResult:
        if call.error is not None:
            return ToolResult(call.part.id, error=call.error)
        if unanswered:
            return ToolResult(call.part.id, error=f"not run: the reply reached its limit of "
                                                  f"{self.max_steps} model requests")
        assert call.tool is not None
        return run_tool(call.tool, call.part.id, call.part.arguments, self.tool_timeout)

    def _body(self, conversation: list[Message], schemas: list[dict[str, Any]],
              tool_choice: Any) -> bytes:
        """The JSON of one streamed Chat Completions request."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": conversation,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.temperature is not None:
            body["temperature"] = self.temperature
        body.update(self.extra_body)
        if schemas:
            body["tools"] = schemas
            if tool_choice is not None:
                body["tool_choice"] = tool_choice
        return compact_json(body).encode("utf-8")

    def _read_step(self, body: bytes) -> Generator[Piece, None, _Reply]:
        """One model request: yield its text and reasoning as they stream; return what
        else it said (tool calls, finish reason, usage)."""
        reply = _Reply()
        text = reply.text
        calls = reply.fragments
        raw_usage: Any = None
        chunks = self.upstream.chunks(body)
        try:
            for chunk in chunks:
                reasoning = content = None
                try:
                    choices = chunk.get("choices")
                    if choices:
                        choice = choices[0]
                        delta = choice.get("delta")
                        if delta:
                            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                            content = delta.get("content")
                            fragments = delta.get("tool_calls")
                            if fragments:
                                calls.add(fragments)
                        if choice.get("finish_reason"):
                            reply.finish = str(choice["finish_reason"])
                    elif choices is None and chunk.get("error") is not None:
                        raise self._reported(chunk)
                    if chunk.get("usage"):
                        raw_usage = chunk["usage"]
                except (AttributeError, TypeError, KeyError, IndexError, ValueError) as exc:
                    raise BackendError("the model server sent a malformed response") from exc
                if reasoning and isinstance(reasoning, str):
                    yield Reasoning(reasoning)
                if content and isinstance(content, str):
                    text.append(content)
                    yield content
        finally:
            chunks.close()
        if not reply.finish:
            # Every choice of a complete stream ends with a finish_reason; a stream that
            # stops without one was cut off and the reply is incomplete.
            raise BackendError("the connection to the model server ended mid-reply")
        reply.calls = calls.joined()
        reply.usage = _usage(raw_usage)
        return reply

    def _reported(self, chunk: dict[str, Any]) -> BackendError:
        """An ``{"error": ...}`` chunk inside a 200 stream: the server failed mid-reply."""
        detail = self.upstream.server_message(chunk)
        return BackendError(f"the model server reported an error: {detail or 'no detail'}")


@dataclass
class _Reply:
    """What one model request said besides what was streamed: text (kept for the
    assistant message), tool calls, finish reason, usage."""

    text: list[str] = field(default_factory=list)
    fragments: Fragments = field(default_factory=Fragments)
    calls: list[RawCall] = field(default_factory=list)
    finish: str = ""
    usage: Usage | None = None


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    return Usage(
        prompt_tokens=_as_int(raw.get("prompt_tokens")),
        completion_tokens=_as_int(raw.get("completion_tokens")),
        total_tokens=_as_int(raw.get("total_tokens")),
    )


def _add_usage(total: Usage | None, more: Usage | None) -> Usage | None:
    if total is None or more is None:
        return more or total

    def add(a: int | None, b: int | None) -> int | None:
        return None if a is None and b is None else (a or 0) + (b or 0)

    return Usage(add(total.prompt_tokens, more.prompt_tokens),
                 add(total.completion_tokens, more.completion_tokens),
                 add(total.total_tokens, more.total_tokens))


def _as_int(value: object) -> int | None:
    """``value`` as an int when it is one (token counts), else ``None``."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _refuse_sdk_client(client: object) -> None:
    """``client`` is an ``httpx.Client`` now; an ``openai.OpenAI`` (the SDK's client,
    which ``client`` took before) fails here, clearly, rather than at the first reply."""
    if client is None:
        return
    import httpx

    if isinstance(client, httpx.Client):
        return
    if type(client).__module__.split(".")[0] == "openai":
        raise TypeError(
            "OpenAIBackend(client=...) takes an httpx.Client now: the backend reads the "
            "stream itself instead of through the openai SDK. Pass base_url=, api_key=, "
            "organization=, project=, default_headers= directly, and your http_client (if "
            "you had one) as client="
        )
    raise TypeError(f"OpenAIBackend(client=...) must be an httpx.Client, not "
                    f"{type(client).__name__}")
