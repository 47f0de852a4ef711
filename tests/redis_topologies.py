"""Real Redis topologies for the tests: a Redis Cluster and a Sentinel-watched primary.

Both are context managers (like ``tests.servers.redis_server``) that start throwaway
``redis-server`` processes on loopback (no persistence, each in its own temp dir), wait
until the topology is healthy, and SIGKILL every process on exit, even when the test
failed or a process was left stopped (SIGSTOP).

* :func:`redis_cluster` -> :class:`Cluster`: nodes with their ports and roles, the
  ``redis+cluster://`` URL, which primary owns a key, and :meth:`Cluster.kill_primary`
  (SIGKILL, then wait until its replica is promoted and every slot is served again).
* :func:`redis_sentinel` -> :class:`SentinelSetup`: the data nodes, the sentinels, the
  ``redis+sentinel://`` URL, the current primary, :meth:`SentinelSetup.failover`
  (``SENTINEL FAILOVER``), :meth:`SentinelSetup.kill_primary` and
  :meth:`SentinelSetup.lossy_failover` (a failover that really loses the newest writes).

Admin commands go through redis-py's plain single-node client (never the library's
code, which is what the tests check). Waiting for a topology to settle is polling: a
cluster's state has no event to await (a sentinel's ``+switch-master`` does, and is
awaited).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import redis

from tests.servers import free_port

T = TypeVar("T")
HOST = "127.0.0.1"
NODE_TIMEOUT_MS = 1000  # cluster-node-timeout: how soon a dead primary is failed over
DOWN_AFTER_MS = 1000  # sentinel down-after-milliseconds


def _exe(name: str = "redis-server") -> str:
    exe = shutil.which(name)
    if exe is None:
        raise RuntimeError(f"{name} is not installed (Debian: redis-server, redis-tools)")
    return exe


def wait_until(check: Callable[[], T], timeout: float, what: str,
               interval: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy (errors count as not yet)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except (redis.RedisError, OSError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout}s (last error: {last!r})")
        time.sleep(interval)  # polling server state: there is no event to await


@dataclass
class RedisNode:
    """One ``redis-server`` process (a data node or a sentinel)."""

    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path
    password: str | None = None
    _clients: list[redis.Redis] = field(default_factory=list, repr=False)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "redis.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def client(self, **kwargs: Any) -> redis.Redis:
        """A plain client of this node only (closed with the topology)."""
        options = {"socket_timeout": 5, "socket_connect_timeout": 2, "decode_responses": True,
                   "password": self.password, **kwargs}
        client = redis.Redis(host=HOST, port=self.port, **options)
        self._clients.append(client)
        return client

    def command(self, *args: Any) -> Any:
        """Run one command on this node (a fresh connection: safe after a failover)."""
        with redis.Redis(host=HOST, port=self.port, password=self.password, socket_timeout=5,
                         socket_connect_timeout=2, decode_responses=True) as client:
            return client.execute_command(*args)

    def role(self) -> str:
        """``"master"`` or ``"slave"`` as the node itself says."""
        return str(self.command("ROLE")[0])

    def kill(self) -> None:
        """SIGKILL (works on a stopped process too) and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.close_clients()

    def suspend(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def close_clients(self) -> None:
        for client in self._clients:
            with contextlib.suppress(Exception):
                client.close()
        self._clients.clear()


def start_node(args: list[str], *, port: int | None = None, sentinel: bool = False,
               config: str = "", password: str | None = None) -> RedisNode:
    """Start ``redis-server`` on loopback with no persistence (not yet waited for)."""
    port = port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="redis-topo-"))
    cmd = [_exe()]
    if config:  # a sentinel needs a config file it can rewrite
        path = workdir / "node.conf"
        path.write_text(config)
        cmd.append(str(path))
    if sentinel:
        cmd.append("--sentinel")
    cmd += ["--port", str(port), "--bind", HOST, "--dir", str(workdir),
            "--logfile", str(workdir / "redis.log")]
    if not sentinel:
        # no persistence; a replica's first sync starts at once (the default waits 5 s)
        cmd += ["--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0"]
    if password:
        cmd += ["--requirepass", password, "--masterauth", password]
    cmd += args
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    return RedisNode(proc, port, workdir, password)


