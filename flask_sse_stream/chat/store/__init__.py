"""Where generation logs live: in this process (``memory.py``) or on Redis Streams
(``redis.py``), so a reply resumes on any worker or host."""

from .base import Follow, FollowStatus, GenerationStore
from .memory import MemoryGenerationStore

__all__ = ["Follow", "FollowStatus", "GenerationStore", "MemoryGenerationStore"]
