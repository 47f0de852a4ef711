"""``SSE_BROKER_URL`` for one Redis, a Redis Cluster and Sentinel: what each URL means,
and a clear startup error (naming the setting, never the password) for a bad one."""

from __future__ import annotations

import pytest

from flask_sse_stream.redis.connection import (
    Node,
    parse_broker_url,
    redact,
    topology_changed,
)


@pytest.mark.parametrize("url", [
    "redis://localhost:6379/0", "rediss://h:6380/2", "unix:///tmp/redis.sock?db=3",
    "REDIS://Host:1/0",
])
def test_single_server_urls_are_left_to_redis_py(url: str) -> None:
    parsed = parse_broker_url(url)
    assert parsed.kind == "single"
    assert parsed.url.split("://")[0] == url.split("://")[0].lower()
    assert parsed.tls == url.lower().startswith("rediss")


def test_single_server_db_is_read_from_the_path() -> None:
    assert parse_broker_url("redis://h:1/5").db == 5
    assert parse_broker_url("unix:///s.sock?db=4").db == 4


def test_cluster_url_names_every_startup_node_with_default_ports() -> None:
    parsed = parse_broker_url("redis+cluster://10.0.0.1:7000,10.0.0.2,[::1]:7002")
    assert parsed.kind == "cluster" and not parsed.tls
    assert parsed.hosts == (("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7002))
    assert parsed.master_name is None and parsed.db == 0


def test_cluster_url_carries_credentials_and_redis_py_options() -> None:
    parsed = parse_broker_url(
        "rediss+cluster://app:p%40ss%2Cw0rd@h1:7000,h2:7001/?ssl_cert_reqs=none"
        "&socket_keepalive=true&client_name=sse")
    assert parsed.tls
    assert parsed.options["username"] == "app"
    assert parsed.options["password"] == "p@ss,w0rd"  # percent-decoded, "," inside is fine
    assert parsed.options["ssl"] is True
    assert parsed.options["ssl_cert_reqs"] == "none"
    assert parsed.options["socket_keepalive"] is True  # typed by redis-py's URL parser
    assert parsed.options["client_name"] == "sse"
    assert "host" not in parsed.options and "port" not in parsed.options


def test_password_only_auth() -> None:
    parsed = parse_broker_url("redis+cluster://:secret@h:7000")
    assert parsed.options["password"] == "secret"
    assert "username" not in parsed.options


def test_sentinel_url_names_sentinels_master_and_db() -> None:
    parsed = parse_broker_url("redis+sentinel://s1:26379,s2,s3:5000/mymaster/2")
    assert parsed.kind == "sentinel"
    assert parsed.hosts == (("s1", 26379), ("s2", 26379), ("s3", 5000))
    assert parsed.master_name == "mymaster" and parsed.db == 2


@pytest.mark.parametrize("url", ["redis+sentinel://s1/mymaster", "redis+sentinel://s1/mymaster/"])
def test_sentinel_db_defaults_to_zero(url: str) -> None:
    assert parse_broker_url(url).db == 0
    assert parse_broker_url(url).master_name == "mymaster"


def test_sentinel_credentials_are_the_data_nodes_sentinels_have_their_own() -> None:
    parsed = parse_broker_url(
        "rediss+sentinel://u:data-pw@s1:26379/m%20name/1?sentinel_password=sent-pw"
        "&sentinel_ssl=false&ssl_ca_certs=/ca.pem")
    assert parsed.master_name == "m name"
    assert parsed.options["password"] == "data-pw"
    assert parsed.options["ssl"] is True and parsed.options["ssl_ca_certs"] == "/ca.pem"
    assert parsed.sentinel_options == {"password": "sent-pw", "ssl": False}
    assert "sentinel_password" not in parsed.options


@pytest.mark.parametrize("url,why", [
    ("memcached://h:1", "unsupported scheme"),
    ("redis+cluster://", "no host"),
    ("redis+cluster://h:notaport", "bad port"),
    ("redis+cluster://h:0", "bad port"),
    ("redis+cluster://h:70000", "bad port"),
    ("redis+cluster://h:1,,h:2", "missing host"),
    ("redis+cluster://h:1/3", "only database 0"),
    ("redis+cluster://h:1?sentinel_password=x", "sentinel_"),
    ("redis+cluster://h:1?socket_timeout=soon", "socket_timeout"),
    ("redis+sentinel://s1:26379", "MASTER_NAME"),
    ("redis+sentinel://s1:26379/", "MASTER_NAME"),
    ("redis+sentinel://s1/m/x", "bad database"),
    ("redis+sentinel://s1/m/1/extra", "MASTER_NAME"),
    ("redis+sentinel://s1/m?sentinel_ssl=maybe", "sentinel_ssl"),
    ("redis://h:1/0?socket_timeout=soon", "socket_timeout"),
])
def test_bad_urls_fail_at_startup_naming_the_setting(url: str, why: str) -> None:
    with pytest.raises(ValueError, match="SSE_BROKER_URL") as info:
        parse_broker_url(url)
    assert why in str(info.value)


def test_errors_and_logs_never_show_the_password() -> None:
    with pytest.raises(ValueError) as info:
        parse_broker_url("redis+cluster://user:hunter2@h:bad")
    assert "hunter2" not in str(info.value)
    assert redact("redis+sentinel://u:hunter2@s1/m") == "redis+sentinel://u:***@s1/m"
    assert "hunter2" not in str(parse_broker_url("redis+sentinel://u:hunter2@s1/m"))
    assert redact("redis://h:1/0") == "redis://h:1/0"


def test_node_names() -> None:
    assert Node("10.0.0.1", 7000).name == "10.0.0.1:7000"
    assert Node("", 0, "/tmp/r.sock").name == "/tmp/r.sock"


def test_which_errors_mean_the_topology_moved() -> None:
    import redis
    from redis import exceptions as e

    moved = [e.MovedError("3999 127.0.0.1:6381"), e.AskError("3999 127.0.0.1:6381"),
             e.ClusterDownError("The cluster is down"), e.TryAgainError(),
             redis.ReadOnlyError("You can't write against a read only replica."),
             redis.ConnectionError("The previous master is now a slave"),
             redis.ResponseError("UNBLOCKED force unblock from blocking operation, "
                                 "instance state changed (master -> replica?)"),
             e.SlotNotCoveredError("slot 1 not covered"), redis.TimeoutError(),
             ConnectionResetError()]
    stays = [redis.AuthenticationError("invalid password"),
             e.MaxConnectionsError("Too many connections"),
             redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"),
             e.ClusterCrossSlotError()]
    assert all(topology_changed(exc) for exc in moved), [x for x in moved
                                                          if not topology_changed(x)]
    assert not any(topology_changed(exc) for exc in stays)
