"""Synapse workers through every runnable proxy flavour (docs/workers.md, contract MX16).

Each request carries a unique marker; the Synapse process whose own access log
shows it served it (conftest.Deployment.served_by). Requests go through one
proxy host at a time, from the main process's host.
"""

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import uuid

import aiohttp
import pytest
import yaml
from aiohttp.abc import AbstractResolver
from conftest import CLIENT_HOST, EPHEMERAL, FLAVOURS, INVENTORY, PASSWORD, ROOT, SCENARIO, marker, wait_until, with_marker
from nio import AsyncClient, AsyncClientConfig, JoinResponse, LoginResponse, RoomMessagesResponse, SyncResponse, UploadResponse

CLIENT = f"https://{CLIENT_HOST}"
FEDERATION = f"https://{CLIENT_HOST}:8448"

# Endpoint class -> (base URL, method, path (room, user, txn filled in), body, worker type that must serve it).
CLASSES = {
    "sync": (CLIENT, "GET", "/_matrix/client/v3/sync?timeout=0", None, "sync"),
    "client_reader": (CLIENT, "GET", "/_matrix/client/v3/joined_rooms", None, "client_reader"),
    "room_messages": (CLIENT, "GET", "/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1", None, "client_reader"),
    "event_creation": (CLIENT, "PUT", "/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}",
                       '{"msgtype":"m.text","body":"routed"}', "event_creator"),
    "typing": (CLIENT, "PUT", "/_matrix/client/v3/rooms/{room}/typing/{user}", '{"typing":true,"timeout":1000}',
               "stream_writer"),
    "account_data": (CLIENT, "PUT", "/_matrix/client/v3/user/{user}/account_data/org.mxedge.probe", '{"probe":1}',
                     "stream_writer"),
    "media_upload": (CLIENT, "POST", "/_matrix/media/v3/upload?filename=probe.txt", "probe", "media_repository"),
    "media_v1": (CLIENT, "GET", "/_matrix/client/v1/media/config", None, "media_repository"),
    "federation_reader": (FEDERATION, "GET", "/_matrix/federation/v1/version", None, "federation_reader"),
}


def _request(endpoint, token, room, mark):
    """(url, curl args) of one request of an endpoint class, carrying mark."""
    base, method, path, body, _kind = CLASSES[endpoint]
    path = with_marker(path.format(room=room, user="@prober:example.test", txn=mark), mark)
    args = ["-X", method, "-H", f"Authorization: Bearer {token}"]
    if body is not None:
        args += ["-H", "Content-Type: application/json" if body.startswith("{") else "Content-Type: text/plain",
                 "--data-binary", body]
    return base + path, args


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_each_class_is_served_by_its_workers(hs, proxies, deployment, prober, probe_room, flavour):
    """MX16: a request of each endpoint class reaches a worker of its pool through the proxy, never the main process."""
    endpoints = sorted(CLASSES)
    marks = {endpoint: marker() for endpoint in endpoints}
    results = hs.curl_many([_request(endpoint, prober[flavour], probe_room, marks[endpoint]) for endpoint in endpoints],
                           proxy_ip=proxies[flavour].ip)
    served = deployment.served_by_many(list(marks.values()))
    problems = []
    for endpoint, (status, _headers, body) in zip(endpoints, results):
        expected = deployment.pool(CLASSES[endpoint][4])
        got = served[marks[endpoint]]
        if status != 200 or not got or not got <= expected:
            problems.append((endpoint, status, body[:200], sorted(got), sorted(expected)))
    assert not problems, problems


def _sticky(hs, proxy, deployment, requests, kind):
    """Three requests per key (requests: key -> (url, curl args) with {mark} in the URL): {key: the processes that served it}."""
    marks = {key: [marker() for _index in range(3)] for key in requests}
    batch = [(requests[key][0].format(mark=mark), requests[key][1]) for key in requests for mark in marks[key]]
    results = hs.curl_many(batch, proxy_ip=proxy.ip)
    assert all(result[0] == 200 for result in results), [(result[0], result[2][:200]) for result in results]
    served = deployment.served_by_many([mark for key in marks for mark in marks[key]])
    by_key = {key: set().union(*(served[mark] for mark in marks[key])) for key in marks}
    for key, servers in by_key.items():
        assert len(servers) == 1 and servers <= deployment.pool(kind), (key, servers)
    return set().union(*by_key.values())


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_sync_sticks_to_one_worker_per_user(hs, proxies, deployment, flavour):
    """MX16 sticky by user: one access token's syncs stay on one sync worker; ten tokens spread over both."""
    hs.register("sticky")
    proxy = proxies[flavour]
    tokens = hs.login("sticky", proxy.ip, count=10)
    requests = {token: (f"{CLIENT}/_matrix/client/v3/sync?timeout=0&mxprobe={{mark}}", ["-H", f"Authorization: Bearer {token}"])
                for token in tokens}
    seen = _sticky(hs, proxy, deployment, requests, "sync")
    assert seen == deployment.pool("sync"), f"10 users' syncs all reached {seen}"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_room_pagination_sticks_to_one_worker_per_room(hs, proxies, deployment, prober, flavour):
    """MX16 sticky by room: one room's /messages stay on one client reader; eight rooms spread over both."""
    proxy = proxies[flavour]
    auth = ["-H", f"Authorization: Bearer {prober[flavour]}"]
    created = hs.curl_many([(f"{CLIENT}/_matrix/client/v3/createRoom",
                             ["-X", "POST", *auth, "-H", "Content-Type: application/json", "--data", "{}"])] * 8,
                           proxy_ip=proxy.ip)
    assert all(status == 200 for status, _headers, _body in created), [body for _status, _headers, body in created]
    rooms = [json.loads(body)["room_id"] for _status, _headers, body in created]
    requests = {room: (f"{CLIENT}/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1&mxprobe={{mark}}", auth)
                for room in rooms}
    seen = _sticky(hs, proxy, deployment, requests, "client_reader")
    assert seen == deployment.pool("client_reader"), f"8 rooms' pagination all reached {seen}"


