# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""Tests of plugins/module_utils/synapse_workers.py: worker types, endpoint classes, layouts, checks."""

import re

import pytest

from ansible_collections.mxedge.matrix.plugins.module_utils import synapse_workers as sw

HOSTS = ["hs1", "hs1b"]


def _w(name, kind, host="hs1", port=18101, **more):
    worker = {"name": name, "type": kind, "host": host, "port": port}
    worker.update(more)
    return worker


def _route(pools, method, path):
    """The class the first matching pool routes (method, path) to, or 'main'."""
    for pool in pools:
        if pool["methods"] and method not in pool["methods"]:
            continue
        if any(re.match(pattern, path) for pattern in pool["patterns"]):
            return pool["class"]
    return "main"


# ------------------------------------------------------------------ check_workers


@pytest.mark.parametrize(
    "workers,kwargs",
    [
        ([], {}),
        ([], {"database": "sqlite", "redis": False}),
        ([_w("sync1", "sync"), _w("sync2", "sync", port=18102)], {}),
        ([_w("sync1", "sync"), _w("sync1b", "sync", host="hs1b")], {}),
        ([_w("ev1", "stream_writer", streams=["events"]), _w("ev2", "stream_writer", port=18102, streams=["events"])], {}),
        ([_w("typing1", "stream_writer", streams=["typing", "to_device", "receipts"])], {}),
    ],
    ids=["none", "none-with-sqlite", "two-sync", "two-hosts", "two-event-persisters", "one-writer-three-streams"],
)
def test_check_workers_accepts(workers, kwargs):
    options = {"database": "postgresql", "redis": True}
    options.update(kwargs)
    assert sw.check_workers(workers, HOSTS, **options) == []


@pytest.mark.parametrize(
    "workers,kwargs,message",
    [
        ("sync1", {}, "matrix_workers must be a list of workers (mappings), not str"),
        ([_w("sync1", "sync")], {"database": "sqlite"},
         "matrix_workers needs homeserver_database: postgresql (workers share the database; SQLite is one process only), not 'sqlite'"),
        ([_w("sync1", "sync")], {"redis": False}, "matrix_workers needs Redis (workers replicate through it): set up or name one"),
        (["sync1"], {}, "matrix_workers[0] must be a mapping with name, type, host and port"),
        ([{"name": "sync1", "type": "sync"}], {}, "matrix_workers[0] (sync1) lacks host, port"),
        ([_w("sync1", "sync", colour="red")], {}, "matrix_workers[0] (sync1) has unknown keys colour (allowed: name, type, host, port, streams)"),
        ([_w("Sync-1", "sync")], {},
         "matrix_workers[0] (Sync-1): name must be 1-32 characters of a-z, 0-9 and _, starting with a letter, and not main or master"),
        ([_w("main", "sync")], {},
         "matrix_workers[0] (main): name must be 1-32 characters of a-z, 0-9 and _, starting with a letter, and not main or master"),
        ([_w("sync1", "sync"), _w("sync1", "sync", port=18102)], {}, "matrix_workers[1] (sync1): name 'sync1' is also matrix_workers[0]'s"),
        ([_w("x1", "user_dir")], {},
         "matrix_workers[0] (x1): type 'user_dir' is not one of sync, client_reader, federation_reader, "
         "federation_inbound, event_creator, media_repository, federation_sender, pusher, appservice, "
         "background, stream_writer"),
        ([_w("sync1", "sync", host="db1")], {}, "matrix_workers[0] (sync1): host 'db1' is not an inventory host that runs the homeserver (hs1, hs1b)"),
        ([_w("sync1", "sync", port=80)], {}, "matrix_workers[0] (sync1): port must be a number from 1024 to 65535, not 80"),
        ([_w("sync1", "sync", port="18101")], {}, "matrix_workers[0] (sync1): port must be a number from 1024 to 65535, not '18101'"),
        ([_w("sync1", "sync", port=True)], {}, "matrix_workers[0] (sync1): port must be a number from 1024 to 65535, not True"),
        ([_w("sync1", "sync"), _w("sync2", "sync")], {}, "matrix_workers[1] (sync2): port 18101 on hs1 is also sync1's"),
        ([_w("sync1", "sync", port=8008)], {"main_ports": [("hs1", 8008)]},
         "matrix_workers[0] (sync1): port 8008 on hs1 is also the main process's"),
        ([_w("w1", "stream_writer")], {},
         "matrix_workers[0] (w1): a stream_writer needs streams, a non-empty list of events, typing, "
         "to_device, account_data, receipts, presence, push_rules, device_lists"),
        ([_w("w1", "stream_writer", streams=["thumbnails"])], {},
         "matrix_workers[0] (w1): stream 'thumbnails' is not one of events, typing, to_device, account_data, receipts, presence, "
         "push_rules, device_lists"),
        ([_w("w1", "stream_writer", streams=["typing"]), _w("w2", "stream_writer", port=18102, streams=["typing"])], {},
         "matrix_workers[1] (w2): stream typing is already written by w1; Synapse allows one writer for it"),
        ([_w("sync1", "sync", streams=["typing"])], {}, "matrix_workers[0] (sync1): streams are for type stream_writer only"),
        ([_w("bg1", "background"), _w("bg2", "background", port=18102)], {},
         "matrix_workers[1] (bg2): Synapse runs one background worker; bg1 is one already"),
        ([_w("as1", "appservice"), _w("as2", "appservice", host="hs1b")], {},
         "matrix_workers[1] (as2): Synapse runs one appservice worker; as1 is one already"),
    ],
    ids=lambda value: value if isinstance(value, str) and len(value) < 20 else None,
)
def test_check_workers_refuses(workers, kwargs, message):
    options = {"database": "postgresql", "redis": True}
    options.update(kwargs)
    assert message in sw.check_workers(workers, HOSTS, **options)


