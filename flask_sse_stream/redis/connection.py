"""Redis clients from ``SSE_BROKER_URL``: the one place that knows the Redis topology.

Three topologies, one interface (:class:`Topology`), so the log and the reader never ask
which one they talk to:

* ``redis://``, ``rediss://`` (TLS), ``unix://``: one server (redis-py parses the URL).
* ``redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...][?OPTIONS]`` (``rediss+cluster``
  for TLS): redis-py's ``RedisCluster`` with those startup nodes. It routes every keyed
  command, follows ``MOVED`` / ``ASK`` and refreshes its slot map after a failover.
* ``redis+sentinel://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB][?OPTIONS]``
  (``rediss+sentinel`` for TLS to the data nodes): redis-py's ``Sentinel(...).master_for``;
  every new connection asks the sentinels for the current primary, so a failover is
  followed without restarting the app. The password is the data nodes'; the sentinels'
  own are the options ``sentinel_username`` / ``sentinel_password``.

``OPTIONS`` are redis-py's URL options (``ssl_cert_reqs``, ``ssl_ca_certs``,
``client_name``...), parsed by redis-py itself.

**Commands** (:attr:`Topology.commands`) share a bounded, blocking pool (per node in a
cluster). **Reading** is grouped by where keys live: :meth:`Topology.group` maps keys to
the primary (:class:`Node`) that owns them now (one group for a single server or
Sentinel), :meth:`Topology.read_connection` opens a dedicated connection to that node
(no hidden retries; the caller backs off) whose client id :meth:`Topology.unblock`
uses with ``CLIENT UNBLOCK`` *on that node*. In a cluster one ``XREAD`` can only name
keys of one hash slot (``CROSSSLOT`` otherwise, even on the same node):
:meth:`Topology.xread_batches` splits a node's keys accordingly. After an error that
means the topology moved (:func:`topology_changed`), :meth:`Topology.refresh` reloads
it; :attr:`Topology.version` then changes and the caller regroups.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.connection import UnixDomainSocketConnection
from redis.retry import Retry

from .errors import ERRORS
from .urls import BrokerURL, Kind, parse_broker_url, parse_url, redact

__all__ = [
    "ERRORS",
    "BrokerURL",
    "Node",
    "ReadConnection",
    "Topology",
    "open_topology",
    "parse_broker_url",
    "redact",
    "topology_changed",
]

# replies that say the key's owner changed: follow it instead of retrying the old node
TOPOLOGY_REPLIES = ("MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN", "READONLY", "UNBLOCKED",
                    "MASTERDOWN", "LOADING")


@dataclass(frozen=True)
class Node:
    """A primary, where a group of keys lives now (``port`` 0 with a unix ``path``)."""

    host: str
    port: int
    path: str | None = None

    @property
    def name(self) -> str:
        return self.path or f"{self.host}:{self.port}"


class ReadConnection:
    """A dedicated connection to one node for blocking reads (``XREAD BLOCK``) or one
    pub/sub listener: ``client`` is a redis-py client on one connection, without
    retries; ``client_id`` its id on ``node`` (for ``CLIENT UNBLOCK`` there)."""

    def __init__(self, node: Node, client: Any) -> None:
        self.node = node
        self.client = client
        self.client_id: int = int(client.client_id())

    def close(self) -> None:
        with contextlib.suppress(*ERRORS):
            self.client.close()


_NOT_MOVED = (redis.AuthenticationError, redis.exceptions.MaxConnectionsError,
              redis.exceptions.MaxClientsReachedError)
_MOVED = (redis.exceptions.AskError,  # and MovedError
          redis.exceptions.ClusterDownError,  # and MasterDownError
          redis.exceptions.TryAgainError, redis.ReadOnlyError,
          redis.exceptions.SlotNotCoveredError, redis.exceptions.RedisClusterUnreachableError)


def topology_changed(exc: BaseException) -> bool:
    """Whether ``exc`` means a key's owner moved or is being replaced (a redirect, a
    cluster or primary that is down, a demoted primary, a lost connection), so the
    caller should :meth:`Topology.refresh` and regroup rather than retry the same node.
    Not for a refused password, a full pool or a server at ``maxclients``."""
    if isinstance(exc, _NOT_MOVED):
        return False
    if isinstance(exc, _MOVED):
        return True
    if isinstance(exc, redis.ResponseError):
        return str(exc).startswith(TOPOLOGY_REPLIES)
    return isinstance(exc, (redis.ConnectionError, redis.TimeoutError, OSError))


class Topology:
    """Clients for one ``SSE_BROKER_URL`` (see the module docstring)."""

    def __init__(self, url: BrokerURL, *, connect_timeout: float, timeout: float,
                 max_connections: int) -> None:
        self.url = url
        self.kind: Kind = url.kind
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.max_connections = max_connections
        self.version = 0
        self._lock = threading.Lock()  # one refresh at a time
        self._make_lock = threading.Lock()
        self._commands: Any = None

    @property
    def commands(self) -> Any:
        """The command client (made at first use: a cluster client reads the slot map
        when made, and the app must start while Redis is down). Raises redis errors."""
        if self._commands is None:
            with self._make_lock:
                if self._commands is None:
                    self._commands = self._command_client()
        return self._commands

    # -- what the subclasses define ---------------------------------------------------

    def _command_client(self) -> Any:
        raise NotImplementedError

    def nodes(self) -> list[Node]:
        """The primaries that hold keys now."""
        raise NotImplementedError

    def node_of(self, key: str) -> Node:
        """The primary that owns ``key`` now."""
        raise NotImplementedError

    def _node_client(self, node: Node, **options: Any) -> Any:
        """A plain client of ``node`` with the URL's credentials and TLS."""
        raise NotImplementedError

    def _reload(self) -> None:
        """Reload the topology (slot map, or which node is the primary)."""

    # -- the shared interface ------------------------------------------------------------

    def group(self, keys: Iterable[str]) -> dict[Node, list[str]]:
        """``keys`` by the primary that owns them now."""
        groups: dict[Node, list[str]] = {}
        for key in keys:
            groups.setdefault(self.node_of(key), []).append(key)
        return groups

    def xread_batches(self, keys: Iterable[str]) -> list[list[str]]:
        """``keys`` (of one node) split into the sets one ``XREAD`` may name together:
        all of them on one server, one hash slot each in a cluster."""
        return [list(keys)]

    def read_connection(self, node: Node, *, read_timeout: float) -> ReadConnection:
        """A new dedicated connection to ``node`` (``read_timeout``: the socket timeout,
        longer than any ``BLOCK``). Its client's pool holds that one connection: used by
        one caller at a time, its pipelines run on it too (a single-connection client's
        would open another). Raises redis errors."""
        client = self._node_client(
            node, max_connections=1, socket_keepalive=True,
            socket_connect_timeout=self.connect_timeout, socket_timeout=read_timeout,
            retry=Retry(NoBackoff(), 0))
        try:
            return ReadConnection(node, client)
        except BaseException:
            client.close()
            raise

    def unblock(self, connection: ReadConnection) -> bool:
        """``CLIENT UNBLOCK`` the connection's blocked command, on its own node (client
        ids are per server: another node's client with that id must not be woken).
        False if it was not blocked (yet) or its node is no primary any more (its read
        then fails on its own). Raises redis errors."""
        admin = self.node_commands(connection.node)
        return admin is not None and bool(admin.client_unblock(connection.client_id))

    def node_commands(self, node: Node) -> Any:
        """A pooled client whose commands run on ``node`` itself (``CLIENT UNBLOCK``,
        ``WAIT``, ``TIME``), or None if ``node`` is no primary now."""
        return self.commands

    def node_pubsub(self, node: Node, **options: Any) -> Any:
        """A redis-py ``PubSub`` on a dedicated connection to ``node`` (no read timeout,
        no retries): e.g. a node's ``SSUBSCRIBE`` doorbells in a cluster. ``options``
        go to ``pubsub()``. Connects at its first command."""
        client = self._node_client(
            node, socket_keepalive=True, socket_connect_timeout=self.connect_timeout,
            retry=Retry(NoBackoff(), 0), max_connections=1)
        return client.pubsub(**options)

    def pubsub_client(self) -> Any:
        """A client whose ``pubsub()`` holds one long subscription (no read timeout)."""
        return self.commands

    def refresh(self) -> bool:
        """Reload the topology after :func:`topology_changed` said so; True (and a new
        :attr:`version`) if a key may now live elsewhere. Raises redis errors."""
        with self._lock:
            before = self.nodes()
            self._reload()
            changed = self._moved(before)
            if changed:
                self.version += 1
            return changed

    def _moved(self, before: list[Node]) -> bool:
        return self.nodes() != before

    def sweep_idle(self) -> None:
        """Close the free command connections (they reconnect on use)."""
        if self._commands is not None:
            self._commands.connection_pool.disconnect(inuse_connections=False)

    def close(self) -> None:
        if self._commands is not None:
            self._commands.close()


