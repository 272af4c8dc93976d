"""End to end through one proxy flavour: the behaviour list of DESIGN.md.

hs1 (Debian 12) serves example.test, delegated to matrix.example.test:443
(single-port); hs2 (Debian 13) serves other.test with federation on 8448 and no
delegation. Requests run from the *other* container, so the client address the
homeserver must log is a real container address.
"""

import asyncio
import json
import re
import socket
import time
import urllib.parse
import uuid

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver
from conftest import (
    HOST_CA_PATH,
    assert_check_mode_reports_no_change,
    federation_check,
    play_recap,
    port_open,
    resolve_map,
    run_converge,
)
from nio import AsyncClient, JoinResponse, LoginResponse, RoomCreateResponse, RoomResolveAliasResponse, SyncResponse

PASSWORD = "mxedge-e2e-password"
SYNC_MARKER = "/tmp/mxedge-sync65"


# --- a 65 s /sync long-poll runs in the background while the other tests run ---


def test_start_long_poll(hs1, hs2):
    """Start a /sync with a 65 s timeout from hs2 for a user with nothing to sync."""
    hs1.register("sleeper", PASSWORD)
    token = hs2.login_to(hs1, "sleeper", PASSWORD)
    # Nothing may wake this sync early: no rooms, and presence (which Synapse
    # updates on its own timers) filtered out.
    query = "set_presence=offline&filter=%7B%22presence%22%3A%7B%22not_types%22%3A%5B%22%2A%22%5D%7D%7D"
    status, _headers, body = hs2.curl(f"{hs1.base_url}_matrix/client/v3/sync?timeout=0&{query}", "-H", f"Authorization: Bearer {token}")
    assert status == 200, body
    since = json.loads(body)["next_batch"]
    url = f"{hs1.base_url}_matrix/client/v3/sync?timeout=65000&since={since}&{query}"
    hs2.host.run(
        f"rm -f {SYNC_MARKER}.*; setsid nohup sh -c \"curl -sS --max-time 150 -o {SYNC_MARKER}.body "
        f"-w '%{{http_code}} %{{time_total}}' -H 'Authorization: Bearer {token}' '{url}' > {SYNC_MARKER}.status.tmp; "
        f"mv {SYNC_MARKER}.status.tmp {SYNC_MARKER}.status\" >/dev/null 2>&1 &"
    )


# --- federation through the proxies, driven by a real client library ---


class _StaticResolver(AbstractResolver):
    def __init__(self, mapping):
        self.mapping = mapping

    async def resolve(self, host, port=0, family=0):
        return [{"hostname": host, "host": self.mapping[host], "port": port, "family": socket.AF_INET, "proto": 0,
                 "flags": socket.AI_NUMERICHOST}]

    async def close(self):
        pass


def _client(node, user, ssl_context, mapping):
    client = AsyncClient(node.base_url.rstrip("/"), user, ssl=ssl_context)
    client.client_session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(resolver=_StaticResolver(mapping)),
        timeout=aiohttp.ClientTimeout(total=120),
    )
    return client


