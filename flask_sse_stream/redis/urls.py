"""``SSE_BROKER_URL`` for one Redis, a Redis Cluster or Sentinel: checked and parsed
once, at startup, into a :class:`BrokerURL` (see ``connection.py`` for the forms).

Options after ``?`` and the credentials are read by redis-py's own URL parser, from a
stand-in single-server URL, so they mean exactly what they mean in ``redis://``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote

from redis.connection import parse_url as _untyped_parse_url

__all__ = ["BrokerURL", "Kind", "parse_broker_url", "parse_url", "redact"]

parse_url: Any = _untyped_parse_url  # Any: redis-py leaves it untyped

Kind = Literal["single", "cluster", "sentinel"]
SCHEMES: dict[str, tuple[Kind, bool]] = {  # scheme -> (topology, TLS)
    "redis": ("single", False), "rediss": ("single", True), "unix": ("single", False),
    "redis+cluster": ("cluster", False), "rediss+cluster": ("cluster", True),
    "redis+sentinel": ("sentinel", False), "rediss+sentinel": ("sentinel", True),
}
DEFAULT_PORTS = {"cluster": 6379, "sentinel": 26379}
SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password", "sentinel_ssl")
BOOLEANS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def _fail(url: str, why: str) -> ValueError:
    return ValueError(f"SSE_BROKER_URL: {why} in {redact(url)!r}")


def redact(url: str) -> str:
    """``url`` without its password (for logs and error messages)."""
    scheme, sep, rest = url.partition("://")
    auth, at, hosts = rest.rpartition("@")
    if not sep or not at:
        return url
    user = auth.partition(":")[0]
    return f"{scheme}://{user}:***@{hosts}"


@dataclass(frozen=True)
class BrokerURL:
    """A parsed ``SSE_BROKER_URL``. ``hosts`` are the cluster's startup nodes or the
    sentinels (empty for one server, whose URL redis-py parses: ``url``)."""

    kind: Kind
    url: str
    tls: bool = False
    hosts: tuple[tuple[str, int], ...] = ()
    master_name: str | None = None
    db: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # username, password, redis-py's
    sentinel_options: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return redact(self.url)


def _split_hosts(url: str, netloc: str, default_port: int) -> tuple[tuple[str, int], ...]:
    hosts = []
    for part in netloc.split(","):
        part = part.strip()
        if part.startswith("["):  # [v6]:port
            host, _, rest = part[1:].partition("]")
            port_text = rest.removeprefix(":")
        else:
            host, _, port_text = part.rpartition(":") if ":" in part else (part, "", "")
        if not host:
            raise _fail(url, f"missing host in {part!r}")
        if port_text and not (port_text.isascii() and port_text.isdigit()
                              and 0 < int(port_text) < 65536):
            raise _fail(url, f"bad port in {part!r}")
        hosts.append((host, int(port_text) if port_text else default_port))
    return tuple(hosts)


def parse_broker_url(url: str) -> BrokerURL:
    """Check and parse ``url``; raises ``ValueError`` naming ``SSE_BROKER_URL``."""
    scheme, sep, rest = url.partition("://")
    found = SCHEMES.get(scheme.lower()) if sep else None
    if found is None:
        raise _fail(url, "unsupported scheme")
    kind, tls = found
    url = scheme.lower() + sep + rest
    if kind == "single":
        try:
            options = parse_url(url)  # checks the options the way redis-py reads them
        except ValueError as exc:
            raise _fail(url, str(exc)) from None
        return BrokerURL(kind, url, tls, db=int(options.get("db", 0) or 0))
    rest = rest.partition("#")[0]
    location, _, query = rest.partition("?")
    netloc, _, path = location.partition("/")
    auth, at, netloc = netloc.rpartition("@")
    if not netloc:
        raise _fail(url, "no host")
    hosts = _split_hosts(url, netloc, DEFAULT_PORTS[kind])
    # redis-py reads the options (and the user and password) from one stand-in URL
    stand_in = f"{'rediss' if tls else 'redis'}://{auth}{at}{hosts[0][0]}"
    try:
        options = parse_url(stand_in + (f"/?{query}" if query else ""))
    except ValueError as exc:
        raise _fail(url, str(exc)) from None
    for key in ("host", "port", "db", "path", "connection_class"):
        options.pop(key, None)
    if tls:
        options["ssl"] = True
    sentinel_options = {k.removeprefix("sentinel_"): options.pop(k)
                        for k in SENTINEL_OPTIONS if k in options}
    if kind == "cluster" and sentinel_options:
        raise _fail(url, "sentinel_* options on a cluster URL")
    if "ssl" in sentinel_options:
        flag = BOOLEANS.get(str(sentinel_options["ssl"]).lower())
        if flag is None:
            raise _fail(url, "sentinel_ssl must be true or false")
        sentinel_options["ssl"] = flag
    segments = [unquote(s) for s in path.split("/")] if path else []
    segments = [s for s in segments if s != ""] if kind == "cluster" else segments
    if kind == "cluster":
        if segments not in ([], ["0"]):
            raise _fail(url, "a cluster has only database 0; no path expected")
        return BrokerURL(kind, url, tls, hosts, options=options)
    if segments and segments[-1] == "":
        segments.pop()  # a trailing slash
    if not segments or not segments[0] or len(segments) > 2:
        raise _fail(url, "expected /MASTER_NAME[/DB] after the sentinels")
    db = 0
    if len(segments) == 2:
        if not (segments[1].isascii() and segments[1].isdigit()):
            raise _fail(url, f"bad database {segments[1]!r}")
        db = int(segments[1])
    return BrokerURL(kind, url, tls, hosts, segments[0], db, options, sentinel_options)