class SingleTopology(Topology):
    def _command_client(self) -> Any:
        pool = redis.BlockingConnectionPool.from_url(
            self.url.url, max_connections=self.max_connections, timeout=self.timeout,
            socket_connect_timeout=self.connect_timeout, socket_timeout=self.timeout,
            health_check_interval=30)
        return redis.Redis(connection_pool=pool)

    def nodes(self) -> list[Node]:
        options = parse_url(self.url.url)
        if options.get("connection_class") is UnixDomainSocketConnection:
            return [Node("", 0, str(options.get("path", "")))]
        return [Node(str(options.get("host", "localhost")), int(options.get("port", 6379)))]

    def node_of(self, key: str) -> Node:
        return self.nodes()[0]

    def _node_client(self, node: Node, **options: Any) -> Any:
        return redis.Redis.from_url(self.url.url, **options)


def open_topology(url: str | BrokerURL, *, connect_timeout: float = 2.0,
                  timeout: float = 5.0, max_connections: int = 32) -> Topology:
    """The clients for ``url`` (``max_connections`` command connections per node).
    Raises ``ValueError`` for a bad URL; connects lazily (a cluster reads its slot map
    at once, and raises a redis error if no startup node answers)."""
    from .topologies import ClusterTopology, SentinelTopology  # (they build on this module)

    parsed = url if isinstance(url, BrokerURL) else parse_broker_url(url)
    kinds: dict[Kind, type[Topology]] = {
        "single": SingleTopology, "sentinel": SentinelTopology, "cluster": ClusterTopology}
    return kinds[parsed.kind](parsed, connect_timeout=connect_timeout, timeout=timeout,
                              max_connections=max_connections)
