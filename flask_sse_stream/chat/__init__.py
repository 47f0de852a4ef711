"""Chat blueprints that stream a model's reply token by token: this project's own SSE
protocol, the Vercel AI SDK's UI message stream and OpenAI Chat Completions, all over
one resumable, cancellable generation log."""

from .backends import BackendError, ChatBackend, DemoBackend, OpenAIBackend, Tool
from .parts import Data, Finish, Reasoning, Source, ToolCall, ToolResult, Usage
from .protocols.ai_sdk import create_ai_sdk_blueprint
from .protocols.native import create_chat_blueprint
from .protocols.openai import create_openai_blueprint
from .runner import FinishedReply

__all__ = [
    "BackendError",
    "ChatBackend",
    "Data",
    "DemoBackend",
    "Finish",
    "FinishedReply",
    "OpenAIBackend",
    "Reasoning",
    "Source",
    "Tool",
    "ToolCall",
    "ToolResult",
    "Usage",
    "create_ai_sdk_blueprint",
    "create_chat_blueprint",
    "create_openai_blueprint",
]
