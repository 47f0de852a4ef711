"""The Redis connection layer against real topologies (redis-server processes on
loopback): where keys live, dedicated read connections and waking them, and following
a failover, for one server, a Redis Cluster and Sentinel."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis

from flask_sse_stream.redis.connection import (
    ERRORS,
    Node,
    ReadConnection,
    open_topology,
    topology_changed,
)
from tests.redis_topologies import Cluster, SentinelSetup, redis_cluster, redis_sentinel
from tests.servers import redis_server

pytestmark = pytest.mark.slow

FOREVER_MS = 60_000  # a BLOCK that only a wake-up (or the test's timeout) ends


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with redis_cluster(primaries=3, replicas=1) as c:
        yield c


def blocked_read(conn: ReadConnection, streams: dict[str, str],
                 ) -> tuple[threading.Thread, dict[str, object]]:
    """XREAD BLOCK in a thread; returns (thread, result box)."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["result"] = conn.client.xread(streams, block=FOREVER_MS)
        except BaseException as exc:  # handed to the test
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def unblock_until_woken(topology, conn, thread) -> None:
    """CLIENT UNBLOCK until the blocked read returns (it may not have reached the
    server yet when the first one is sent)."""
    for _ in range(500):
        topology.unblock(conn)
        thread.join(0.01)
        if not thread.is_alive():
            return
    raise AssertionError("the blocked read was never woken")


def test_cluster_groups_keys_by_the_primary_that_owns_them(cluster: Cluster) -> None:
    topology = open_topology(cluster.url())
    try:
        keys = [f"sse:ch{i}" for i in range(60)]
        groups = topology.group(keys)
        assert len(groups) == 3  # 60 keys land on every primary
        assert {n.port for n in topology.nodes()} == {n.port for n in cluster.primaries()}
        for node, owned in groups.items():
            for key in owned:
                assert cluster.owner(key).port == node.port
        # one XREAD may only name keys of one slot, even on one node
        for owned in groups.values():
            batches = topology.xread_batches(owned)
            assert sorted(k for b in batches for k in b) == sorted(owned)
            assert all(len({cluster.keyslot(k) for k in b}) == 1 for b in batches)
    finally:
        topology.close()


def test_cluster_rejects_one_xread_over_keys_of_two_slots_on_one_node(cluster: Cluster) -> None:
    """Why the reader cannot read all of a node's keys with one XREAD: CROSSSLOT."""
    topology = open_topology(cluster.url())
    try:
        node, owned = next(iter(topology.group(f"k{i}" for i in range(30)).items()))
        a, b = next((x, y) for x in owned for y in owned
                    if cluster.keyslot(x) != cluster.keyslot(y))
        conn = topology.read_connection(node, read_timeout=5)
        try:
            with pytest.raises(redis.ResponseError, match="same slot"):
                conn.client.xread({a: "0-0", b: "0-0"})
        finally:
            conn.close()
    finally:
        topology.close()


def test_cluster_read_connection_blocks_on_its_node_and_is_woken_there(cluster: Cluster) -> None:
    topology = open_topology(cluster.url())
    try:
        groups = topology.group(f"wake{i}" for i in range(30))
        node, owned = next(iter(groups.items()))
        key = owned[0]
        conn = topology.read_connection(node, read_timeout=FOREVER_MS / 1000 + 5)
        try:
            ids = [cid for cid in (c.get("id") for c in cluster.client_list(
                cluster.node(node.port))) if cid is not None]
            assert str(conn.client_id) in ids  # the id is the one on that node
            thread, box = blocked_read(conn, {key: "$"})
            unblock_until_woken(topology, conn, thread)
            assert box == {"result": []}  # woken with no entries, not an error
            entry_id = topology.commands.xadd(key, {"d": "x"})
            assert conn.client.xread({key: "0-0"}) == [[key.encode(), [(entry_id, {b"d": b"x"})]]]
        finally:
            conn.close()
    finally:
        topology.close()


def test_cluster_doorbells_one_connection_per_primary(cluster: Cluster) -> None:
    """A node's pub/sub connection takes shard channels of many slots (one SSUBSCRIBE
    each); XADD + SPUBLISH of a key go to its node in one pipeline round trip."""
    topology = open_topology(cluster.url())
    listeners = {}
    try:
        keys = [f"bell{i}" for i in range(30)]
        groups = topology.group(keys)
        for node, owned in groups.items():
            pubsub = topology.node_pubsub(node)
            for key in owned:
                pubsub.ssubscribe(key)
            listeners[node] = pubsub
        with topology.commands.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.xadd(key, {"d": key})
                pipe.spublish(key, "1")
            results = pipe.execute()
        assert all(results[1::2])  # every doorbell reached one subscriber
        for node, pubsub in listeners.items():
            rung: set[str] = set()
            deadline = time.monotonic() + 10
            while len(rung) < len(groups[node]) and time.monotonic() < deadline:
                # None: a subscribe confirmation (ignored) or nothing within the timeout
                message = pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None:
                    rung.add(message["channel"].decode())
            assert rung == set(groups[node])
    finally:
        for pubsub in listeners.values():
            pubsub.close()
        topology.close()