async def _wait_for_message(client, room_id, body, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = await client.sync(timeout=5000, full_state=False)
        assert isinstance(response, SyncResponse), response
        room = response.rooms.join.get(room_id)
        if room and any(getattr(event, "body", None) == body for event in room.timeline.events):
            return True
    return False


async def _federation_story(hs1, hs2, ssl_context):
    mapping = resolve_map(hs1, hs2)
    alice = _client(hs1, "alice", ssl_context, mapping)
    bob = _client(hs2, "bob", ssl_context, mapping)
    try:
        assert isinstance(await alice.login(PASSWORD), LoginResponse)
        assert isinstance(await bob.login(PASSWORD), LoginResponse)
        await alice.sync(timeout=0)
        await bob.sync(timeout=0)

        alias_local = f"mxedge/e2e/{uuid.uuid4().hex[:8]}"
        created = await alice.room_create(invite=[bob.user_id], name="mxedge e2e")
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id

        # A room alias with '/' in it: %2F must reach the homeserver intact.
        alias = f"#{alias_local}:{hs1.server_name}"
        put = await alice.room_put_alias(alias, room_id)
        assert put.__class__.__name__ == "RoomPutAliasResponse", put
        resolved = await alice.room_resolve_alias(alias)
        assert isinstance(resolved, RoomResolveAliasResponse) and resolved.room_id == room_id, resolved

        # other.test joins over federation: hs2 finds hs1 only through
        # https://example.test/.well-known/matrix/server (nothing on :8448).
        joined = await bob.join(room_id)
        assert isinstance(joined, JoinResponse), joined
        # The alias with '/' resolves from the other server too, over federation.
        resolved = await bob.room_resolve_alias(alias)
        assert isinstance(resolved, RoomResolveAliasResponse) and resolved.room_id == room_id, resolved

        from_bob = f"hello from {hs2.server_name} {uuid.uuid4().hex}"
        await bob.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": from_bob})
        assert await _wait_for_message(alice, room_id, from_bob), "hs1 never received hs2's message"

        from_alice = f"hello from {hs1.server_name} {uuid.uuid4().hex}"
        await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": from_alice})
        assert await _wait_for_message(bob, room_id, from_alice), "hs2 never received hs1's message"
    finally:
        await alice.close()
        await bob.close()


def test_federation_join_and_messages_both_ways(hs1, hs2, ssl_context):
    hs1.register("alice", PASSWORD)
    hs2.register("bob", PASSWORD)
    # Delegation is the only way in: hs1 has nothing on the default federation port.
    assert not port_open(hs1.ip, 8448)
    asyncio.run(_federation_story(hs1, hs2, ssl_context))


# --- well-known documents served by the proxy itself ---


def test_well_known_bodies_are_the_filter_output(hs1, hs2, module_utils):
    expected = {
        "server": module_utils.well_known_server_body(f"{hs1.fqdn}:443").encode(),
        "client": module_utils.well_known_client_body(hs1.base_url).encode(),
    }
    for kind, body in expected.items():
        status, headers, served = hs2.curl(f"https://{hs1.server_name}/.well-known/matrix/{kind}")
        assert status == 200
        assert served == body, (kind, served, body)
        assert headers["content-type"].split(";")[0] == "application/json"
        assert headers["access-control-allow-origin"] == "*"
    # hs2 does not delegate: servers fall back to other.test:8448.
    status, _headers, _body = hs1.curl(f"https://{hs2.server_name}/.well-known/matrix/server")
    assert status == 404


def test_health_through_the_proxy(hs1, hs2):
    status, _headers, body = hs2.curl(f"{hs1.base_url}health")
    assert (status, body) == (200, b"OK")
    status, _headers, body = hs1.curl(f"{hs2.base_url}health")
    assert (status, body) == (200, b"OK")


def test_federation_listener_serves_only_matrix_paths(hs1, hs2):
    status, _headers, body = hs1.curl(f"https://{hs2.server_name}:8448/_matrix/federation/v1/version")
    assert status == 200 and b"server" in body
    status, _headers, _body = hs1.curl(f"https://{hs2.server_name}:8448/_synapse/client/password_reset/email/submit_token")
    assert status == 404


# --- forwarded headers: the homeserver logs the real client, never a forged one ---


@pytest.mark.parametrize("direction", ["hs2->hs1 client port", "hs1->hs2 federation port"])
def test_forged_forwarded_for_is_overwritten(hs1, hs2, homeserver_log, direction):
    client, server = (hs2, hs1) if direction.startswith("hs2") else (hs1, hs2)
    base = server.base_url if server is hs1 else f"https://{server.server_name}:8448/"
    path = "_matrix/client/versions" if server is hs1 else "_matrix/federation/v1/version"
    probe = uuid.uuid4().hex
    status, _headers, _body = client.curl(
        f"{base}{path}?mxedge_probe={probe}",
        "-H", "X-Forwarded-For: 203.0.113.66", "-H", "X-Request-ID: forged-request-id",
    )
    assert status == 200
    assert server.wait_until(lambda: probe in server.host.check_output(f"grep -h {probe} {homeserver_log} || true"), 20)
    line = server.host.check_output(f"grep -h {probe} {homeserver_log}")
    assert "203.0.113.66" not in line
    assert f" - {client.ip} - " in line, line
    # The proxy generated the request ID the homeserver logs (not the client's, not Synapse's own).
    request_id = re.search(r" - INFO - (\S+) - ", line).group(1)
    assert request_id != "forged-request-id" and not re.fullmatch(r"[A-Z]+-\d+", request_id), line


# --- the URI goes upstream as received ---


def test_encoded_slash_reaches_the_homeserver(hs1, hs2):
    # An alias that cannot exist: Synapse answers M_NOT_FOUND for the decoded
    # alias only if %2F arrived intact; a decoded '/' would give an unknown path.
    status, _headers, body = hs2.curl(f"{hs1.base_url}_matrix/client/v3/directory/room/%23no%2Fsuch%2Falias%3Aexample.test")
    assert status == 404 and json.loads(body)["errcode"] == "M_NOT_FOUND", body


# --- mxedge.matrix.federation_check: the spec's discovery and checks, run from the other host ---

# (checking host, checked host, method, host, port): hs1 is delegated through its
# well-known to matrix.example.test:443; hs2 has no well-known (404) and Docker's
# DNS no SRV records, so other servers fall back to other.test:8448.
FEDERATION_DIRECTIONS = {
    "hs2->example.test": ("hs2", "hs1", "well_known_explicit_port", "matrix.example.test", 443),
    "hs1->other.test": ("hs1", "hs2", "fallback", "other.test", 8448),
}


@pytest.mark.parametrize("direction", list(FEDERATION_DIRECTIONS))
def test_federation_check_module_passes(hs1, hs2, direction):
    nodes = {"hs1": hs1, "hs2": hs2}
    client_key, server_key, method, host, port = FEDERATION_DIRECTIONS[direction]
    client, server = nodes[client_key], nodes[server_key]
    failed, result = federation_check(client, server.server_name)
    assert not failed, result.get("msg", result)
    assert result["changed"] is False
    assert (result["method"], result["host"], result["port"], result["cert_name"]) == (method, host, port, host)
    assert result["passed"] is True and result["failed_checks"] == []
    names = {check["name"] for check in result["checks"] if check["address"]}
    assert names == {"tls", "key", "version", "encoded_slash"}, result["checks"]
    assert all(check["passed"] for check in result["checks"]), result["checks"]
    # The encoded-slash probe was conclusive (not skipped) on every address.
    assert not any(check["skipped"] for check in result["checks"] if check["name"] == "encoded_slash"), result["checks"]
    steps = [step["step"] for step in result["steps"]]
    if server is hs1:
        assert result["well_known"]["m_server"] == f"{server.fqdn}:443"
        assert "srv" not in steps  # an explicit port in m.server skips SRV
        client_check = [check for check in result["checks"] if check["name"] == "client_well_known"]
        assert client_check and not client_check[0]["skipped"], client_check
    else:
        assert result["well_known"]["status"] == 404
        srv = [step for step in result["steps"] if step["step"] == "srv"]
        assert [step["name"] for step in srv] == ["_matrix-fed._tcp.other.test", "_matrix._tcp.other.test"]
        assert all(not step["records"] for step in srv), srv


def test_federation_check_module_runs_in_check_mode(hs1, hs2):
    result = hs2.host.ansible(
        "mxedge.matrix.federation_check",
        json.dumps({"server_name": hs1.server_name, "ca_path": HOST_CA_PATH,
                    "checks": ["tls", "key"]}),
        check=True,
    )
    assert result["changed"] is False and result["passed"] is True
    assert {check["name"] for check in result["checks"] if check["address"]} == {"tls", "key"}


@pytest.mark.parametrize(
    ("server_name", "failed_check", "words"),
    [
        # Explicit port: no well-known, no SRV; nothing listens on hs1:8448.
        ("example.test:8448", "tls", "connection refused"),
        # No such host anywhere: no well-known, no SRV, no address for the fallback.
        ("nosuch.example.test", "addresses", "no AAAA or A record"),
    ],
)
def test_federation_check_module_fails_readably(hs1, hs2, server_name, failed_check, words):
    failed, result = federation_check(hs2, server_name, timeout=5)
    assert failed, result
    assert result["msg"].startswith(f"federation check failed for {server_name}"), result["msg"]
    assert words in result["msg"], result["msg"]
    assert any(check["name"] == failed_check and not check["passed"] for check in result["checks"]), result["checks"]


def test_encoded_slash_probe_tells_decoded_from_raw(hs1, federation_utils):
    """The module's %2F probe against Synapse itself: what an undecoding and a decoding proxy would send."""
    raw = federation_utils.SLASH_PROBE_PATH
    status, _headers, body = hs1.homeserver_local(raw)
    assert status == 200 and json.loads(body)["server_name"] == hs1.server_name, body
    status, _headers, body = hs1.homeserver_local(urllib.parse.unquote(raw))
    assert status in (400, 404) and b"server_name" not in body, (status, body)
    status, _headers, body = hs1.homeserver_local(federation_utils.SLASH_CONTROL_PATH)
    assert status == 200, body


# --- admin paths ---

ADMIN_DENIED = [
    "/_synapse/admin/v1/server_version",
    "/_synapse/%61dmin/v1/server_version",
    "/_synapse/admin/v1/server%5Fversion",
    "/_matrix/../_synapse/admin/v1/server_version",
    "/_synapse/client/../admin/v1/server_version",
    "/_synapse/./admin/v1/server_version",
]
ADMIN_NEVER_OK = ADMIN_DENIED + [
    "//_synapse/admin/v1/server_version",
    "/_synapse//admin/v1/server_version",
    "/_synapse/admin%2Fv1%2Fserver_version",
    "/_matrix/%2e%2e/_synapse/admin/v1/server_version",
    # Normalises to /_matrix/client/versions, but forwarded raw it is an admin
    # route with an encoded user ID: a proxy must check the raw URI too.
    "/_synapse/admin/v2/users/%2E%2E%2F%2E%2E%2F%2E%2E%2F%2E%2E%2F_matrix%2Fclient%2Fversions",
]


def test_admin_api_reachable_directly(hs1):
    """The probe below is meaningful: Synapse itself answers it without auth."""
    status, _headers, body = hs1.homeserver_local("/_synapse/admin/v1/server_version")
    assert status == 200 and b"server_version" in body


@pytest.mark.parametrize("path", ADMIN_NEVER_OK)
def test_admin_paths_blocked_through_proxy(hs1, hs2, path):
    status, _headers, body = hs2.curl(f"https://{hs1.fqdn}{path}")
    # Synapse's admin API answers 200, or 401 M_MISSING_TOKEN without a token:
    # either means the request reached it.
    assert status not in (200, 401), (path, status, body)
    assert b"server_version" not in body and b"M_MISSING_TOKEN" not in body, (path, status, body)
    if path in ADMIN_DENIED:
        assert status == 403, (path, status, body)
    else:
        assert status in (400, 403, 404), (path, status, body)


def test_admin_paths_allowed_from_allow_listed_network(hs1):
    # hs1 allows 127.0.0.0/8: the same request from loopback is served.
    status, _headers, body = hs1.curl(
        f"https://{hs1.fqdn}/_synapse/admin/v1/server_version", "--resolve", f"{hs1.fqdn}:443:127.0.0.1"
    )
    assert status == 200 and b"server_version" in body


# --- uploads against the one shared limit ---


@pytest.fixture(scope="module")
def upload_token(hs1, hs2):
    hs1.register("uploader", PASSWORD)
    return hs2.login_to(hs1, "uploader", PASSWORD)


@pytest.mark.parametrize(("delta", "expected"), [(-4096, 200), (4096, 413)], ids=["just-under", "just-over"])
def test_upload_limit(hs1, hs2, upload_token, homeserver_log, delta, expected):
    size = int(hs1.vars["matrix_max_upload_size_mb"]) * 1048576 + delta
    probe = uuid.uuid4().hex
    hs2.host.run(f"head -c {size} /dev/urandom > /tmp/mxedge-upload.bin")
    status, _headers, body = hs2.curl(
        f"{hs1.base_url}_matrix/media/v3/upload?filename={probe}.bin", "-X", "POST",
        "-H", f"Authorization: Bearer {upload_token}", "-H", "Content-Type: application/octet-stream",
        data_file="/tmp/mxedge-upload.bin", timeout=120,
    )
    assert status == expected, body[:300]

    def logged():
        return probe in hs1.host.check_output(f"grep -h {probe} {homeserver_log} || true")

    if expected == 200:
        assert json.loads(body)["content_uri"].startswith("mxc://")
        assert hs1.wait_until(logged, 20)
    else:
        # Refused by the proxy: the homeserver never saw the request (it logs
        # every request it answers, its own 413 M_TOO_LARGE included).
        time.sleep(3)
        assert not logged(), "the homeserver received the over-limit upload"


# --- the long-poll started first; before anything stops the homeserver ---


def test_long_poll_was_not_cut(hs2):
    assert hs2.wait_until(lambda: hs2.host.file(f"{SYNC_MARKER}.status").exists, 150, 2)
    status, seconds = hs2.host.file(f"{SYNC_MARKER}.status").content_string.split()
    assert status == "200", hs2.host.file(f"{SYNC_MARKER}.body").content_string
    assert float(seconds) >= 64.0


# --- upstream down and back, without touching the proxy ---


def test_homeserver_down_and_back(hs1, hs2, flavour, homeserver_service):
    proxy_pid = hs1.service_pid(flavour["service"])
    hs1.host.check_output(f"systemctl stop {homeserver_service}")
    try:
        status, _headers, _body = hs2.curl(f"{hs1.base_url}_matrix/client/versions")
        assert status in (502, 503), status
    finally:
        hs1.host.check_output(f"systemctl start {homeserver_service}")
    assert hs1.wait_until(lambda: hs2.curl(f"{hs1.base_url}_matrix/client/versions")[0] == 200, 120)
    assert hs1.service_pid(flavour["service"]) == proxy_pid


# --- a broken operator directive never takes the running proxy down ---


def test_broken_directive_keeps_old_config_live(hs1, hs2, flavour):
    tree = f"find {flavour['config_dir']} -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum"
    before = hs1.host.check_output(tree)
    proxy_pid = hs1.service_pid(flavour["service"])
    proc = run_converge({f"{flavour['name']}_client_vhost_extra": flavour["broken"]}, hs1.name)
    assert proc.returncode != 0
    assert flavour["error"] in proc.stdout + proc.stderr, proc.stdout[-3000:]
    assert hs1.host.check_output(tree) == before
    assert hs1.service_pid(flavour["service"]) == proxy_pid
    status, _headers, _body = hs2.curl(f"{hs1.base_url}_matrix/client/versions")
    assert status == 200


# --- check mode tells the truth: it changes nothing, and says what a run would change ---


def test_check_mode_on_converged_hosts_reports_no_change(hs1, hs2):
    assert_check_mode_reports_no_change(hs1, hs2)


def test_check_mode_previews_a_change_without_making_it(hs1, hs2, flavour, homeserver_service):
    # A new upload limit touches the proxy's configuration and homeserver.yaml.
    trees = f"find {flavour['config_dir']} /etc/synapse -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum"
    before = hs1.host.check_output(trees)
    pids = {service: hs1.service_pid(service) for service in (flavour["service"], homeserver_service)}
    new_limit = int(hs1.vars["matrix_max_upload_size_mb"]) + 1
    proc = run_converge({"matrix_max_upload_size_mb": new_limit}, hs1.name, check_mode=True)
    recap = play_recap(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert recap[hs1.name]["changed"] >= 2, proc.stdout[-3000:]
    assert f"max_upload_size: {new_limit}M" in proc.stdout, "the --diff of homeserver.yaml is missing"
    assert hs1.host.check_output(trees) == before
    assert {service: hs1.service_pid(service) for service in pids} == pids
    status, _headers, _body = hs2.curl(f"{hs1.base_url}_matrix/client/versions")
    assert status == 200
