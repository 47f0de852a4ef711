"""Redis stream entry ids (``<ms>-<seq>``) as comparable positions, and Redis replies as
text."""

from __future__ import annotations

from typing import Any

from ..wire.numbers import ascii_int

__all__ = ["ZERO", "Position", "parse_id", "text"]

Position = tuple[int, int]
ZERO: Position = (0, 0)


def parse_id(entry_id: str) -> Position | None:
    """A stream entry id as a comparable pair, or None if it is not one."""
    ms, _, seq = entry_id.partition("-")
    ms_value, seq_value = ascii_int(ms, 19), ascii_int(seq, 19)
    if ms_value is None or seq_value is None:
        return None
    return ms_value, seq_value


def text(value: Any) -> str:
    """A Redis reply (bytes) as str."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
