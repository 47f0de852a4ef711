"""What a store of generation logs does: create, append, finish, follow, aliases."""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...runtime import Sink
from ..parts import Part

__all__ = ["Follow", "FollowStatus", "GenerationStore"]


class FollowStatus(enum.Enum):
    LIVE = "live"  # prelude, then live entries until the close event
    FINISHED = "finished"  # the client already has the close event
    UNKNOWN = "unknown"  # never existed here, or expired


def _nothing() -> None:
    return None


@dataclass
class Follow:
    """A follower's start: its status, the entries it must get first (``prelude``,
    encoded), and how to stop following."""

    status: FollowStatus
    prelude: bytes = b""
    stop: Callable[[], None] = field(default=_nothing)


class GenerationStore(ABC):
    """Per-generation logs with fan-out to followers."""

    @abstractmethod
    def create(self, stream_id: str, owner: str | None = None) -> None:
        """Start an empty log (run by this process) for the user ``owner``."""

    @abstractmethod
    def owner_of(self, stream_id: str) -> str | None:
        """The user a generation belongs to (None: no user, or unknown)."""

    @abstractmethod
    def append(self, stream_id: str, item: str | Part) -> int:
        """Add an entry (text or a part), hand it to the followers; returns its seq."""

    @abstractmethod
    def finish(self, stream_id: str, close: dict[str, Any]) -> int:
        """Append the ``close`` entry (returns its seq); followers' streams end after it."""

    @abstractmethod
    def follow(self, stream_id: str, after: int, sink: Sink) -> Follow:
        """Entries after ``after`` as a prelude, then live ones into ``sink``."""

    def exists(self, stream_id: str) -> bool:
        """Whether a log is known (anywhere the store reaches)."""
        return False

    def request_cancel(self, stream_id: str) -> bool:
        """Ask the process running ``stream_id`` to cancel it (it is not running here);
        False if the generation is unknown."""
        return False

    def has_remote_followers(self, stream_id: str) -> bool:
        """Whether clients on other processes follow ``stream_id``."""
        return False

    def on_remote_cancel(self, callback: Callable[[str], object]) -> None:
        """Register what to call when another process asks to cancel a generation."""
        return None

    @abstractmethod
    def set_alias(self, name: str, stream_id: str) -> None:
        """Point ``name`` (e.g. an AI SDK chat id) at a running generation."""

    @abstractmethod
    def clear_alias(self, name: str, stream_id: str) -> None:
        """Clear ``name`` if it still points at ``stream_id``, atomically: a reply that
        ends never clears the alias of the reply that replaced it."""

    @abstractmethod
    def alias(self, name: str) -> str | None:
        """The generation ``name`` points at (None: none, or it was cleared)."""

    def close(self) -> None:
        return None
