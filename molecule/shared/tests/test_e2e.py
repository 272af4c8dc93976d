"""End to end through one proxy flavour: the proxy contract of docs/contract.md.

Each test names, first in its docstring, the behaviour IDs (MX01 ...) it proves.

hs1 (Debian 12) serves example.test, delegated to matrix.example.test:443
(single-port); hs2 (Debian 13) serves other.test with federation on 8448 and no
delegation. Requests run from the *other* container, so the client address the
homeserver must log is a real container address; hs2 is outside hs1's admin
allow-list (127.0.0.0/8), and hs2 allows nobody.

Every test stands alone: what it needs (users, tokens, the long-poll, a stopped
homeserver) comes from fixtures in conftest.py, so the tests pass one at a time
(-k) and in any order.
"""

import asyncio
import base64
import json
import re
import socket
import struct
import time
import urllib.parse
import uuid
import zlib

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver
from conftest import (
    HOST_CA_PATH,
    PASSWORD,
    assert_check_mode_reports_no_change,
    federation_check,
    play_recap,
    port_open,
    resolve_map,
    run_converge,
)
from nio import AsyncClient, JoinResponse, LoginResponse, RoomCreateResponse, RoomResolveAliasResponse, SyncResponse


# --- what a proxy answers itself (MX11): Matrix JSON that a web client can read ---

# errcode of each status a proxy answers itself.
PROXY_ERRCODES = {403: "M_FORBIDDEN", 404: "M_UNRECOGNIZED", 413: "M_TOO_LARGE",
                  502: "M_UNKNOWN", 503: "M_UNKNOWN", 504: "M_UNKNOWN"}


def matrix_error_problems(response, statuses):
    """What is wrong with `response` as a Matrix error the proxy produced (MX11); [] when nothing.

    Status one of `statuses`; Content-Type application/json; a JSON object with
    the status's errcode and an `error` string; Access-Control-Allow-Origin: *.
    """
    status, headers, body = response
    if status not in statuses:
        return [f"status {status}, expected one of {sorted(statuses)}"]
    problems = []
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        problems.append(f"Content-Type {headers.get('content-type')!r}, expected application/json")
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        problems.append("body is not a JSON object")
    else:
        if document.get("errcode") != PROXY_ERRCODES[status]:
            problems.append(f"errcode {document.get('errcode')!r}, expected {PROXY_ERRCODES[status]}")
        if not isinstance(document.get("error"), str) or not document["error"]:
            problems.append(f"error {document.get('error')!r}, expected a non-empty string")
    if headers.get("access-control-allow-origin") != "*":
        problems.append(f"Access-Control-Allow-Origin {headers.get('access-control-allow-origin')!r}, expected *")
    return problems


def assert_matrix_error(response, statuses, context=""):
    problems = matrix_error_problems(response, statuses)
    assert not problems, (context, problems, response[0], response[2][:300])


# --- a 65 s /sync long-poll runs in the background while the other tests run ---


def test_long_poll_started(long_poll):
    """MX08 (set-up): a /sync with a 65 s timeout from hs2, for a user with nothing to sync.

    First in the file so that the poll runs while the other tests do; the
    `long_poll` fixture starts it on first use, and test_long_poll_was_not_cut
    waits for its end (alone, that test starts it and waits the 65 s).
    """
    assert long_poll.initial_status == 200


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


def test_federation_join_and_messages_both_ways(hs1, hs2, ssl_context, federation_users):
    """MX01, MX02, MX03, MX04, MX09: a federation join and messages both ways with matrix-nio.

    Client API through both proxies (MX01); hs2's federation listener on 8448
    (MX02); hs1 found only through its well-known delegation (MX03); a room alias
    with %2F resolved locally and over federation (MX04); all over TLS checked
    against the test CA (MX09).
    """
    # Delegation is the only way in: hs1 has nothing on the default federation port.
    assert not port_open(hs1.ip, 8448)
    asyncio.run(_federation_story(hs1, hs2, ssl_context))


# --- authenticated media (MSC3916): client v1 media and federation v1 media through both proxies ---