def test_a_pool_down_falls_back_to_the_main_process_and_back(hs, proxies, deployment, prober):
    """MX16: with every sync worker stopped, /sync is the main process's through every proxy; started again, the pool's."""
    def served():
        """flavour -> (status, processes) of one /sync through each proxy (one command for all four)."""
        marks = {flavour: marker() for flavour in FLAVOURS}
        requests = []
        for flavour in FLAVOURS:
            resolve = ["--resolve", f"{CLIENT_HOST}:443:{proxies[flavour].ip}"]
            requests.append((f"{CLIENT}{with_marker('/_matrix/client/v3/sync?timeout=0', marks[flavour])}",
                             ["-H", f"Authorization: Bearer {prober[flavour]}", *resolve]))
        results = hs.curl_many(requests)
        by_mark = deployment.served_by_many(list(marks.values()))
        return {flavour: (result[0], by_mark[marks[flavour]]) for flavour, result in zip(FLAVOURS, results)}

    deployment.set_state("sync", "stop")
    try:
        assert wait_until(lambda: all(value == (200, {"main"}) for value in served().values()), timeout=45), served()
    finally:
        deployment.set_state("sync", "start")
    pool = deployment.pool("sync")
    assert wait_until(lambda: all(status == 200 and by and by <= pool for status, by in served().values()), timeout=60), served()


# --- a real client library through each proxy: federation with other.test, messages, media ---


class _StaticResolver(AbstractResolver):
    def __init__(self, mapping):
        self.mapping = mapping

    async def resolve(self, host, port=0, family=0):
        return [{"hostname": host, "host": self.mapping[host], "port": port, "family": socket.AF_INET, "proto": 0,
                 "flags": socket.AI_NUMERICHOST}]

    async def close(self):
        pass


def _client(base_url, user, ssl_context, mapping):
    # A 429 or a timeout fails the test at once (nio would wait out retry_after_ms, minutes).
    client = AsyncClient(base_url, user, ssl=ssl_context, config=AsyncClientConfig(max_limit_exceeded=0, max_timeouts=0))
    client.client_session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(resolver=_StaticResolver(mapping)), timeout=aiohttp.ClientTimeout(total=120))
    return client


async def _story(flavour, proxy_ip, other_ip, ssl_context):
    alice = _client(CLIENT, f"@alice_{flavour}:example.test", ssl_context, {CLIENT_HOST: proxy_ip})
    bob = _client("https://other.test", "@bob:other.test", ssl_context, {"other.test": other_ip})
    try:
        assert isinstance(await alice.login(PASSWORD), LoginResponse)
        assert isinstance(await bob.login(PASSWORD), LoginResponse)
        created = await bob.room_create(invite=[alice.user_id])
        room = created.room_id
        assert isinstance(await alice.join(room), JoinResponse)
        text = f"hello from {flavour} {uuid.uuid4().hex}"
        await alice.room_send(room, "m.room.message", {"msgtype": "m.text", "body": text})
        upload, _keys = await alice.upload(lambda *_args: b"media through " + flavour.encode(), content_type="text/plain",
                                           filename="probe.txt", filesize=len(b"media through " + flavour.encode()))
        assert isinstance(upload, UploadResponse), upload
        downloaded = await alice.download(upload.content_uri)
        assert downloaded.body == b"media through " + flavour.encode(), downloaded

        async def bob_sees():
            for _attempt in range(30):
                messages = await bob.room_messages(room, start="", limit=20)
                if isinstance(messages, RoomMessagesResponse) and any(
                        getattr(event, "body", None) == text for event in messages.chunk):
                    return True
                await asyncio.sleep(1)
            return False
        assert await bob_sees(), "bob on other.test never received alice's message over federation"
        reply = f"reply to {flavour} {uuid.uuid4().hex}"
        await bob.room_send(room, "m.room.message", {"msgtype": "m.text", "body": reply})
        since = None
        for _attempt in range(30):
            response = await alice.sync(timeout=1000, since=since)
            assert isinstance(response, SyncResponse), response
            since = response.next_batch
            joined = response.rooms.join.get(room)
            if joined and any(getattr(event, "body", None) == reply for event in joined.timeline.events):
                break
        else:
            pytest.fail("alice never synced bob's reply through " + flavour)
    finally:
        await alice.close()
        await bob.close()


