"""Synapse workers through every runnable proxy flavour (docs/workers.md, contract MX16).

Each request carries a unique marker; the Synapse process whose own access log
shows it served it (conftest.Deployment.served_by). Requests go through one
proxy host at a time, from the main process's host.
"""

import asyncio
import json
import socket
import uuid

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver
from conftest import CLIENT_HOST, FLAVOURS, PASSWORD, marker, wait_until, with_marker
from nio import AsyncClient, JoinResponse, LoginResponse, RoomMessagesResponse, UploadResponse

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


def _request(hs, proxy, token, endpoint, room, mark):
    base, method, path, body, _kind = CLASSES[endpoint]
    path = with_marker(path.format(room=room, user="@prober:example.test", txn=mark), mark)
    args = ["-X", method, "-H", f"Authorization: Bearer {token}"]
    if body is not None:
        args += ["-H", "Content-Type: application/json" if body.startswith("{") else "Content-Type: text/plain",
                 "--data-binary", body]
    return hs.curl(base + path, *args, proxy_ip=proxy.ip)


@pytest.mark.parametrize("endpoint", sorted(CLASSES))
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_each_class_is_served_by_its_workers(hs, proxies, deployment, prober, probe_room, flavour, endpoint):
    """MX16: a request of each endpoint class reaches a worker of its pool through the proxy, not the main process."""
    mark = marker()
    status, _headers, body = _request(hs, proxies[flavour], prober[flavour], endpoint, probe_room, mark)
    assert status == 200, (status, body[:300])
    served = deployment.served_by(mark)
    expected = deployment.pool(CLASSES[endpoint][4])
    assert served and served <= expected, (endpoint, served, expected)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_sync_sticks_to_one_worker_per_user(hs, proxies, deployment, flavour):
    """MX16 sticky by user: one access token's syncs stay on one sync worker; tokens spread over both."""
    hs.register("sticky")
    proxy = proxies[flavour]
    tokens = [hs.login("sticky", proxy.ip) for _index in range(10)]
    seen = set()
    for token in tokens:
        marks = [marker() for _index in range(3)]
        results = hs.curl_many([(f"{CLIENT}{with_marker('/_matrix/client/v3/sync?timeout=0', mark)}",
                                 ["-H", f"Authorization: Bearer {token}"]) for mark in marks], proxy_ip=proxy.ip)
        assert all(result[0] == 200 for result in results), [result[0] for result in results]
        servers = set().union(*(deployment.served_by(mark) for mark in marks))
        assert len(servers) == 1 and servers <= deployment.pool("sync"), servers
        seen |= servers
    assert seen == deployment.pool("sync"), f"10 users' syncs all reached {seen}"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_room_pagination_sticks_to_one_worker_per_room(hs, proxies, deployment, prober, flavour):
    """MX16 sticky by room: one room's /messages stay on one client reader; rooms spread over both."""
    proxy = proxies[flavour]
    auth = ["-H", f"Authorization: Bearer {prober[flavour]}"]
    rooms = []
    for _index in range(8):
        status, _headers, body = hs.curl(f"{CLIENT}/_matrix/client/v3/createRoom", "-X", "POST", *auth,
                                         "-H", "Content-Type: application/json", "--data", "{}", proxy_ip=proxy.ip)
        assert status == 200, body
        rooms.append(json.loads(body)["room_id"])
    seen = set()
    for room in rooms:
        marks = [marker() for _index in range(3)]
        results = hs.curl_many([(f"{CLIENT}{with_marker(f'/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1', mark)}",
                                 auth) for mark in marks], proxy_ip=proxy.ip)
        assert all(result[0] == 200 for result in results), [result[0] for result in results]
        servers = set().union(*(deployment.served_by(mark) for mark in marks))
        assert len(servers) == 1 and servers <= deployment.pool("client_reader"), servers
        seen |= servers
    assert seen == deployment.pool("client_reader"), f"8 rooms' pagination all reached {seen}"


def test_a_pool_down_falls_back_to_the_main_process_and_back(hs, proxies, deployment, prober):
    """MX16: with every sync worker stopped, /sync is the main process's; started again, the pool's again."""
    def served(flavour):
        mark = marker()
        status, _headers, _body = hs.curl(f"{CLIENT}{with_marker('/_matrix/client/v3/sync?timeout=0', mark)}",
                                          "-H", f"Authorization: Bearer {prober[flavour]}", proxy_ip=proxies[flavour].ip)
        return status, deployment.served_by(mark)

    deployment.set_state("sync", "stop")
    try:
        for flavour in FLAVOURS:
            assert wait_until(lambda flavour=flavour: served(flavour) == (200, {"main"}), timeout=45), (flavour, served(flavour))
    finally:
        deployment.set_state("sync", "start")
    for flavour in FLAVOURS:
        assert wait_until(lambda flavour=flavour: served(flavour)[1] <= deployment.pool("sync") and served(flavour)[0] == 200,
                          timeout=60), (flavour, served(flavour))


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
    client = AsyncClient(base_url, user, ssl=ssl_context)
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
        for _attempt in range(30):
            await alice.sync(timeout=1000, full_state=False)
            if any(getattr(event, "body", None) == reply for event in alice.rooms.get(room, None).timeline.events
                   if alice.rooms.get(room)):
                break
            await asyncio.sleep(1)
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
    inbound = hs.run(f"grep -c 'PUT /_matrix/federation/v1/send/' /var/log/synapse/homeserver.log").stdout.strip()
    assert inbound in ("0", ""), f"the main process served {inbound} federation transactions"
    hsw_inbound = deployment.by_host["workers-hsw"].run(
        "grep -c 'PUT /_matrix/federation/v1/send/' /var/log/synapse/federation_inbound.log").stdout.strip()
    assert int(hsw_inbound or 0) > 0, "the inbound federation worker served no transaction"


def _register_other(other):
    secret = other.vars["homeserver_registration_shared_secret"]
    other.run(f"/opt/synapse/venv/bin/register_new_matrix_user --exists-ok -u bob -p {PASSWORD} --no-admin "
              f"-k {secret} http://127.0.0.1:8008 || true")
