"""The id of an event on a stream of several channels: every channel's position.

Events of different channels have no common order (on Redis they come from different
streams, published from different hosts), so a single event id cannot say where a client
is in all of them. Instead every event of a multi-channel stream carries a *cursor*: the
position of each channel of the stream, the event's own channel first::

    id: prices@1718000000123-0,news@1718000000042-3

The client tells an event's channel from the part before the first ``@`` and sends the
whole id back as ``Last-Event-ID``; every channel then resumes exactly after its own
position. Channel names cannot contain ``@`` or ``,``, and broker ids cannot contain ``,``.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["format_cursor", "parse_cursor"]


def parse_cursor(value: str | None, channels: Iterable[str]) -> dict[str, str | None]:
    """Each channel's position from a client's ``Last-Event-ID``.

    A cursor gives the positions it names (other channels: None, i.e. live from now,
    as for a channel added to the stream later). A plain id (from a single-channel
    stream), or a value naming none of the channels (junk, or another stream's cursor),
    is handed to every channel: each checks it and answers with a reset if it does not
    know it, so the client is told rather than silently taken live from now."""
    names = list(channels)
    if value is None:
        return dict.fromkeys(names)
    if "@" not in value:
        return dict.fromkeys(names, value)
    positions: dict[str, str | None] = dict.fromkeys(names)
    for part in value.split(","):
        name, sep, position = part.partition("@")
        if sep and position and name in positions and positions[name] is None:
            positions[name] = position
    if all(position is None for position in positions.values()):
        return dict.fromkeys(names, value)
    return positions


def format_cursor(first: str, positions: dict[str, str]) -> str:
    """The id of an event of channel ``first``: its position first, then the others'."""
    parts = [f"{first}@{positions[first]}"]
    parts += [f"{name}@{pos}" for name, pos in positions.items() if name != first]
    return ",".join(parts)