def test_check_workers_reports_every_problem_at_once():
    workers = [_w("sync1", "sync", port=80), _w("sync1", "nope", host="db1")]
    problems = sw.check_workers(workers, HOSTS, database="sqlite", redis=False)
    assert len(problems) == 6, problems


# ------------------------------------------------------------------ layouts


@pytest.mark.parametrize(
    "layout,hosts,kwargs,expected",
    [
        ("readers", ["hs1"], {}, [("sync1", "sync", "hs1", 18101), ("sync2", "sync", "hs1", 18102),
                                  ("federation_reader1", "federation_reader", "hs1", 18103),
                                  ("federation_reader2", "federation_reader", "hs1", 18104),
                                  ("federation_inbound", "federation_inbound", "hs1", 18105),
                                  ("client_reader", "client_reader", "hs1", 18106)]),
        ("readers", ["a", "b"], {"sync": 3, "federation_readers": 1, "base_port": 9000},
         [("sync1", "sync", "a", 9000), ("sync2", "sync", "b", 9000), ("sync3", "sync", "a", 9001),
          ("federation_reader1", "federation_reader", "b", 9001), ("federation_inbound", "federation_inbound", "a", 9002),
          ("client_reader", "client_reader", "b", 9002)]),
    ],
)
def test_expand_layout_readers(layout, hosts, kwargs, expected):
    workers = sw.expand_layout(layout, hosts, **kwargs)
    assert [(w["name"], w["type"], w["host"], w["port"]) for w in workers] == expected
    assert sw.check_workers(workers, hosts, database="postgresql") == []


@pytest.mark.parametrize("hosts", [["hs1"], ["hs1", "hs1b"], ["a", "b", "c"]])
def test_expand_layout_one_of_each_is_every_type_and_stream_once(hosts):
    workers = sw.expand_layout("one_of_each", hosts)
    assert sw.check_workers(workers, hosts, database="postgresql") == []
    assert {w["type"] for w in workers} == set(sw.WORKER_TYPES)
    streams = [stream for w in workers for stream in w.get("streams", [])]
    assert sorted(streams) == sorted(sw.STREAMS)
    assert {w["host"] for w in workers} == set(hosts)


