# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""Synapse workers as data: types, the endpoints each serves, layouts, checks.

Groundwork for issue 20 (workers on several hosts, routed by every proxy
flavour). Nothing here renders Synapse's or a proxy's syntax:

* :data:`WORKER_TYPES` and :data:`STREAMS` say what Synapse has today
  (``docs/workers.md`` of Synapse 1.157: generic workers for sync, client
  reads, federation reads, inbound federation and event creation; the media
  repository; federation senders, pushers, the appservice notifier and the
  background task runner, which serve no endpoint; stream writers).
* :data:`ENDPOINT_CLASSES` keeps the endpoint patterns of Synapse's worker
  documentation once, with the stickiness each class wants (sync by user,
  room-scoped endpoints by room, inbound federation by source address).
* :func:`check_workers` finds every rule a ``matrix_workers`` list breaks
  (duplicate names or ports, an unknown type or stream, a stream with two
  writers where Synapse allows one, a worker on a host that is not in the
  inventory, workers with SQLite), each message naming the variable.
* :func:`expand_layout` turns a named layout into a ``matrix_workers`` list.
* :func:`worker_pools` says, for a checked list, which endpoint classes go to
  which workers, in route order; the route table turns that into routes and
  upstream pools whose fallback is the main process.
* :func:`shared_config` and :func:`worker_config` are the Synapse settings
  (``instance_map``, ``stream_writers``, ...) as plain data.

