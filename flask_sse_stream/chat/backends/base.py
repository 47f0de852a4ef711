"""What every chat backend is: the :class:`ChatBackend` protocol and :class:`BackendError`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from ..parts import Finish, Part, Usage

__all__ = ["BackendError", "ChatBackend", "Message", "Piece"]

Message = dict[str, Any]
"""One OpenAI chat message: ``role`` (``system``, ``user``, ``assistant`` or ``tool``),
``content`` (a string); an assistant message may carry ``tool_calls``, a tool message
carries ``tool_call_id``."""

Piece = str | Part | Usage | Finish
"""What a backend's ``stream`` yields: text, a part, and at the end its usage and finish."""


@runtime_checkable
class ChatBackend(Protocol):
    """What the chat blueprints need from a backend.

    ``stream`` receives OpenAI chat messages (:data:`Message`, the last one normally from
    the user) and returns an iterator, normally a generator, of :data:`Piece`: ``str``
    pieces of text (their concatenation is the reply's text), parts
    (:class:`~flask_sse_stream.chat.parts.Reasoning`, ``ToolCall``, ``ToolResult``,
    ``Data``, ``Source``), and at the end a ``Usage`` and a ``Finish``. A backend that
    reads only ``role`` and ``content`` and yields only text is a backend too.

    A backend may also accept the keyword arguments ``tools`` (OpenAI function tools from
    the client's request) and ``tool_choice``; the runner passes them only when
    ``stream``'s signature has them.

    Failures are raised as :class:`BackendError`. The runner calls ``close()`` on the
    iterator (if it has one) to cancel a generation, or raises ``GreenletExit`` into the
    greenlet running it, so a generator must release its upstream resources in a
    ``finally:`` block and let ``GeneratorExit`` / ``GreenletExit`` pass (catch only
    ``Exception``).
    """

    def stream(self, messages: list[Message]) -> Iterator[Piece]:
        """Yield the reply to ``messages`` piece by piece, each as soon as it exists."""
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