def start_ready(args: list[str], *, password: str | None = None, attempts: int = 5,
                make_args: Callable[[], list[str]] | None = None) -> RedisNode:
    """Start a data node and wait until it answers; a port taken meanwhile by another
    process (between choosing it and binding it) means another try on new ports."""
    for attempt in range(attempts):
        node = start_node(make_args() if make_args else args, password=password)
        try:
            wait_ready(node)
            return node
        except RuntimeError as exc:
            node.kill()
            shutil.rmtree(node.workdir, ignore_errors=True)
            if "Address already in use" not in str(exc) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def wait_ready(node: RedisNode, timeout: float = 10.0) -> None:
    def ping() -> bool:
        if not node.alive():
            raise RuntimeError(f"redis on {node.port} exited: {node.log()[-2000:]}")
        return bool(node.command("PING"))

    wait_until(ping, timeout, f"redis on {node.port} answering", interval=0.02)


@contextmanager
def _reaped(nodes: list[RedisNode]) -> Iterator[None]:
    """SIGKILL every node in ``nodes`` (as it is at exit) and remove their dirs."""
    try:
        yield
    finally:
        for node in nodes:
            with contextlib.suppress(Exception):
                node.kill()
            shutil.rmtree(node.workdir, ignore_errors=True)


# -- Redis Cluster ------------------------------------------------------------------------


@dataclass
class ClusterNodeInfo:
    """One line of ``CLUSTER NODES`` as a live node sees it."""

    node_id: str
    port: int
    role: str  # "primary" or "replica"
    primary_id: str | None
    failed: bool
    slots: list[tuple[int, int]]


