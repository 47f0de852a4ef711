"""A chat blueprint that streams a model's reply token by token over SSE."""

from .backends import BackendError, ChatBackend, DemoBackend, OpenAIBackend, Usage
from .blueprint import create_chat_blueprint

__all__ = [
    "BackendError",
    "ChatBackend",
    "DemoBackend",
    "OpenAIBackend",
    "Usage",
    "create_chat_blueprint",
]