A worker is ``{"name": "sync1", "type": "sync", "host": "hs1", "port": 18101}``
plus ``"streams": [...]`` for a ``stream_writer``.
"""

import re

# The streams Synapse lets a worker write, and whether it allows several writers.
STREAMS = {
    "events": True,
    "typing": False,
    "to_device": False,
    "account_data": False,
    "receipts": True,
    "presence": False,
    "push_rules": False,
    "device_lists": True,
}

# type -> Synapse application, whether it serves endpoints through the proxy,
# whether several workers of the type may run, and the shared setting naming it.
WORKER_TYPES = {
    "sync": {"app": "synapse.app.generic_worker", "http": True, "many": True},
    "client_reader": {"app": "synapse.app.generic_worker", "http": True, "many": True},
    "federation_reader": {"app": "synapse.app.generic_worker", "http": True, "many": True},
    "federation_inbound": {"app": "synapse.app.generic_worker", "http": True, "many": True},
    "event_creator": {"app": "synapse.app.generic_worker", "http": True, "many": True},
    "media_repository": {"app": "synapse.app.media_repository", "http": True, "many": True},
    "federation_sender": {"app": "synapse.app.generic_worker", "http": False, "many": True},
    "pusher": {"app": "synapse.app.generic_worker", "http": False, "many": True},
    "appservice": {"app": "synapse.app.generic_worker", "http": False, "many": False},
    "background": {"app": "synapse.app.generic_worker", "http": False, "many": False},
    "stream_writer": {"app": "synapse.app.generic_worker", "http": True, "many": True},
}

_V = "(api/v1|r0|v3|unstable)"
_V3 = "(r0|v3|unstable)"

# Endpoint classes in route order (the first class whose pattern matches wins;
# stream-writer classes come first because their patterns are narrower than the
# generic ones they overlap). ``serves``: the worker type, or ("stream_writer",
# stream). ``methods``: empty for any. ``listeners``: the vhosts of the route
# table the class is routed on. ``needs_writer``: routed only when the stream
# has a writer (otherwise the class is ``fallback`` for another, or stays on main).
ENDPOINT_CLASSES = (
    {
        "name": "typing", "serves": ("stream_writer", "typing"), "sticky": None, "methods": [],
        "listeners": ["client"], "patterns": ["^/_matrix/client/%s/rooms/.*/typing" % _V],
    },
    {
        "name": "to_device", "serves": ("stream_writer", "to_device"), "sticky": None, "methods": [],
        "listeners": ["client"], "patterns": ["^/_matrix/client/%s/sendToDevice/" % _V3],
    },
    {
        "name": "account_data", "serves": ("stream_writer", "account_data"), "sticky": None, "methods": [],
        "listeners": ["client"],
        "patterns": ["^/_matrix/client/%s/.*/tags" % _V3, "^/_matrix/client/%s/.*/account_data" % _V3],
        "without_writer": {"serves": "client_reader", "methods": ["GET"]},
    },
    {
        "name": "receipts", "serves": ("stream_writer", "receipts"), "sticky": "room", "methods": [],
        "listeners": ["client"],
        "patterns": ["^/_matrix/client/%s/rooms/.*/receipt" % _V3, "^/_matrix/client/%s/rooms/.*/read_markers" % _V3],
    },
    {
        "name": "presence", "serves": ("stream_writer", "presence"), "sticky": None, "methods": [],
        "listeners": ["client"], "patterns": ["^/_matrix/client/%s/presence/" % _V],
        "without_writer": {"serves": "client_reader", "methods": ["GET"]},
    },
    {
        "name": "push_rules", "serves": ("stream_writer", "push_rules"), "sticky": None, "methods": [],
        "listeners": ["client"], "patterns": ["^/_matrix/client/%s/pushrules/" % _V],
        "without_writer": {"serves": "client_reader", "methods": ["GET"]},
    },
    {
        "name": "device_lists", "serves": ("stream_writer", "device_lists"), "sticky": "user", "methods": [],
        "listeners": ["client"],
        "patterns": [
            "^/_matrix/client/(r0|v3)/delete_devices$",
            "^/_matrix/client/%s/devices(/|$)" % _V,
            "^/_matrix/client/%s/keys/upload" % _V3,
            "^/_matrix/client/%s/keys/device_signing/upload$" % _V,
            "^/_matrix/client/%s/keys/signatures/upload$" % _V,
        ],
        "without_writer": {"serves": "client_reader", "methods": []},
    },
    {
        "name": "sync", "serves": "sync", "sticky": "user", "methods": [], "listeners": ["client"],
        "patterns": [
            "^/_matrix/client/(r0|v3)/sync$",
            "^/_matrix/client/(api/v1|r0|v3)/events$",
            "^/_matrix/client/(api/v1|r0|v3)/initialSync$",
            "^/_matrix/client/(api/v1|r0|v3)/rooms/[^/]+/initialSync$",
        ],
    },
    {
        "name": "event_creation", "serves": "event_creator", "sticky": "room", "methods": [], "listeners": ["client"],
        "patterns": [
            "^/_matrix/client/%s/rooms/.*/redact" % _V,
            "^/_matrix/client/%s/rooms/.*/send" % _V,
            "^/_matrix/client/%s/rooms/.*/state/" % _V,
            "^/_matrix/client/%s/rooms/.*/(join|invite|leave|ban|unban|kick)$" % _V,
            "^/_matrix/client/%s/join/" % _V,
            "^/_matrix/client/%s/knock/" % _V,
            "^/_matrix/client/%s/profile/" % _V,
        ],
    },
    {
        # All requests for one room's pagination go to one worker.
        "name": "room_messages", "serves": "client_reader", "sticky": "room", "methods": [], "listeners": ["client"],
        "patterns": ["^/_matrix/client/%s/rooms/.*/messages$" % _V],
    },
    {
        "name": "client_reader", "serves": "client_reader", "sticky": None, "methods": [], "listeners": ["client"],
        "patterns": [
            "^/_matrix/client/%s/createRoom$" % _V,
            "^/_matrix/client/%s/publicRooms$" % _V,
            "^/_matrix/client/%s/rooms/.*/joined_members$" % _V,
            "^/_matrix/client/%s/rooms/.*/context/.*$" % _V,
            "^/_matrix/client/%s/rooms/.*/members$" % _V,
            "^/_matrix/client/%s/rooms/.*/state$" % _V,
            "^/_matrix/client/v1/rooms/.*/hierarchy$",
            "^/_matrix/client/(v1|unstable)/rooms/.*/relations/",
            "^/_matrix/client/v1/rooms/.*/threads$",
            "^/_matrix/client/unstable/im.nheko.summary/summary/.*$",
            "^/_matrix/client/v1/room_summary/.*$",
            "^/_matrix/client/%s/account/3pid$" % _V3,
            "^/_matrix/client/%s/account/whoami$" % _V3,
            "^/_matrix/client/%s/account/deactivate$" % _V3,
            "^/_matrix/client/versions$",
            "^/_matrix/client/%s/voip/turnServer$" % _V,
            "^/_matrix/client/%s/rooms/.*/event/" % _V,
            "^/_matrix/client/%s/joined_rooms$" % _V,
            "^/_matrix/client/v1/rooms/.*/timestamp_to_event$",
            "^/_matrix/client/(api/v1|r0|v3|unstable/.*)/rooms/.*/aliases",
            "^/_matrix/client/%s/search$" % _V,
            "^/_matrix/client/%s/user/.*/filter(/|$)" % _V3,
            "^/_matrix/client/%s/directory/room/.*$" % _V,
            "^/_matrix/client/%s/capabilities$" % _V3,
            "^/_matrix/client/%s/notifications$" % _V3,
            "^/_matrix/client/%s/keys/query$" % _V3,
            "^/_matrix/client/%s/keys/changes$" % _V3,
            "^/_matrix/client/%s/keys/claim$" % _V3,
            "^/_matrix/client/%s/room_keys/" % _V3,
            "^/_matrix/client/%s/login$" % _V,
            "^/_matrix/client/%s/register$" % _V3,
            "^/_matrix/client/%s/register/available$" % _V3,
            "^/_matrix/client/v1/register/m.login.registration_token/validity$",
            "^/_matrix/client/%s/password_policy$" % _V3,
            "^/_matrix/client/%s/user_directory/search$" % _V3,
        ],
    },
    {
        # Transactions from one remote server go to one worker.
        "name": "federation_inbound", "serves": "federation_inbound", "sticky": "source", "methods": [],
        "listeners": ["federation"], "patterns": ["^/_matrix/federation/v1/send/"],
    },
    {
        "name": "federation_reader", "serves": "federation_reader", "sticky": None, "methods": [],
        "listeners": ["federation"],
        "patterns": [
            "^/_matrix/federation/v1/version$",
            "^/_matrix/federation/v1/event/",
            "^/_matrix/federation/v1/state/",
            "^/_matrix/federation/v1/state_ids/",
            "^/_matrix/federation/v1/backfill/",
            "^/_matrix/federation/v1/get_missing_events/",
            "^/_matrix/federation/v1/publicRooms",
            "^/_matrix/federation/v1/query/",
            "^/_matrix/federation/v1/make_join/",
            "^/_matrix/federation/v1/make_leave/",
            "^/_matrix/federation/(v1|v2)/send_join/",
            "^/_matrix/federation/(v1|v2)/send_leave/",
            "^/_matrix/federation/v1/make_knock/",
            "^/_matrix/federation/v1/send_knock/",
            "^/_matrix/federation/(v1|v2)/invite/",
            "^/_matrix/federation/v1/event_auth/",
            "^/_matrix/federation/v1/timestamp_to_event/",
            "^/_matrix/federation/v1/exchange_third_party_invite/",
            "^/_matrix/federation/v1/user/devices/",
            "^/_matrix/key/v2/query",
            "^/_matrix/federation/v1/hierarchy/",
        ],
    },
    {
        # The media repository: client and federation media, legacy and authenticated (MSC3916).
        "name": "media", "serves": "media_repository", "sticky": None, "methods": [],
        "listeners": ["client", "federation"],
        "patterns": ["^/_matrix/media/", "^/_matrix/client/v1/media/", "^/_matrix/federation/v1/media/"],
    },
)

_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
_RESERVED_NAMES = ("main", "master")
_LAYOUTS = ("one_of_each", "readers")


class WorkerError(ValueError):
    """A ``matrix_workers`` list (or a layout) breaks a rule; the message names the variable."""


def _where(index, worker):
    name = worker.get("name") if isinstance(worker, dict) else None
    return "matrix_workers[%d]%s" % (index, " (%s)" % name if isinstance(name, str) and name else "")


def check_workers(workers, hosts, database="sqlite", redis=True, main_ports=()):
    """Return the list of problems (strings) of ``workers``; empty when it is usable.

    ``hosts``: the inventory hostnames workers may be placed on; ``database``:
    ``homeserver_database`` (workers need ``postgresql``); ``redis``: whether
    Redis is configured (workers need it); ``main_ports``: ports the main
    process uses on its host (with the host: ``[(host, port)]``).
    """
    problems = []
    if not isinstance(workers, (list, tuple)):
        return ["matrix_workers must be a list of workers (mappings), not %s" % type(workers).__name__]
    if not workers:
        return problems
    if database != "postgresql":
        problems.append(
            "matrix_workers needs homeserver_database: postgresql (workers share the database; "
            "SQLite is one process only), not %r" % (database,)
        )
    if not redis:
        problems.append("matrix_workers needs Redis (workers replicate through it): set up or name one")
    names, ports, writers = {}, {}, {}
    for host, port in main_ports:
        ports[(host, int(port))] = "the main process"
    for index, worker in enumerate(workers):
        where = _where(index, worker)
        if not isinstance(worker, dict):
            problems.append("%s must be a mapping with name, type, host and port" % where)
            continue
        missing = [key for key in ("name", "type", "host", "port") if key not in worker]
        if missing:
            problems.append("%s lacks %s" % (where, ", ".join(missing)))
            continue
        unknown = sorted(set(worker) - {"name", "type", "host", "port", "streams"})
        if unknown:
            problems.append("%s has unknown keys %s (allowed: name, type, host, port, streams)" % (where, ", ".join(unknown)))
        name, kind, host, port = worker["name"], worker["type"], worker["host"], worker["port"]
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name in _RESERVED_NAMES:
            problems.append(
                "%s: name must be 1-32 characters of a-z, 0-9 and _, starting with a letter, and not %s"
                % (where, " or ".join(_RESERVED_NAMES))
            )
        elif name in names:
            problems.append("%s: name %r is also matrix_workers[%d]'s" % (where, name, names[name]))
        else:
            names[name] = index
        if kind not in WORKER_TYPES:
            problems.append("%s: type %r is not one of %s" % (where, kind, ", ".join(WORKER_TYPES)))
        if host not in hosts:
            problems.append("%s: host %r is not an inventory host that runs the homeserver (%s)"
                            % (where, host, ", ".join(sorted(hosts)) or "none"))
        if isinstance(port, bool) or not isinstance(port, int) or not 1024 <= port <= 65535:
            problems.append("%s: port must be a number from 1024 to 65535, not %r" % (where, port))
        elif (host, port) in ports:
            problems.append("%s: port %d on %s is also %s's" % (where, port, host, ports[(host, port)]))
        else:
            ports[(host, port)] = name
        streams = worker.get("streams", [])
        if kind == "stream_writer":
            if not isinstance(streams, list) or not streams:
                problems.append("%s: a stream_writer needs streams, a non-empty list of %s" % (where, ", ".join(STREAMS)))
                streams = []
            for stream in streams:
                if stream not in STREAMS:
                    problems.append("%s: stream %r is not one of %s" % (where, stream, ", ".join(STREAMS)))
                    continue
                if stream in writers and not STREAMS[stream]:
                    problems.append("%s: stream %s is already written by %s; Synapse allows one writer for it"
                                    % (where, stream, writers[stream][0]))
                writers.setdefault(stream, []).append(name)
        elif "streams" in worker:
            problems.append("%s: streams are for type stream_writer only" % where)
        if kind in WORKER_TYPES and not WORKER_TYPES[kind]["many"]:
            same = [other for other in workers[:index] if isinstance(other, dict) and other.get("type") == kind]
            if same:
                problems.append("%s: Synapse runs one %s worker; %s is one already" % (where, kind, same[0].get("name")))
    return problems


def expand_layout(layout, hosts, sync=2, federation_readers=2, base_port=18101):
    """Return the ``matrix_workers`` list of a named layout, placed round-robin on ``hosts``.

    ``one_of_each``: one worker of every type, one stream writer for the events
    stream and one for all the others. ``readers``: ``sync`` sync workers,
    ``federation_readers`` federation readers, one inbound federation worker
    and one client reader. Ports count up from ``base_port`` per host.
    """
    if layout not in _LAYOUTS:
        raise WorkerError("matrix_workers_layout must be one of %s, not %r" % (", ".join(_LAYOUTS), layout))
    if not hosts:
        raise WorkerError("matrix_workers_layout needs at least one host to place workers on")
    for what, count in (("sync", sync), ("federation_readers", federation_readers)):
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 64:
            raise WorkerError("matrix_workers_layout_%s must be a number from 1 to 64, not %r" % (what, count))
    if layout == "one_of_each":
        plan = [(kind, kind, None) for kind in WORKER_TYPES if kind != "stream_writer"]
        plan.append(("events_writer", "stream_writer", ["events"]))
        plan.append(("stream_writer", "stream_writer", [stream for stream in STREAMS if stream != "events"]))
    else:
        plan = [("sync%d" % number, "sync", None) for number in range(1, sync + 1)]
        plan += [("federation_reader%d" % number, "federation_reader", None) for number in range(1, federation_readers + 1)]
        plan += [("federation_inbound", "federation_inbound", None), ("client_reader", "client_reader", None)]
    workers, next_port = [], {}
    for index, (name, kind, streams) in enumerate(plan):
        host = hosts[index % len(hosts)]
        port = next_port.get(host, base_port)
        next_port[host] = port + 1
        worker = {"name": name, "type": kind, "host": host, "port": port}
        if streams:
            worker["streams"] = streams
        workers.append(worker)
    return workers


def _names_by_type_and_stream(workers):
    """({type: [worker names]}, {stream: [writer names]}) of a checked ``workers`` list, in its order."""
    by_type, writers = {}, {}
    for worker in workers:
        by_type.setdefault(worker["type"], []).append(worker["name"])
        for stream in worker.get("streams", []):
            writers.setdefault(stream, []).append(worker["name"])
    return by_type, writers


def worker_pools(workers, addresses=None):
    """For a checked ``workers`` list: the endpoint classes that go to workers, in route order.

    Each item: ``{"class", "pool", "workers": [names], "sticky", "methods",
    "listeners", "patterns"}``, and with ``addresses`` (inventory host -> the
    address the proxy reaches it on) ``"servers": [{"name", "address",
    "port"}]``, the route table's ``worker_pools`` input. A class whose workers
    do not exist is left out (its endpoints stay on the main process), or
    routed as its ``without_writer`` alternative says.
    """
    by_type, writers = _names_by_type_and_stream(workers)
    placed = {worker["name"]: worker for worker in workers}
    pools = []
    for endpoint in ENDPOINT_CLASSES:
        serves, methods = endpoint["serves"], endpoint["methods"]
        if isinstance(serves, tuple):
            names = writers.get(serves[1], [])
            if not names and "without_writer" in endpoint:
                serves = endpoint["without_writer"]["serves"]
                methods = endpoint["without_writer"]["methods"]
                names = by_type.get(serves, [])
        else:
            names = by_type.get(serves, [])
        if not names:
            continue
        pools.append({
            "class": endpoint["name"],
            "pool": "workers_%s" % endpoint["name"],
            "workers": list(names),
            "sticky": endpoint["sticky"],
            "methods": list(methods),
            "listeners": list(endpoint["listeners"]),
            "patterns": list(endpoint["patterns"]),
        })
        if addresses is not None:
            pools[-1]["servers"] = [{"name": name, "address": addresses[placed[name]["host"]], "port": placed[name]["port"]}
                                    for name in names]
    return pools


def shared_config(workers, main_replication_host, main_replication_port, addresses, redis=None,
                  replication_secret_path=None):
    """The settings every Synapse process of a worker deployment shares (plain data).

    ``addresses``: inventory host -> the address other hosts reach it on.
    ``redis``: ``{"host", "port", "password_path"}`` (password optional), the
    Redis every process replicates through; ``replication_secret_path``: the
    file of ``worker_replication_secret`` (the replication listeners accept
    only requests carrying it). Empty for no workers (the single process,
    unchanged).
    """
    if not workers:
        return {}
    by_type, writers = _names_by_type_and_stream(workers)
    instance_map = {"main": {"host": main_replication_host, "port": int(main_replication_port)}}
    for worker in workers:
        if worker["type"] == "stream_writer":
            instance_map[worker["name"]] = {"host": str(addresses[worker["host"]]).strip("[]"), "port": worker["port"]}
    config = {"instance_map": instance_map}
    if redis:
        config["redis"] = {"enabled": True, "host": redis["host"], "port": int(redis["port"])}
        if redis.get("password_path"):
            config["redis"]["password_path"] = redis["password_path"]
    if replication_secret_path:
        config["worker_replication_secret_path"] = replication_secret_path
    if writers:
        config["stream_writers"] = {stream: names if STREAMS[stream] else names[0] for stream, names in writers.items()}
    if by_type.get("federation_sender"):
        config["send_federation"] = False
        config["federation_sender_instances"] = by_type["federation_sender"]
    if by_type.get("pusher"):
        config["start_pushers"] = False
        config["pusher_instances"] = by_type["pusher"]
    if by_type.get("appservice"):
        config["notify_appservices_from_worker"] = by_type["appservice"][0]
    if by_type.get("background"):
        config["run_background_tasks_on"] = by_type["background"][0]
    if by_type.get("media_repository"):
        config["enable_media_repo"] = False
        config["media_instance_running_background_jobs"] = by_type["media_repository"][0]
    return config


def worker_config(worker, bind_addresses, log_config=None, request_id_header=None):
    """The worker's own configuration file (plain data) for Synapse.

    One HTTP listener on ``bind_addresses`` (a list, or one address) and the
    worker's port: ``media`` for the media repository, ``client`` and
    ``federation`` for the other workers the proxy routes to, plus
    ``replication`` for stream writers (the address ``instance_map`` gives); no
    resource for the workers that serve no endpoint (Synapse's ``/health`` is
    on every HTTP listener, for the proxy's and the role's checks).
    ``log_config``: the worker's logging configuration file;
    ``request_id_header``: the header the proxy sets (MX05), logged as the
    request ID as on the main process.
    """
    kind = WORKER_TYPES[worker["type"]]
    if worker["type"] == "media_repository":
        names = ["media"]
    elif kind["http"]:
        names = ["client", "federation"]
    else:
        names = []
    if worker["type"] == "stream_writer":
        names.append("replication")
    addresses = [bind_addresses] if isinstance(bind_addresses, str) else list(bind_addresses)
    listener = {"type": "http", "port": worker["port"], "bind_addresses": addresses, "x_forwarded": True,
                "resources": [{"names": names, "compress": False}] if names else []}
    if request_id_header:
        listener["request_id_header"] = request_id_header
    config = {"worker_app": kind["app"], "worker_name": worker["name"], "worker_listeners": [listener]}
    if log_config:
        config["worker_log_config"] = log_config
    return config


def host_settings(workers, host, runs_main, main_address, replication_port, addresses, bind_addresses,
                  config_dir, log_dir, redis=None, replication_secret_path=None, request_id_header=None):
    """What the homeserver role writes on one host of a worker deployment (plain data).

    ``shared``: the settings merged into every process's homeserver.yaml
    (:func:`shared_config`); ``listeners``: the main process's extra listeners
    (its replication listener, on the host that runs it); ``workers``: the
    workers placed on ``host``, each ``{"name", "port", "config_file",
    "log_config_file", "log_file", "config"}``. Empty for no workers.
    """
    if not workers:
        return {"shared": {}, "listeners": [], "workers": []}
    shared = shared_config(workers, main_address, replication_port, addresses, redis=redis,
                           replication_secret_path=replication_secret_path)
    placed = []
    for worker in workers:
        if worker["host"] != host:
            continue
        log_config_file = "%s/workers/%s.log_config.yaml" % (config_dir, worker["name"])
        placed.append({
            "name": worker["name"], "port": worker["port"], "type": worker["type"],
            "config_file": "%s/workers/%s.yaml" % (config_dir, worker["name"]),
            "log_config_file": log_config_file,
            "log_file": "%s/%s.log" % (log_dir, worker["name"]),
            "config": worker_config(worker, bind_addresses, log_config_file, request_id_header),
        })
    listeners = [main_replication_listener(bind_addresses, replication_port)] if runs_main else []
    return {"shared": shared, "listeners": listeners, "workers": placed}


def main_replication_listener(bind_addresses, port):
    """The main process's extra listener in a worker deployment: ``replication`` only.

    Workers reach it at ``instance_map.main``; it must bind an address they
    reach (never a public one) and is not for the proxy.
    """
    if not bind_addresses:
        raise WorkerError("the main process's replication listener needs an address to bind")
    return {"type": "http", "port": int(port), "bind_addresses": list(bind_addresses), "x_forwarded": False,
            "resources": [{"names": ["replication"], "compress": False}]}