@dataclass
class Cluster:
    nodes: list[RedisNode]
    password: str | None = None

    def url(self, *, options: str = "") -> str:
        """``redis+cluster://`` naming every node (alive or not) as a startup node."""
        auth = f":{self.password}@" if self.password else ""
        hosts = ",".join(n.address for n in self.nodes)
        return f"redis+cluster://{auth}{hosts}" + (f"?{options}" if options else "")

    def live(self) -> list[RedisNode]:
        return [n for n in self.nodes if n.alive()]

    def node(self, port: int) -> RedisNode:
        return next(n for n in self.nodes if n.port == port)

    def topology(self, via: RedisNode | None = None) -> list[ClusterNodeInfo]:
        """``CLUSTER NODES`` as ``via`` (default: the first live node) sees it."""
        raw = (via or self.live()[0]).command("CLUSTER", "NODES")
        text = raw if isinstance(raw, str) else "\n".join(
            f"{k} {v}" for k, v in raw.items())  # redis-py may parse it into a dict
        infos = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) < 8:
                continue
            flags = parts[2].split(",")
            slots = []
            for spec in parts[8:]:
                if spec.startswith("["):
                    continue  # a slot being migrated
                lo, _, hi = spec.partition("-")
                slots.append((int(lo), int(hi or lo)))
            infos.append(ClusterNodeInfo(
                node_id=parts[0], port=int(parts[1].split("@")[0].rsplit(":", 1)[1]),
                role="primary" if "master" in flags else "replica",
                primary_id=None if parts[3] == "-" else parts[3],
                failed="fail" in flags or "fail?" in flags, slots=slots))
        return infos

    def primaries(self) -> list[RedisNode]:
        """The live nodes that serve slots now."""
        ports = {i.port for i in self.topology() if i.role == "primary" and i.slots
                 and not i.failed}
        return [n for n in self.live() if n.port in ports]

    def replicas(self) -> list[RedisNode]:
        ports = {i.port for i in self.topology() if i.role == "replica" and not i.failed}
        return [n for n in self.live() if n.port in ports]

    def replica_of(self, primary: RedisNode) -> RedisNode:
        infos = self.topology()
        primary_id = next(i.node_id for i in infos if i.port == primary.port)
        port = next(i.port for i in infos if i.primary_id == primary_id and not i.failed)
        return self.node(port)

    def keyslot(self, key: str) -> int:
        return int(self.live()[0].command("CLUSTER", "KEYSLOT", key))

    def owner_of_slot(self, slot: int) -> RedisNode:
        for info in self.topology():
            if info.role == "primary" and not info.failed and any(
                    lo <= slot <= hi for lo, hi in info.slots):
                return self.node(info.port)
        raise LookupError(f"slot {slot} is not served")

    def owner(self, key: str) -> RedisNode:
        """The primary that serves ``key`` now."""
        return self.owner_of_slot(self.keyslot(key))

    def names_per_primary(self, per_primary: int, pattern: str = "{}",
                          make_key: Callable[[str], str] = lambda name: name,
                          ) -> dict[int, list[str]]:
        """``per_primary`` names (``pattern.format(i)``) for each primary's port, chosen
        by where ``make_key(name)`` hashes."""
        wanted = {n.port: [] for n in self.primaries()}  # type: dict[int, list[str]]
        ranges = [(lo, hi, info.port) for info in self.topology()
                  if info.role == "primary" and not info.failed for lo, hi in info.slots]
        node = self.live()[0]
        i = 0
        while any(len(v) < per_primary for v in wanted.values()):
            batch = [pattern.format(i + j) for j in range(200)]
            i += 200
            slots = [int(node.command("CLUSTER", "KEYSLOT", make_key(name))) for name in batch]
            for name, slot in zip(batch, slots, strict=True):
                port = next(p for lo, hi, p in ranges if lo <= int(slot) <= hi)
                if len(wanted[port]) < per_primary:
                    wanted[port].append(name)
        return wanted

    def healthy(self) -> bool:
        """Every live node says ``cluster_state:ok`` with all 16384 slots served, and
        agrees with the others on who serves them."""
        views = []
        for node in self.live():
            info = node.command("CLUSTER", "INFO")
            if isinstance(info, str):
                info = dict(line.split(":", 1) for line in info.split() if ":" in line)
            if info.get("cluster_state") != "ok" or int(info.get("cluster_slots_ok", 0)) != 16384:
                return False
            owners = sorted((lo, i.port) for i in self.topology(node) if i.role == "primary"
                            and not i.failed for lo, _hi in i.slots)
            views.append(owners)
            live_ports = {n.port for n in self.live()}
            if any(port not in live_ports for _lo, port in owners):
                return False
        return all(v == views[0] for v in views)

    def wait_healthy(self, timeout: float = 20.0) -> None:
        wait_until(self.healthy, timeout, "cluster healthy")

    def kill_primary(self, primary: RedisNode | None = None, *, wait: bool = True,
                     timeout: float = 20.0) -> RedisNode:
        """SIGKILL ``primary`` (default: the first) and, with ``wait``, return its replica
        once promoted and the cluster serves every slot again."""
        primary = primary or self.primaries()[0]
        replica = self.replica_of(primary)
        primary.kill()
        if wait:
            self.wait_for_promotion(replica, timeout)
        return replica

    def wait_for_promotion(self, replica: RedisNode, timeout: float = 20.0) -> None:
        wait_until(lambda: replica.role() == "master", timeout,
                   f"replica {replica.port} promoted")
        self.wait_healthy(timeout)

    def client_list(self, node: RedisNode) -> list[dict[str, str]]:
        """``CLIENT LIST`` of ``node``, one dict per client (``addr``, ``name``, ``cmd``...)."""
        raw = node.command("CLIENT", "LIST")
        if isinstance(raw, list):
            return [dict(c) for c in raw]
        return [dict(p.split("=", 1) for p in line.split() if "=" in p)
                for line in str(raw).splitlines()]


@contextmanager
def redis_cluster(primaries: int = 3, replicas: int = 1, *,
                  password: str | None = None) -> Iterator[Cluster]:
    """A Redis Cluster of ``primaries`` x (1 + ``replicas``) nodes on loopback, healthy."""
    nodes: list[RedisNode] = []
    with _reaped(nodes):
        def cluster_args() -> list[str]:
            return ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                    "--cluster-port", str(free_port()),
                    # a replica may always take over (the tests kill primaries at will)
                    "--cluster-replica-validity-factor", "0"]

        for _ in range(primaries * (1 + replicas)):
            nodes.append(start_ready([], password=password, make_args=cluster_args))
        cmd = [_exe("redis-cli")]
        if password:
            cmd += ["-a", password, "--no-auth-warning"]
        cmd += ["--cluster", "create", *(n.address for n in nodes),
                "--cluster-replicas", str(replicas), "--cluster-yes"]
        done = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout!r} "
                               f"{done.stderr!r}")
        cluster = Cluster(nodes, password)
        cluster.wait_healthy(timeout=20)
        wait_until(lambda: len(cluster.replicas()) == primaries * replicas
                   and all(_link_up(n) for n in cluster.replicas()), 20,
                   "every replica attached")
        sync_keys = cluster.names_per_primary(1, "fixture:sync:{}")
        for primary in cluster.primaries():
            key = sync_keys[primary.port][0]
            wait_until(partial(_replicas_in_sync, primary, key, replicas), 20,
                       "every replica in sync")
        yield cluster