@pytest.fixture(scope="session")
def ssl_context(test_ca):
    import ssl  # pylint: disable=import-outside-toplevel
    return ssl.create_default_context(cafile=test_ca)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_federation_messages_and_media_with_a_client_library(hs, other, proxies, deployment, ssl_context, flavour):
    """MX16 end to end: matrix-nio through the proxy joins a room of other.test over federation, sends, syncs,
    uploads and downloads; other.test's transactions reached the inbound federation worker, not the main process."""
    hs.register(f"alice_{flavour}")
    other.run("true")
    _register_other(other)
    asyncio.run(_story(flavour, proxies[flavour].ip, other.ip, ssl_context))
    inbound = hs.run("grep -c 'PUT /_matrix/federation/v1/send/' /var/log/synapse/homeserver.log").stdout.strip()
    assert inbound in ("0", ""), f"the main process served {inbound} federation transactions"
    hsw_inbound = deployment.by_host["workers-hsw"].run(
        "grep -c 'PUT /_matrix/federation/v1/send/' /var/log/synapse/federation_inbound.log").stdout.strip()
    assert int(hsw_inbound or 0) > 0, "the inbound federation worker served no transaction"


def _register_other(other):
    secret = other.vars["homeserver_registration_shared_secret"]
    other.run(f"/opt/synapse/venv/bin/register_new_matrix_user --exists-ok -u bob -p {PASSWORD} --no-admin "
              f"-k {secret} http://127.0.0.1:8008 || true")


# --- the upgrade the side effect ran (side_effect.yml): previous release -> the role's pin ---


@pytest.fixture(scope="session")
def upgrade():
    record = EPHEMERAL / "upgrade.json"
    assert record.exists(), "the side effect (side_effect.yml: the upgrade) has not run"
    return json.loads(record.read_text())


def test_upgrade_reached_every_process(hs, deployment, upgrade):
    """The deployment ran the previous release and runs the role's pin now: main process and every worker."""
    pinned = yaml.safe_load((ROOT / "roles/homeserver/defaults/main.yml").read_text())["homeserver_version"]
    assert upgrade["before"] == hs.vars["homeserver_version"] != pinned
    assert upgrade["after"] == pinned
    versions = {}
    for worker in deployment.workers:
        if worker["type"] in ("federation_sender", "pusher", "appservice", "background", "media_repository"):
            continue  # no federation resource on the listener
        host = deployment.by_host[worker["host"]]
        out = host.run(f"curl -sS http://localhost:{worker['port']}/_matrix/federation/v1/version").stdout
        versions[worker["name"]] = json.loads(out)["server"]["version"]
    versions["main"] = json.loads(hs.run("curl -sS http://hs.internal:8008/_matrix/federation/v1/version").stdout)["server"]["version"]
    assert set(versions.values()) == {pinned}, versions


def test_upgrade_lost_no_data(upgrade):
    """A message sent through the proxy before the upgrade is read back through it afterwards."""
    assert "written before the upgrade" in upgrade["messages"], upgrade["messages"]


def test_the_proxy_answered_matrix_during_the_upgrade(upgrade):
    """MX11 during the upgrade: every probe through the proxy got an answer, 200 or a Matrix error, none a dropped connection."""
    probes = upgrade["probes"]
    assert len(probes) > 20, f"only {len(probes)} probes ran during the upgrade"
    dropped = [probe for probe in probes if "error" in probe]
    assert not dropped, dropped[:5]
    bad = [probe for probe in probes if probe["status"] != 200 and not (probe["status"] in (502, 503, 504) and probe["json"]
                                                                        and probe["errcode"])]
    assert not bad, bad[:5]
    assert probes[-1]["status"] == 200, probes[-5:]
    # Not a pass condition (answers held during the restart are answers): the longest wait, in the log.
    print("longest answer during the upgrade: %.1f s" % max(probe["seconds"] for probe in probes))


# --- check mode on the converged deployment (after the upgrade: the role's pin) ---


_RECAP = re.compile(r"^(?P<host>\S+)\s*:\s*ok=\d+\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
                    r"\s+failed=(?P<failed>\d+)", re.MULTILINE)


def test_check_mode_reports_no_change():
    """--check --diff of the converge playbook (every host, the pinned release) runs through and reports 0 changed."""
    pinned = yaml.safe_load((ROOT / "roles/homeserver/defaults/main.yml").read_text())["homeserver_version"]
    command = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", INVENTORY,
               "-e", json.dumps({"homeserver_version": pinned}), str(SCENARIO / "converge.yml"), "--check", "--diff"]
    proc = subprocess.run(command, env=dict(os.environ, ANSIBLE_FORCE_COLOR="0"), capture_output=True, text=True,
                          timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    recap = {match["host"]: match for match in _RECAP.finditer(proc.stdout)}
    assert len(recap) == 7, proc.stdout[-2000:]
    changed = {host: match["changed"] for host, match in recap.items() if match["changed"] != "0" or match["failed"] != "0"}
    assert not changed, proc.stdout[-4000:]