def test_cluster_failover_is_seen_by_the_read_connection_and_regrouped(cluster: Cluster) -> None:
    topology = open_topology(cluster.url())
    try:
        keys = [f"fo{i}" for i in range(40)]
        groups = topology.group(keys)
        victim = cluster.primaries()[0]
        node = Node("127.0.0.1", victim.port)
        moved = groups[node]
        conn = topology.read_connection(node, read_timeout=FOREVER_MS / 1000 + 5)
        thread, box = blocked_read(conn, {topology.xread_batches(moved)[0][0]: "$"})
        version = topology.version
        replica = cluster.kill_primary(victim)
        thread.join(30)
        error = box.get("error")
        assert isinstance(error, ERRORS) and topology_changed(error), box
        conn.close()
        assert topology.refresh() and topology.version == version + 1
        regrouped = topology.group(keys)
        assert node not in regrouped
        assert sorted(regrouped[Node("127.0.0.1", replica.port)]) == sorted(moved)
        for key in moved:  # commands go to the new owner
            assert topology.commands.xadd(key, {"d": "after"})
    finally:
        topology.close()


def test_cluster_with_a_password(cluster: Cluster) -> None:
    with redis_cluster(primaries=3, replicas=0, password="s3cr%t") as secured:
        url = secured.url().replace("s3cr%t", "s3cr%25t")  # percent-encoded in the URL
        topology = open_topology(url)
        try:
            assert topology.commands.set("k", "v")
            node = topology.node_of("k")
            conn = topology.read_connection(node, read_timeout=5)
            assert conn.client.get("k") == b"v"
            conn.close()
        finally:
            topology.close()
        # made lazily: the app starts while the cluster is unreachable or refuses it
        bad = open_topology(secured.url().replace("s3cr%t", "wrong"), connect_timeout=1)
        with pytest.raises(ERRORS, match="invalid username-password"):
            bad.commands.get("k")
        bad.close()


@pytest.fixture(scope="module")
def sentinel() -> Iterator[SentinelSetup]:
    with redis_sentinel(replicas=1, sentinels=3) as s:
        yield s


def test_sentinel_names_the_primary_and_follows_a_failover(sentinel: SentinelSetup) -> None:
    topology = open_topology(sentinel.url(db=1), timeout=3)
    try:
        first = sentinel.primary()
        assert topology.nodes() == [Node("127.0.0.1", first.port)]
        assert topology.group(["a", "b"]) == {Node("127.0.0.1", first.port): ["a", "b"]}
        before = topology.commands.xadd("s", {"n": "1"})
        conn = topology.read_connection(topology.nodes()[0], read_timeout=FOREVER_MS / 1000 + 5)
        thread, box = blocked_read(conn, {"s": "$"})
        new = sentinel.failover()
        thread.join(30)
        # a demoted primary unblocks its blocked clients ("UNBLOCKED ... master -> replica")
        error = box.get("error")
        assert isinstance(error, BaseException) and topology_changed(error), box
        conn.close()
        assert topology.refresh()
        assert topology.nodes() == [Node("127.0.0.1", new.port)]
        after = None
        for _ in range(50):  # the pool's connections to the old primary fail once each
            try:
                after = topology.commands.xadd("s", {"n": "2"})
                break
            except ERRORS as exc:
                assert topology_changed(exc)
        assert after is not None
        entries = new.client(decode_responses=False, db=1).xrange("s") or []
        assert [e[0] for e in entries] == [before, after]
    finally:
        topology.close()


def test_sentinel_read_connection_is_woken_on_the_primary(sentinel: SentinelSetup) -> None:
    topology = open_topology(sentinel.url())
    try:
        conn = topology.read_connection(topology.nodes()[0], read_timeout=FOREVER_MS / 1000 + 5)
        thread, box = blocked_read(conn, {"wake": "$", "other": "$"})
        unblock_until_woken(topology, conn, thread)
        assert box == {"result": []}
        conn.close()
    finally:
        topology.close()


def test_single_server_read_connection_and_wake() -> None:
    with redis_server() as server:
        topology = open_topology(f"redis://127.0.0.1:{server.port}/2")
        try:
            assert topology.nodes() == [Node("127.0.0.1", server.port)]
            assert topology.xread_batches(["a", "b"]) == [["a", "b"]]
            conn = topology.read_connection(topology.nodes()[0], read_timeout=65)
            thread, box = blocked_read(conn, {"a": "$", "b": "$"})
            unblock_until_woken(topology, conn, thread)
            assert box == {"result": []}
            topology.commands.xadd("a", {"d": "1"})
            assert conn.client.xread({"a": "0-0", "b": "0-0"})[0][0] == b"a"
            conn.close()
            assert not topology.refresh()  # one server never moves
        finally:
            topology.close()