@pytest.mark.parametrize(
    "args,kwargs,message",
    [
        (("two_of_each", ["hs1"]), {}, "matrix_workers_layout must be one of one_of_each, readers, not 'two_of_each'"),
        (("readers", []), {}, "matrix_workers_layout needs at least one host to place workers on"),
        (("readers", ["hs1"]), {"sync": 0}, "matrix_workers_layout_sync must be a number from 1 to 64, not 0"),
        (("readers", ["hs1"]), {"federation_readers": "2"},
         "matrix_workers_layout_federation_readers must be a number from 1 to 64, not '2'"),
    ],
)
def test_expand_layout_refuses(args, kwargs, message):
    with pytest.raises(sw.WorkerError) as info:
        sw.expand_layout(*args, **kwargs)
    assert str(info.value) == message


# ------------------------------------------------------------------ endpoint classes and pools


def test_every_pattern_is_an_anchored_regex():
    for endpoint in sw.ENDPOINT_CLASSES:
        for pattern in endpoint["patterns"]:
            assert pattern.startswith("^/_matrix/"), (endpoint["name"], pattern)
            re.compile(pattern)


def test_class_names_and_pools_are_unique():
    names = [endpoint["name"] for endpoint in sw.ENDPOINT_CLASSES]
    assert len(names) == len(set(names))
    assert all(endpoint["sticky"] in (None, "user", "room", "source") for endpoint in sw.ENDPOINT_CLASSES)


# Deployments: one worker of every type with every stream written, and a lone client reader
# (without stream writers the GET-only classes go to client readers, writer-only ones stay on main).
DEPLOYMENTS = {
    "one_of_each": sw.expand_layout("one_of_each", ["hs1"]),
    "reader_only": [_w("reader1", "client_reader")],
}

