"""The chat blueprint (this project's own protocol); kept as an import path.

The routes live in ``protocols/native.py``; what every protocol shares in ``service.py``.
"""

from __future__ import annotations

from .protocols.native import create_chat_blueprint
from .service import CHAT_DEFAULTS

__all__ = ["CHAT_DEFAULTS", "create_chat_blueprint"]
