"""Chat backends: where a streamed chat reply comes from.

A backend is any object with a ``stream(messages)`` method that yields the reply piece by
piece (see :class:`ChatBackend`): text, and parts (reasoning, tool calls and results, data,
sources). The runner turns every piece into one entry of the generation log as soon as it
is yielded, so a backend must yield as soon as it has something, never buffer the reply.

Two backends ship with the package:

* :class:`DemoBackend` needs no network and no API key. It streams a deterministic,
  prompt-dependent reply word by word (and, with ``parts=True``, reasoning, a tool call,
  a source and data), so the example app and the tests run anywhere.
* :class:`OpenAIBackend` talks to any OpenAI-compatible ``/v1/chat/completions`` server
  (OpenAI, vLLM, llama.cpp, Ollama, ...) over ``httpx`` (the optional extra
  ``flask-sse-stream[openai]``), with server-side tools from plain typed functions
  (:class:`Tool`).

Cancellation contract: closing the generator returned by ``stream()`` (``gen.close()``,
which the runner does when a generation is stopped, or a ``GreenletExit`` raised into the
greenlet running it) must release the upstream request at once; tokens cost money.
Upstream failures are raised as :class:`BackendError`, whose message is safe to show to
the browser.
"""

from ..parts import Finish, Usage
from .base import BackendError, ChatBackend, Message, Piece
from .demo import DemoBackend
from .openai import OpenAIBackend
from .tools import Tool

__all__ = [
    "BackendError",
    "ChatBackend",
    "DemoBackend",
    "Finish",
    "Message",
    "OpenAIBackend",
    "Piece",
    "Tool",
    "Usage",
]