def _link_up(replica: RedisNode) -> bool:
    info = replica.command("INFO", "replication")
    return isinstance(info, dict) and info.get("master_link_status") == "up"


def _replicas_in_sync(primary: RedisNode, key: str, replicas: int) -> bool:
    """Write ``key`` on ``primary`` and ``WAIT`` until ``replicas`` replicas acknowledge
    it. (After a diskless full sync a replica reports its link up, and its primary lists
    it online, up to a second before the primary starts sending it writes: a failover
    in that second loses them.)"""
    client = primary.client()
    with client.pipeline(transaction=False) as pipe:
        pipe.set(key, "1")
        pipe.wait(replicas, 10_000)
        return int(pipe.execute()[1]) >= replicas


# -- Sentinel ------------------------------------------------------------------------------


@dataclass
class SentinelSetup:
    data_nodes: list[RedisNode]
    sentinels: list[RedisNode]
    master_name: str
    _all: list[RedisNode] = field(default_factory=list, repr=False)  # killed on exit

    def url(self, db: int = 0) -> str:
        hosts = ",".join(s.address for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.master_name}/{db}"

    def node(self, port: int) -> RedisNode:
        return next(n for n in self.data_nodes if n.port == port)

    def primary_port(self, sentinel: RedisNode | None = None) -> int:
        """The primary's port as ``sentinel`` (default: the first live one) says."""
        sentinel = sentinel or next(s for s in self.sentinels if s.alive())
        _host, port = sentinel.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
        return int(port)

    def primary(self) -> RedisNode:
        return self.node(self.primary_port())

    def replicas(self) -> list[RedisNode]:
        primary = self.primary_port()
        return [n for n in self.data_nodes if n.alive() and n.port != primary]

    def settled(self) -> bool:
        """Every sentinel names the same live primary, which says it is one, sees the
        others, and knows every live replica with its link up."""
        ports = {self.primary_port(s) for s in self.sentinels if s.alive()}
        if len(ports) != 1:
            return False
        primary = self.node(ports.pop())
        if not primary.alive() or primary.role() != "master":
            return False
        live_replicas = [n for n in self.data_nodes if n.alive() and n is not primary]
        for sentinel in self.sentinels:
            state = _pairs(sentinel.command("SENTINEL", "MASTER", self.master_name))
            if "o_down" in state["flags"] or "s_down" in state["flags"]:
                return False
            if int(state["num-other-sentinels"]) != len(self.sentinels) - 1:
                return False
            known = {int(_pairs(r)["port"]) for r in sentinel.command(
                "SENTINEL", "REPLICAS", self.master_name)
                if "s_down" not in _pairs(r)["flags"]
                and _pairs(r).get("master-link-status") == "ok"}
            if not {n.port for n in live_replicas} <= known:
                return False
        return all(replica.command("INFO", "replication").get("master_port") == primary.port
                   and _link_up(replica) for replica in live_replicas) and (
            _replicas_in_sync(primary, "fixture:sync", len(live_replicas)))

    def wait_settled(self, timeout: float = 20.0) -> None:
        wait_until(self.settled, timeout, "sentinel setup settled")

    @contextmanager
    def _switch_awaited(self, timeout: float) -> Iterator[None]:
        """Wait, after the block, for ``+switch-master`` on a sentinel's pub/sub."""
        sentinel = next(s for s in self.sentinels if s.alive())
        pubsub = sentinel.client().pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe("+switch-master")
        pubsub.get_message(timeout=1)
        try:
            yield
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                message = pubsub.get_message(timeout=max(0.1, deadline - time.monotonic()))
                if message and str(message["data"]).startswith(self.master_name + " "):
                    break
            else:
                raise TimeoutError(f"no +switch-master after {timeout}s")
        finally:
            pubsub.close()

    def failover(self, timeout: float = 20.0) -> RedisNode:
        """``SENTINEL FAILOVER`` (a coordinated one): the new primary, once settled."""
        old = self.primary()
        with self._switch_awaited(timeout):
            self.sentinels[0].command("SENTINEL", "FAILOVER", self.master_name)
        new = self.primary()
        assert new.port != old.port
        # what the sentinels would do after 4 hello periods (8 s): the old primary follows
        old.command("REPLICAOF", HOST, str(new.port))
        self.wait_settled(timeout)
        return new

    def kill_primary(self, timeout: float = 20.0, *, revive: bool = True) -> RedisNode:
        """SIGKILL the primary; the promoted replica once every sentinel names it. With
        ``revive`` the killed node comes back (empty) as a replica of the new one, so
        the next failover has a replica to promote."""
        old = self.primary()
        with self._switch_awaited(timeout):
            old.kill()
        new = self.primary()
        if revive:
            self.revive(old, new)
        self.wait_settled(timeout)
        return new

    def revive(self, dead: RedisNode, primary: RedisNode) -> RedisNode:
        """Start a dead data node again on its port, empty, as a replica of ``primary``."""
        node = start_node(["--replicaof", HOST, str(primary.port)], port=dead.port)
        self.data_nodes[self.data_nodes.index(dead)] = node
        self._all.append(node)
        wait_ready(node)
        return node

    def lossy_failover(self, write: Callable[[], T], timeout: float = 20.0
                       ) -> tuple[RedisNode, T]:
        """A failover that loses what ``write()`` wrote: the replicas are frozen
        (SIGSTOP) and cut off (``CLIENT KILL TYPE replica`` on the primary), ``write()``
        runs against the primary (its writes are acknowledged but reach no replica), the
        primary is SIGKILLed and the replicas thawed; one of them is promoted without
        those writes. Returns the new primary and what ``write()`` returned; check the
        loss on the new primary."""
        old = self.primary()
        replicas = self.replicas()
        for replica in replicas:
            replica.suspend()
        try:
            old.command("CLIENT", "KILL", "TYPE", "replica")
            result = write()
        finally:
            with self._switch_awaited(timeout):
                old.kill()
                for replica in replicas:
                    replica.resume()
        new = self.primary()
        self.revive(old, new)
        self.wait_settled(timeout)
        return new, result