def _png(width=8, height=8):
    """A small valid RGB PNG (Synapse's thumbnailer must be able to decode it)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    def row(y):
        return b"\x00" + b"".join(bytes((x * 30 % 256, y * 30 % 256, 128)) for x in range(width))
    rows = b"".join(row(y) for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("direction", ["hs1 media fetched on hs2", "hs2 media fetched on hs1"])
def test_authenticated_media_across_federation(hs1, hs2, homeserver_log, direction):
    """MX01, MX02, MX03, MX04: authenticated media (MSC3916) through both proxies.

    A user uploads a PNG on one homeserver through its proxy; a user of the other
    homeserver downloads it and a thumbnail with /_matrix/client/v1/media/* on
    their own server (client vhost, MX01), which fetches it from the origin with
    /_matrix/federation/v1/media/* through the origin's federation listener
    (hs1's found through its delegation, MX02/MX03). The origin logs that
    federation request from the other container. Without a token the client v1
    endpoints are the homeserver's own 401, passed through.
    """
    origin, fetcher = (hs1, hs2) if direction.startswith("hs1") else (hs2, hs1)
    origin.register("media-owner", PASSWORD)
    fetcher.register("media-viewer", PASSWORD)
    owner_token = fetcher.login_to(origin, "media-owner", PASSWORD)
    viewer_token = origin.login_to(fetcher, "media-viewer", PASSWORD)
    image = _png()
    path = f"/tmp/mxedge-media-{uuid.uuid4().hex}.png"
    origin.host.run(f"printf %s {base64.b64encode(image).decode()} | base64 -d > {path}")
    try:
        status, _headers, body = origin.curl(
            f"{origin.base_url}_matrix/media/v3/upload?filename=probe.png", "-X", "POST",
            "-H", f"Authorization: Bearer {owner_token}", "-H", "Content-Type: image/png", data_file=path,
        )
    finally:
        origin.host.run(f"rm -f {path}")
    assert status == 200, body
    server_name, media_id = json.loads(body)["content_uri"].removeprefix("mxc://").split("/", 1)
    assert server_name == origin.server_name

    auth = ("-H", f"Authorization: Bearer {viewer_token}")
    base = f"{fetcher.base_url}_matrix/client/v1/media"
    download, thumbnail, anonymous = fetcher.curl_many([
        (f"{base}/download/{server_name}/{media_id}", auth),
        (f"{base}/thumbnail/{server_name}/{media_id}?width=32&height=32&method=crop", auth),
        (f"{base}/download/{server_name}/{media_id}", ()),
    ], timeout=60)
    assert download[0] == 200 and download[2] == image, (download[0], download[2][:200])
    assert thumbnail[0] == 200 and thumbnail[1].get("content-type", "").startswith("image/"), thumbnail[:2]
    assert anonymous[0] == 401 and json.loads(anonymous[2])["errcode"] == "M_MISSING_TOKEN", anonymous

    # The fetcher's homeserver asked the origin with the authenticated federation endpoint,
    # through the origin's proxy (its homeserver listens on loopback only).
    def logged():
        return origin.host.run(
            f"grep -h 'GET /_matrix/federation/v1/media/download/{media_id}' {homeserver_log} || true"
        ).stdout
    assert origin.wait_until(lambda: logged().strip(), 20), "the origin never saw /_matrix/federation/v1/media/download"
    assert f" - {fetcher.ip} - " in logged(), logged()


# --- well-known documents served by the proxy itself ---


def test_well_known_bodies_are_the_filter_output(hs1, hs2, module_utils):
    """MX03: the well-known documents are the filters' bytes, application/json, with CORS; none on hs2."""
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


def test_operator_routes_from_one_place(hs1, hs2):
    """MX03, MX11: matrix_extra_routes, one list in the inventory, is rendered by every flavour.

    hs1's inventory adds a static support document on the delegation host and a refused
    prefix on the client vhost (.config/molecule/config.yml); hs2 has none.
    """
    routes = {route["id"]: route for route in hs1.vars["matrix_extra_routes"]}
    status, headers, served = hs2.curl(f"https://{hs1.server_name}{routes['support']['path']}")
    assert (status, served) == (200, routes["support"]["body"].encode())
    assert headers["content-type"].split(";")[0] == "application/json"
    assert headers["access-control-allow-origin"] == "*"
    for path in (routes["no-metrics"]["path"], routes["no-metrics"]["path"] + "/x"):
        assert_matrix_error(hs2.curl(f"{hs1.base_url}{path.lstrip('/')}"), {403}, path)
    # Not on hs2: its client vhost answers the path with the fallback.
    assert_matrix_error(hs1.curl(f"{hs2.base_url}{routes['no-metrics']['path'].lstrip('/')}"), {404}, "hs2")


def test_health_through_the_proxy(hs1, hs2):
    """MX07: /health is forwarded to the homeserver on both proxies."""
    status, _headers, body = hs2.curl(f"{hs1.base_url}health")
    assert (status, body) == (200, b"OK")
    status, _headers, body = hs1.curl(f"{hs2.base_url}health")
    assert (status, body) == (200, b"OK")


def test_federation_listener_serves_only_matrix_paths(hs1, hs2):
    """MX02: hs2's federation listener forwards /_matrix and refuses /_synapse/client."""
    status, _headers, body = hs1.curl(f"https://{hs2.server_name}:8448/_matrix/federation/v1/version")
    assert status == 200 and b"server" in body
    status, _headers, _body = hs1.curl(f"https://{hs2.server_name}:8448/_synapse/client/password_reset/email/submit_token")
    assert status == 404


# --- forwarded headers: the homeserver logs the real client, never a forged one ---


@pytest.mark.parametrize("direction", ["hs2->hs1 client port", "hs1->hs2 federation port"])
def test_forged_forwarded_for_is_overwritten(hs1, hs2, homeserver_log, direction):
    """MX05: a forged X-Forwarded-For and request ID are overwritten, as the homeserver logs them."""
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
    """MX04: %2F in a client API path reaches the homeserver intact."""
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
    """MX02, MX03, MX04, MX09: mxedge.matrix.federation_check finds each server and passes every check.

    Discovery through hs1's well-known (MX03) or hs2's fallback listener on 8448
    (MX02); TLS and key checks (MX09); the %2F probe conclusive (MX04).
    """
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
    """MX09 (TLS and key checks), and the module's own check mode: it runs and reports no change."""
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
    """No proxy behaviour (federation_check's own contract): a misconfiguration fails with a readable message."""
    failed, result = federation_check(hs2, server_name, timeout=5)
    assert failed, result
    assert result["msg"].startswith(f"federation check failed for {server_name}"), result["msg"]
    assert words in result["msg"], result["msg"]
    assert any(check["name"] == failed_check and not check["passed"] for check in result["checks"]), result["checks"]


def test_encoded_slash_probe_tells_decoded_from_raw(hs1, federation_utils):
    """MX04 (the premise of the module's probe): Synapse tells an undecoded %2F from a decoded one."""
    raw = federation_utils.SLASH_PROBE_PATH
    status, _headers, body = hs1.homeserver_local(raw)
    assert status == 200 and json.loads(body)["server_name"] == hs1.server_name, body
    status, _headers, body = hs1.homeserver_local(urllib.parse.unquote(raw))
    assert status in (400, 404) and b"server_name" not in body, (status, body)
    status, _headers, body = hs1.homeserver_local(federation_utils.SLASH_CONTROL_PATH)
    assert status == 200, body


# --- admin paths ---

# Four encoded "../" from /_synapse/admin/v2/users/ climb back to the root: a
# proxy that decodes and resolves them routes the request by the tail, while the
# raw URI, if forwarded, is Synapse's admin route /_synapse/admin/v2/users/<user_id>.
UP = "%2E%2E%2F" * 4
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
    f"/_synapse/admin/v2/users/{UP}_matrix%2Fclient%2Fversions",
    # The same climb to the other routes: exact-match ones (/health, the
    # well-known documents) and the other prefixes (issue 18).
    f"/_synapse/admin/v2/users/{UP}health",
    f"/_synapse/admin/v2/users/{UP.lower()}health",
    f"/_synapse/admin/v2/users/{'..%2F' * 4}health",
    f"/_synapse/admin/v2/users/{UP}health?access_token=x",
    f"/_synapse/admin/v2/users/{UP}.well-known%2Fmatrix%2Fserver",
    f"/_synapse/admin/v2/users/{UP}.well-known%2Fmatrix%2Fclient",
    f"/_synapse/admin/v2/users/{UP}_synapse%2Fclient%2Fpick_idp",
    f"/_synapse/admin/v2/users/{UP}_matrix%2Ffederation%2Fv1%2Fversion",
    # Case variants.
    "/_SYNAPSE/admin/v1/server_version",
    "/_synapse/ADMIN/v1/server_version",
    "/_Synapse/Admin/v1/server_version",
    f"/_SYNAPSE/admin/v2/users/{UP}health",
    f"/_synapse/ADMIN/v2/users/{UP}health",
    # Double slashes.
    "/_synapse/admin//v1/server_version",
    f"//_synapse/admin/v2/users/{UP}health",
    f"/_synapse//admin/v2/users/{UP}health",
    # Encoded letters and separators.
    "/%5Fsynapse/admin/v1/server_version",
    "/_synapse%2Fadmin%2Fv1%2Fserver_version",
    "/_synapse/%61%64%6D%69%6E/v1/server_version",
    f"/_synapse/%61dmin/v2/users/{UP}health",
    f"/%5Fsynapse/admin/v2/users/{UP}health",
    # From other routes, down into the admin prefix.
    "/health/%2E%2E/_synapse/admin/v1/server_version",
    "/.well-known/matrix/%2E%2E/%2E%2E/_synapse/admin/v1/server_version",
]


def admin_refusal_problems(path, response, exact_403):
    """What is wrong with `response` to an admin path from outside the allow-list; [] when nothing.

    Synapse's admin API answers 200 (server_version needs no token) or 401
    M_MISSING_TOKEN: either means the request reached it. The proxy must answer
    itself: 403 M_FORBIDDEN or 404 M_UNRECOGNIZED (exactly 403 for the plain
    variants on a vhost that routes the admin prefix), as Matrix JSON (MX11).
    """
    status, _headers, body = response
    problems = []
    if status == 401 or b"server_version" in body or b"M_MISSING_TOKEN" in body:
        problems.append("reached Synapse's admin API")
    problems += matrix_error_problems(response, {403} if exact_403 and path in ADMIN_DENIED else {403, 404})
    return [f"{path}: {problem} (status {status}, body {body[:200]!r})" for problem in problems]


def test_admin_api_reachable_directly(hs1):
    """MX06 (the premise of the tests below): Synapse itself answers the probe without auth."""
    status, _headers, body = hs1.homeserver_local("/_synapse/admin/v1/server_version")
    assert status == 200 and b"server_version" in body


@pytest.mark.parametrize("path", ADMIN_NEVER_OK)
def test_admin_paths_blocked_through_proxy(hs1, hs2, path):
    """MX06, MX04, MX11: from hs2, no admin path variant reaches Synapse's admin API on hs1's client vhost.

    The proxy refuses it itself (403, or 404 for a URI it does not route) with
    Matrix JSON and CORS; a URI that only normalises to another route is not
    forwarded raw (MX04: the raw URI must be under the matched route's prefix).
    """
    response = hs2.curl(f"https://{hs1.fqdn}{path}")
    status, _headers, body = response
    # Synapse's admin API answers 200, or 401 M_MISSING_TOKEN without a token:
    # either means the request reached it.
    assert status not in (200, 401), (path, status, body)
    assert b"server_version" not in body and b"M_MISSING_TOKEN" not in body, (path, status, body)
    if path in ADMIN_DENIED:
        assert status == 403, (path, status, body)
    else:
        assert status in (403, 404), (path, status, body)
    assert_matrix_error(response, {status}, path)


# The other listeners, each with every variant in one round trip:
# (client host, server host, URL base, exact 403 for the plain variants).
ADMIN_LISTENERS = {
    # Served on hs1 next to its client vhost: the well-known documents only.
    "hs2->hs1 well-known host": ("hs2", "hs1", lambda node: f"https://{node.server_name}", False),
    # hs2 allows nobody (matrix_admin_allowed_networks empty).
    "hs1->hs2 client vhost": ("hs1", "hs2", lambda node: node.base_url.rstrip("/"), True),
    "hs1->hs2 federation listener": ("hs1", "hs2", lambda node: f"https://{node.server_name}:8448", False),
}


@pytest.mark.parametrize("listener", list(ADMIN_LISTENERS))
def test_admin_paths_blocked_on_every_listener(hs1, hs2, listener):
    """MX06, MX04, MX11, MX02: every admin path variant, on the other listeners: refused by the proxy.

    Each variant must get the proxy's own 403 M_FORBIDDEN or 404 M_UNRECOGNIZED
    (Matrix JSON with CORS), never an answer from Synapse's admin API nor the
    document of another route; all failing variants are listed together.
    """
    nodes = {"hs1": hs1, "hs2": hs2}
    client_key, server_key, base, exact_403 = ADMIN_LISTENERS[listener]
    url_base = base(nodes[server_key])
    responses = nodes[client_key].curl_many([(f"{url_base}{path}", ()) for path in ADMIN_NEVER_OK])
    problems = []
    for path, response in zip(ADMIN_NEVER_OK, responses):
        if listener.endswith("well-known host") and operator_website(nodes[server_key]):
            problems += operator_refusal_problems(path, response)
        else:
            problems += admin_refusal_problems(path, response, exact_403)
    assert not problems, "\n".join(problems)


def operator_website(node):
    """MX15: the server name's host is the operator's website, which includes the role's snippet."""
    return node.vars.get("matrix_well_known_site", "own") == "operator"


def operator_refusal_problems(path, response):
    """MX15: on the operator's website only the well-known snippet is the role's; everything else is the
    website's own answer (a 4xx page of its own), never the homeserver's nor a fallback of the role's."""
    status, _headers, body = response
    # The snippet's own refusal (MX04: a raw URI that only normalises to a well-known path) is the
    # role's Matrix 404; Synapse would answer 401 M_MISSING_TOKEN or the admin document.
    if not 400 <= status < 500 or any(mark in body for mark in (b"server_version", b"M_MISSING_TOKEN", b"M_UNKNOWN_TOKEN")):
        return [f"{path}: {status} {body[:200]!r} (expected a 4xx of the operator's website or of the role's snippet)"]
    return []


def test_admin_paths_allowed_from_allow_listed_network(hs1):
    """MX06: from hs1's allow-listed loopback, the same admin request is served."""
    status, _headers, body = hs1.curl(
        f"https://{hs1.fqdn}/_synapse/admin/v1/server_version", "--resolve", f"{hs1.fqdn}:443:127.0.0.1"
    )
    assert status == 200 and b"server_version" in body


# --- paths outside what a vhost routes ---

# (client host, server host, URL): each must be the proxy's own 404.
NOT_ROUTED = {
    "hs2->hs1 client vhost /nothing-here": ("hs2", "hs1", lambda node: f"{node.base_url}nothing-here"),
    "hs2->hs1 client vhost /_matrixnothing": ("hs2", "hs1", lambda node: f"{node.base_url}_matrixnothing"),
    "hs2->hs1 well-known host /nothing-here": ("hs2", "hs1", lambda node: f"https://{node.server_name}/nothing-here"),
    "hs1->hs2 federation listener /_synapse/client/x": (
        "hs1", "hs2", lambda node: f"https://{node.server_name}:8448/_synapse/client/x"),
    "hs1->hs2 client vhost /.well-known/matrix/server": (
        "hs1", "hs2", lambda node: f"{node.base_url}.well-known/matrix/server"),
}


@pytest.mark.parametrize("case", list(NOT_ROUTED))
def test_unrouted_path_is_a_matrix_404(hs1, hs2, case):
    """MX11, MX01, MX02: a path the vhost does not route gets the proxy's 404 M_UNRECOGNIZED, JSON with CORS."""
    nodes = {"hs1": hs1, "hs2": hs2}
    client_key, server_key, url = NOT_ROUTED[case]
    response = nodes[client_key].curl(url(nodes[server_key]))
    if "well-known host" in case and operator_website(nodes[server_key]):
        # MX15: the operator's website answers what is not the snippet's, with its own 404.
        assert response[0] == 404 and b"M_UNRECOGNIZED" not in response[2], response
        return
    assert_matrix_error(response, {404}, case)


# --- uploads against the one shared limit ---

# What a flavour's docs say it cannot do, by (flavour, case id): the test then
# asserts the documented behaviour instead, so it fails the day the flavour can.
DOCUMENTED_LIMITS = {
    # docs/apache.md: mod_proxy in Apache 2.4 forwards a chunked body without
    # applying LimitRequestBody; the homeserver refuses it (no Content-Length).
    ("apache", "just-over-chunked"),
}


@pytest.mark.parametrize(
    ("framing", "delta", "expected"),
    [("content-length", -4096, 200), ("content-length", 4096, 413), ("chunked", 4096, 413)],
    ids=["just-under", "just-over", "just-over-chunked"],
)
def test_upload_limit(request, hs1, hs2, flavour, upload_token, homeserver_log, framing, delta, expected):
    """MX08, MX11: the body limit holds, with Content-Length or chunked; the 413 is the proxy's, Matrix JSON with CORS.

    Over the limit, the homeserver never sees the request: the proxy refuses it
    itself, also when the body is sent with Transfer-Encoding: chunked (no
    length known in advance).
    """
    size = int(hs1.vars["matrix_max_upload_size_mb"]) * 1048576 + delta
    probe = uuid.uuid4().hex
    upload = f"/tmp/mxedge-upload-{probe}.bin"
    hs2.host.run(f"head -c {size} /dev/urandom > {upload}")
    # Chunked framing exists in HTTP/1.1 only (curl drops the header over HTTP/2).
    framing_args = ["--http1.1", "-H", "Transfer-Encoding: chunked"] if framing == "chunked" else []
    try:
        response = hs2.curl(
            f"{hs1.base_url}_matrix/media/v3/upload?filename={probe}.bin", "-X", "POST", *framing_args,
            "-H", f"Authorization: Bearer {upload_token}", "-H", "Content-Type: application/octet-stream",
            data_file=upload, timeout=120,
        )
    finally:
        hs2.host.run(f"rm -f {upload}")
    status, _headers, body = response

    def logged():
        return probe in hs1.host.check_output(f"grep -h {probe} {homeserver_log} || true")

    if (flavour["name"], request.node.callspec.id) in DOCUMENTED_LIMITS:
        # The proxy lets it through (documented); the homeserver refuses it, so nothing is stored.
        assert status in (400, 411, 413), body[:300]
        assert hs1.wait_until(logged, 20), "the documented limit changed: the proxy refused it itself"
        return
    assert status == expected, body[:300]

    if expected == 200:
        assert json.loads(body)["content_uri"].startswith("mxc://")
        assert hs1.wait_until(logged, 20)
    else:
        # Refused by the proxy: the homeserver never saw the request (it logs
        # every request it answers, its own 413 M_TOO_LARGE included).
        time.sleep(3)
        assert not logged(), "the homeserver received the over-limit upload"
        assert_matrix_error(response, {413}, framing)


# --- the long-poll started first; before anything stops the homeserver ---


def test_long_poll_was_not_cut(long_poll):
    """MX08: the 65 s /sync ends with 200 after its full timeout, not cut by the proxy."""
    status, seconds, body = long_poll.result()
    assert status == "200", body
    assert seconds >= 64.0


# --- upstream down and back, without touching the proxy ---


def test_homeserver_down_and_back(hs1, hs2, flavour, homeserver_down):
    """MX01, MX08: with the homeserver stopped the proxy answers 502/503; started again, it is served
    through the same proxy process (no reload: the proxy reconnects to its upstream on its own).
    """
    status, _headers, _body = hs2.curl(f"{hs1.base_url}_matrix/client/versions")
    assert status in (502, 503), status
    homeserver_down.restore()
    assert hs1.service_pid(flavour["service"]) == homeserver_down.proxy_pid


def test_homeserver_down_is_a_matrix_error(hs1, hs2, homeserver_down):
    """MX11: the proxy's 502/503/504 for a stopped homeserver is M_UNKNOWN, JSON with CORS, and Retry-After."""
    response = hs2.curl(f"{hs1.base_url}_matrix/client/versions")
    assert_matrix_error(response, {502, 503, 504})
    retry_after = response[1].get("retry-after", "")
    assert retry_after.isdigit() and int(retry_after) > 0, f"Retry-After {retry_after!r}, expected a positive integer"


# --- a broken operator directive never takes the running proxy down ---


def test_broken_directive_keeps_old_config_live(hs1, hs2, flavour):
    """MX10: a broken operator directive fails the run with the daemon's checker message; the old config keeps serving."""
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
    """No proxy behaviour (the collection's check mode): --check on converged hosts reports no change."""
    assert_check_mode_reports_no_change(hs1, hs2)


def test_check_mode_previews_a_change_without_making_it(hs1, hs2, flavour, homeserver_service):
    """No proxy behaviour (the collection's check mode): --check --diff of a new body limit (MX08's
    setting) reports it without touching files or processes.
    """
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