# (deployment, method, path) -> the class the request reaches ("main": no worker route).
ROUTES = [
    ("one_of_each", "GET", "/_matrix/client/v3/sync", "sync"),
    ("one_of_each", "GET", "/_matrix/client/r0/sync", "sync"),
    ("one_of_each", "GET", "/_matrix/client/v3/rooms/!r:x/initialSync", "sync"),
    ("one_of_each", "GET", "/_matrix/client/v3/sync/extra", "main"),
    ("one_of_each", "PUT", "/_matrix/client/v3/rooms/!r:x/send/m.room.message/t1", "event_creation"),
    ("one_of_each", "POST", "/_matrix/client/v3/join/%23a:x", "event_creation"),
    ("one_of_each", "PUT", "/_matrix/client/v3/rooms/!r:x/state/m.room.name/", "event_creation"),
    ("one_of_each", "GET", "/_matrix/client/v3/rooms/!r:x/state", "client_reader"),
    ("one_of_each", "GET", "/_matrix/client/v3/rooms/!r:x/messages", "room_messages"),
    ("one_of_each", "PUT", "/_matrix/client/v3/rooms/!r:x/typing/@a:x", "typing"),
    ("one_of_each", "PUT", "/_matrix/client/v3/sendToDevice/m.room_key/t1", "to_device"),
    ("one_of_each", "PUT", "/_matrix/client/v3/user/@a:x/account_data/m.direct", "account_data"),
    ("one_of_each", "PUT", "/_matrix/client/v3/user/@a:x/rooms/!r:x/tags/u.work", "account_data"),
    ("one_of_each", "POST", "/_matrix/client/v3/rooms/!r:x/receipt/m.read/$e", "receipts"),
    ("one_of_each", "PUT", "/_matrix/client/v3/presence/@a:x/status", "presence"),
    ("one_of_each", "PUT", "/_matrix/client/v3/pushrules/global/override/r1", "push_rules"),
    ("one_of_each", "POST", "/_matrix/client/v3/keys/upload", "device_lists"),
    ("one_of_each", "GET", "/_matrix/client/v3/devices", "device_lists"),
    ("one_of_each", "POST", "/_matrix/client/v3/keys/query", "client_reader"),
    ("one_of_each", "GET", "/_matrix/client/versions", "client_reader"),
    ("one_of_each", "POST", "/_matrix/client/v3/login", "client_reader"),
    ("one_of_each", "GET", "/_matrix/client/v3/login/sso/redirect", "main"),  # SSO stays on one process: the main one
    ("one_of_each", "PUT", "/_matrix/federation/v1/send/txn1", "federation_inbound"),
    ("one_of_each", "PUT", "/_matrix/federation/v1/send_join/!r:x/$e", "federation_reader"),  # not inbound's /send/
    ("one_of_each", "PUT", "/_matrix/federation/v2/send_join/!r:x/$e", "federation_reader"),
    ("one_of_each", "GET", "/_matrix/federation/v1/version", "federation_reader"),
    ("one_of_each", "POST", "/_matrix/key/v2/query", "federation_reader"),
    ("one_of_each", "GET", "/_matrix/media/v3/download/x/y", "media"),
    ("one_of_each", "GET", "/_matrix/client/v1/media/download/x/y", "media"),
    ("one_of_each", "GET", "/_matrix/federation/v1/media/download/y", "media"),
    ("one_of_each", "GET", "/_matrix/client/v3/admin/whois/@a:x", "main"),
    ("one_of_each", "POST", "/_matrix/client/v3/createRoom", "client_reader"),
    ("reader_only", "GET", "/_matrix/client/v3/user/@a:x/account_data/m.direct", "account_data"),
    ("reader_only", "PUT", "/_matrix/client/v3/user/@a:x/account_data/m.direct", "main"),
    ("reader_only", "GET", "/_matrix/client/v3/pushrules/", "push_rules"),
    ("reader_only", "PUT", "/_matrix/client/v3/pushrules/global/override/r1", "main"),
    ("reader_only", "GET", "/_matrix/client/v3/presence/@a:x/status", "presence"),
    ("reader_only", "PUT", "/_matrix/client/v3/rooms/!r:x/typing/@a:x", "main"),
    ("reader_only", "PUT", "/_matrix/client/v3/sendToDevice/m.room_key/t1", "main"),
    ("reader_only", "POST", "/_matrix/client/v3/rooms/!r:x/receipt/m.read/$e", "main"),
    ("reader_only", "POST", "/_matrix/client/v3/keys/upload", "device_lists"),
]


@pytest.mark.parametrize("deployment,method,path,expected", ROUTES, ids=[f"{d} {m} {p}" for d, m, p, _e in ROUTES])
def test_routes(deployment, method, path, expected):
    pools = sw.worker_pools(DEPLOYMENTS[deployment])
    assert _route(pools, method, path) == expected
    served = {pool["class"]: pool for pool in pools}
    if deployment == "reader_only" and expected in served:
        assert served[expected]["workers"] == ["reader1"]


def test_pools_name_their_workers_and_stickiness():
    workers = sw.expand_layout("readers", ["hs1", "hs1b"], sync=2, federation_readers=1)
    pools = {pool["class"]: pool for pool in sw.worker_pools(workers)}
    assert pools["sync"]["workers"] == ["sync1", "sync2"] and pools["sync"]["sticky"] == "user"
    assert pools["federation_inbound"]["sticky"] == "source"
    assert pools["room_messages"]["sticky"] == "room" and pools["room_messages"]["workers"] == ["client_reader"]
    assert pools["sync"]["pool"] == "workers_sync"
    assert "media" not in pools  # no media repository: media stays on the main process
    assert pools["federation_reader"]["listeners"] == ["federation"]