def _pairs(value: Any) -> dict[str, Any]:
    """A sentinel reply (a flat list or a dict) as a dict of strings."""
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    return {str(value[i]): value[i + 1] for i in range(0, len(value), 2)}


def _sentinel_config(master_name: str, primary_port: int, quorum: int) -> str:
    return (
        f"sentinel monitor {master_name} {HOST} {primary_port} {quorum}\n"
        f"sentinel down-after-milliseconds {master_name} {DOWN_AFTER_MS}\n"
        f"sentinel failover-timeout {master_name} 10000\n"
        f"sentinel parallel-syncs {master_name} 1\n"
    )


@contextmanager
def redis_sentinel(replicas: int = 1, sentinels: int = 3,
                   master_name: str = "mymaster") -> Iterator[SentinelSetup]:
    """One primary, ``replicas`` replicas and ``sentinels`` sentinels (quorum: a
    majority) on loopback, settled (every sentinel sees the others and the replicas)."""
    nodes: list[RedisNode] = []
    with _reaped(nodes):
        primary = start_ready([])
        nodes.append(primary)
        data = [primary]
        for _ in range(replicas):
            replica = start_ready(["--replicaof", HOST, str(primary.port)])
            nodes.append(replica)
            data.append(replica)
        quorum = sentinels // 2 + 1
        sentinel_nodes = []
        for _ in range(sentinels):
            node = start_node([], sentinel=True,
                              config=_sentinel_config(master_name, primary.port, quorum))
            nodes.append(node)
            sentinel_nodes.append(node)
        for node in nodes:
            wait_ready(node)
        for node in sentinel_nodes:
            # test-only knobs (Redis >= 7.0): hello/INFO/ping faster, so sentinels find
            # each other and the replicas in well under a second instead of ~10 s
            with contextlib.suppress(redis.ResponseError):
                node.command("SENTINEL", "DEBUG", "publish-period", "100",
                             "info-period", "200", "ping-period", "100",
                             "ask-period", "200")
        setup = SentinelSetup(data, sentinel_nodes, master_name, nodes)
        setup.wait_settled(timeout=20)
        for node in sentinel_nodes:
            # back to the defaults: with fast hellos, a sentinel that is not the leader
            # demotes a just-promoted replica (it waits 4 hello periods for the news);
            # with fast pings, no replica's INFO is fresh enough (5 ping periods) to be
            # promoted once the primary is down (INFO then comes once a second)
            with contextlib.suppress(redis.ResponseError):
                node.command("SENTINEL", "DEBUG", "publish-period", "2000",
                             "ping-period", "1000")
        yield setup

