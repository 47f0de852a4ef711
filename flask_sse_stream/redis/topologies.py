"""The Sentinel and Cluster topologies (see ``connection.py`` for the interface)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import SSLConnection
from redis.sentinel import Sentinel, SentinelConnectionPool

from .connection import Node, Topology
from .urls import BrokerURL

__all__ = ["ClusterTopology", "SentinelTopology"]

cluster_node: Any = ClusterNode  # Any: redis-py leaves it untyped


class _BlockingSentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """Sentinel's pool (finds the primary per connection), bounded and blocking like
    the single server's: a burst waits for a free connection instead of failing."""


class SentinelTopology(Topology):
    """The primary that the sentinels name; :meth:`refresh` asks them again."""

    def __init__(self, url: BrokerURL, **options: Any) -> None:
        super().__init__(url, **options)
        # makes no connection: each discovery asks the sentinels in turn
        self.sentinel = Sentinel(list(url.hosts), sentinel_kwargs=self._sentinel_kwargs(),
                                 **url.options)
        self._primary: Node | None = None

    def _command_client(self) -> Any:
        url = self.url
        return self.sentinel.master_for(
            url.master_name or "", connection_pool_class=_BlockingSentinelPool,
            db=url.db, max_connections=self.max_connections, timeout=self.timeout,
            socket_connect_timeout=self.connect_timeout, socket_timeout=self.timeout,
            health_check_interval=30)

    def _sentinel_kwargs(self) -> dict[str, Any]:
        """How to reach the sentinels: their own credentials (``sentinel_username``,
        ``sentinel_password``), TLS like the data nodes unless ``sentinel_ssl`` says."""
        url = self.url
        options = dict(url.sentinel_options)
        kwargs: dict[str, Any] = {"socket_connect_timeout": self.connect_timeout,
                                  "socket_timeout": self.timeout}
        for name in ("username", "password"):
            if name in options:
                kwargs[name] = options[name]
        if options.get("ssl", url.tls):
            kwargs["ssl"] = True
            kwargs.update({k: v for k, v in url.options.items() if k.startswith("ssl_")})
        return kwargs

    def nodes(self) -> list[Node]:
        if self._primary is None:
            self._reload()
        assert self._primary is not None
        return [self._primary]

    def node_of(self, key: str) -> Node:
        return self.nodes()[0]

    def _reload(self) -> None:
        host, port = self.sentinel.discover_master(self.url.master_name or "")
        self._primary = Node(str(host), int(port))

    def node_commands(self, node: Node) -> Any:
        # the pool connects wherever the sentinels point: only ask if that is `node`
        return self.commands if self._primary == node else None

    def _node_client(self, node: Node, **options: Any) -> Any:
        kwargs = {**self.url.options, **options}
        if kwargs.pop("ssl", False):
            kwargs["connection_class"] = SSLConnection
        return redis.Redis(host=node.host, port=node.port, db=self.url.db, **kwargs)

    def close(self) -> None:
        super().close()
        self.sentinel.close()


class ClusterTopology(Topology):
    """redis-py's cluster client routes the commands; its slot map groups the keys."""

    def _command_client(self) -> Any:
        url = self.url
        return RedisCluster(
            startup_nodes=[cluster_node(host, port) for host, port in url.hosts],
            connection_pool_class=redis.BlockingConnectionPool,
            max_connections=self.max_connections, timeout=self.timeout,
            socket_connect_timeout=self.connect_timeout, socket_timeout=self.timeout,
            **url.options)

    def nodes(self) -> list[Node]:
        return sorted({Node(n.host, int(n.port)) for n in self.commands.get_primaries()},
                      key=lambda n: n.name)

    def node_of(self, key: str) -> Node:
        owner = self.commands.get_node_from_key(key)
        return Node(owner.host, int(owner.port))

    def xread_batches(self, keys: Iterable[str]) -> list[list[str]]:
        slots: dict[int, list[str]] = {}
        for key in keys:
            slots.setdefault(self.commands.keyslot(key), []).append(key)
        return list(slots.values())

    def _moved(self, before: list[Node]) -> bool:
        return True  # slots may have moved between the same primaries: regroup

    def node_commands(self, node: Node) -> Any:
        owner = self.commands.get_node(host=node.host, port=node.port)
        if owner is None or owner not in self.commands.get_primaries():
            return None
        return self.commands.get_redis_connection(owner)

    def _reload(self) -> None:
        # the cluster client's own refresh: CLUSTER SLOTS from a reachable node
        self.commands.nodes_manager.initialize()

    def _node_client(self, node: Node, **options: Any) -> Any:
        kwargs = {**self.url.options, **options}
        if kwargs.pop("ssl", False):
            kwargs["connection_class"] = SSLConnection
        return redis.Redis(host=node.host, port=node.port, **kwargs)

    def sweep_idle(self) -> None:
        if self._commands is None:
            return
        for node in self._commands.get_nodes():
            client = node.redis_connection
            if client is not None:
                client.connection_pool.disconnect(inuse_connections=False)