def test_no_workers_no_pools():
    assert sw.worker_pools([]) == []


# ------------------------------------------------------------------ Synapse settings


def test_shared_config_of_one_of_each():
    workers = sw.expand_layout("one_of_each", ["hs1", "hs1b"])
    addresses = {"hs1": "10.0.0.1", "hs1b": "10.0.0.2"}
    config = sw.shared_config(workers, "10.0.0.1", 9093, addresses)
    writers = {w["name"]: w for w in workers if w["type"] == "stream_writer"}
    assert config["instance_map"]["main"] == {"host": "10.0.0.1", "port": 9093}
    assert set(config["instance_map"]) == {"main"} | set(writers)
    for name, worker in writers.items():
        assert config["instance_map"][name] == {"host": addresses[worker["host"]], "port": worker["port"]}
    # Multi-writer streams are lists, the others one name.
    assert config["stream_writers"]["events"] == ["events_writer"]
    assert config["stream_writers"]["typing"] == "stream_writer"
    assert config["stream_writers"]["receipts"] == ["stream_writer"]
    assert config["send_federation"] is False and config["federation_sender_instances"] == ["federation_sender"]
    assert config["start_pushers"] is False and config["pusher_instances"] == ["pusher"]
    assert config["notify_appservices_from_worker"] == "appservice"
    assert config["run_background_tasks_on"] == "background"
    assert config["enable_media_repo"] is False and config["media_instance_running_background_jobs"] == "media_repository"


def test_shared_config_of_no_workers_is_empty():
    assert sw.shared_config([], "127.0.0.1", 9093, {}) == {}
    assert sw.shared_config([], "127.0.0.1", 9093, {}, redis={"host": "127.0.0.1", "port": 6379}) == {}


@pytest.mark.parametrize(
    "redis,secret,expected",
    [
        (None, None, {}),
        ({"host": "10.0.0.1", "port": "6379"}, None, {"redis": {"enabled": True, "host": "10.0.0.1", "port": 6379}}),
        ({"host": "10.0.0.1", "port": 6380, "password_path": "/etc/synapse/redis_password"}, "/etc/synapse/replication_secret",
         {"redis": {"enabled": True, "host": "10.0.0.1", "port": 6380, "password_path": "/etc/synapse/redis_password"},
          "worker_replication_secret_path": "/etc/synapse/replication_secret"}),
    ],
)
def test_shared_config_redis_and_replication_secret(redis, secret, expected):
    workers = sw.expand_layout("readers", ["hs1"])
    config = sw.shared_config(workers, "10.0.0.1", 9093, {"hs1": "10.0.0.1"}, redis=redis, replication_secret_path=secret)
    assert {key: config[key] for key in ("redis", "worker_replication_secret_path") if key in config} == expected


def test_main_replication_listener_serves_replication_only():
    listener = sw.main_replication_listener(["10.0.0.1"], "9093")
    assert listener == {"type": "http", "port": 9093, "bind_addresses": ["10.0.0.1"], "x_forwarded": False,
                        "resources": [{"names": ["replication"], "compress": False}]}
    with pytest.raises(sw.WorkerError, match="needs an address"):
        sw.main_replication_listener([], 9093)


@pytest.mark.parametrize(
    "worker,app,names",
    [
        (_w("sync1", "sync"), "synapse.app.generic_worker", ["client", "federation"]),
        (_w("media1", "media_repository"), "synapse.app.media_repository", ["media"]),
        (_w("ev1", "stream_writer", streams=["events"]), "synapse.app.generic_worker", ["client", "federation", "replication"]),
        (_w("fs1", "federation_sender"), "synapse.app.generic_worker", None),
        (_w("bg1", "background"), "synapse.app.generic_worker", None),
    ],
)
def test_worker_config(worker, app, names):
    config = sw.worker_config(worker, "10.0.0.5")
    assert config["worker_app"] == app and config["worker_name"] == worker["name"]
    (listener,) = config["worker_listeners"]
    assert listener["port"] == worker["port"] and listener["bind_addresses"] == ["10.0.0.5"]
    if names is None:
        assert listener["resources"] == []
    else:
        assert listener["resources"] == [{"names": names, "compress": False}]


# ------------------------------------------------------------------ one host's settings (homeserver role)

_PLACED = [
    {"name": "sync1", "type": "sync", "host": "hs1", "port": 18101},
    {"name": "media", "type": "media_repository", "host": "hs2", "port": 18101},
    {"name": "sender", "type": "federation_sender", "host": "hs2", "port": 18102},
    {"name": "writer", "type": "stream_writer", "host": "hs2", "port": 18103, "streams": ["typing"]},
]


@pytest.mark.parametrize(
    "worker,names",
    [
        (_PLACED[0], ["client", "federation"]),
        (_PLACED[1], ["media"]),
        (_PLACED[2], None),
        (_PLACED[3], ["client", "federation", "replication"]),
    ],
)
def test_worker_config_listener_resources(worker, names):
    config = sw.worker_config(worker, ["10.0.0.2"], "/etc/synapse/workers/x.log_config.yaml", "X-Request-ID")
    (listener,) = config["worker_listeners"]
    assert listener["port"] == worker["port"] and listener["bind_addresses"] == ["10.0.0.2"]
    assert listener["request_id_header"] == "X-Request-ID" and listener["x_forwarded"] is True
    assert listener["resources"] == ([{"names": names, "compress": False}] if names else [])
    assert config["worker_name"] == worker["name"]
    assert config["worker_log_config"] == "/etc/synapse/workers/x.log_config.yaml"


def test_worker_config_takes_one_address_too():
    config = sw.worker_config(_PLACED[0], "127.0.0.1")
    assert config["worker_listeners"][0]["bind_addresses"] == ["127.0.0.1"]
    assert "worker_log_config" not in config and "request_id_header" not in config["worker_listeners"][0]


@pytest.mark.parametrize(
    "host,runs_main,workers,listeners",
    [
        ("hs1", True, ["sync1"], 1),
        ("hs2", False, ["media", "sender", "writer"], 0),
        ("hs3", False, [], 0),
    ],
)
def test_host_settings_place_workers_and_the_replication_listener(host, runs_main, workers, listeners):
    settings = sw.host_settings(_PLACED, host, runs_main, "10.0.0.1", 9093, {"hs1": "10.0.0.1", "hs2": "10.0.0.2"},
                                ["0.0.0.0"], "/etc/synapse", "/var/log/synapse",
                                redis={"host": "10.0.0.1", "port": 6379, "password_path": "/etc/synapse/redis_password"},
                                replication_secret_path="/etc/synapse/worker_replication_secret")
    assert [w["name"] for w in settings["workers"]] == workers
    for worker in settings["workers"]:
        assert worker["config_file"] == "/etc/synapse/workers/%s.yaml" % worker["name"]
        assert worker["log_file"] == "/var/log/synapse/%s.log" % worker["name"]
        assert worker["config"]["worker_log_config"] == worker["log_config_file"]
    assert len(settings["listeners"]) == listeners
    assert settings["shared"]["instance_map"] == {"main": {"host": "10.0.0.1", "port": 9093},
                                                  "writer": {"host": "10.0.0.2", "port": 18103}}
    assert settings["shared"]["worker_replication_secret_path"] == "/etc/synapse/worker_replication_secret"
    assert settings["shared"]["redis"]["password_path"] == "/etc/synapse/redis_password"


def test_host_settings_without_workers_change_nothing():
    assert sw.host_settings([], "hs1", True, "127.0.0.1", 9093, {}, ["127.0.0.1"], "/etc/synapse", "/var/log/synapse") == {
        "shared": {}, "listeners": [], "workers": []}
