"""MAS, MatrixRTC and Synapse's side of them, through nginx, Apache, Caddy and HAProxy (MX13, MX14).

The stand-ins record what reaches them; Synapse's own log says what reached it.
Every request carries a fresh marker in its query, so a test reads only its own
records and its assertions hold in any order.
"""

import asyncio
import json
import socket
import ssl

import aiohttp
import pytest
import yaml
from conftest import CLIENT_HOST, FLAVOURS, JWT_HOST, MAS_HOST, SFU_HOST, marker

MAS_VERSIONS = ("api/v1", "r0", "v3", "unstable")
MAS_ENDPOINTS = ("login", "logout", "refresh")


def headers_of(record):
    """Header name (lower case) -> list of values, as the stand-in received them."""
    found = {}
    for key, value in record["headers"]:
        found.setdefault(key.lower(), []).append(value)
    return found


def assert_forwarded(record, host, client_ip):
    """MX05 as for the homeserver: Host as sent, one X-Forwarded-For (the client), a request ID."""
    headers = headers_of(record)
    assert headers["host"] == [host], headers
    assert headers["x-forwarded-for"] == [client_ip], headers
    assert len(headers.get("x-request-id", [])) == 1 and headers["x-request-id"][0], headers


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_mas_compat_endpoints_reach_mas_with_the_uri_unmodified(hs, proxies, flavour):
    """MX13 MX04: login, logout and refresh of every client API version, and paths below them, go to MAS as sent."""
    tag = marker()
    targets = [(f"/_matrix/client/{version}/{endpoint}?{tag}=1", "GET" if endpoint == "login" else "POST")
               for version in MAS_VERSIONS for endpoint in MAS_ENDPOINTS]
    targets += [
        (f"/_matrix/client/v3/login/sso/redirect/oidc-%41b?redirectUrl=https%3A%2F%2Fapp.example%2F&{tag}=2", "GET"),
        (f"/_matrix/client/r0/logout/all?{tag}=3", "POST"),
    ]
    requests = [(f"https://{CLIENT_HOST}{target}", ["-X", method] + (["--data", "{}"] if method == "POST" else []))
                for target, method in targets]
    # Control: the rest of the client API still reaches Synapse.
    control = marker()
    requests.append((f"https://{CLIENT_HOST}/_matrix/client/versions?{control}=1", []))
    results = hs.curl_many(requests, proxy_ip=proxies[flavour].ip)
    for (target, method), (status, _headers, body) in zip(targets, results):
        assert status == 200, (target, status, body)
        answer = json.loads(body)
        assert answer == {"standin": "mas", "method": method, "target": target}, answer
    status, _headers, body = results[-1]
    assert status == 200 and "versions" in json.loads(body), body
    records = hs.records("mas", tag)
    assert sorted(r["target"] for r in records) == sorted(t for t, _m in targets)
    for record in records:
        assert_forwarded(record, CLIENT_HOST, hs.ip)
    assert not hs.homeserver_log_has(tag), "the homeserver saw a MAS-routed path"
    assert hs.homeserver_log_has(control), "the control request did not reach the homeserver"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_mas_host_is_routed_whole(hs, proxies, flavour):
    """MX13 MX04: every path of MAS's own host reaches MAS with method, body and raw URI intact."""
    tag = marker()
    body = "x" * 3000
    hs.host.run(f"printf '%s' {body} > /tmp/{tag}.body")
    targets = [
        ("GET", f"/.well-known/openid-configuration?{tag}=1"),
        ("POST", f"/oauth2/token?{tag}=2"),
        ("PUT", f"/assets/a%2Fb//c/./d?{tag}=3"),
        ("GET", f"/?{tag}=4"),
    ]
    requests = [(f"https://{MAS_HOST}{target}", ["-X", method] + (["--data-binary", f"@/tmp/{tag}.body"] if method != "GET" else []))
                for method, target in targets]
    results = hs.curl_many(requests, proxy_ip=proxies[flavour].ip)
    for (method, target), (status, _headers, answer) in zip(targets, results):
        assert status == 200, (target, status, answer)
        assert json.loads(answer) == {"standin": "mas", "method": method, "target": target}
    records = {r["target"]: r for r in hs.records("mas", tag)}
    assert sorted(records) == sorted(t for _m, t in targets)
    for method, target in targets:
        assert records[target]["method"] == method
        assert records[target]["body_size"] == (0 if method == "GET" else 3000)
        assert_forwarded(records[target], MAS_HOST, hs.ip)
    assert not hs.homeserver_log_has(tag)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_synapse_mas_api_is_not_public(hs, proxies, flavour):
    """MX13 MX11: Synapse's /_synapse/mas (MAS's side channel) is not routed; the proxy answers 404 itself."""
    tag = marker()
    (status, headers, body), = hs.curl_many(
        [(f"https://{CLIENT_HOST}/_synapse/mas/is_localpart_available?localpart=a&{tag}=1", [])], proxy_ip=proxies[flavour].ip)
    assert status == 404, body
    assert json.loads(body)["errcode"] == "M_UNRECOGNIZED"
    assert headers["content-type"].startswith("application/json")
    assert not hs.homeserver_log_has(tag)
    assert not hs.records("mas", tag)


def test_synapse_delegates_authentication_to_mas(hs, proxies):
    """Synapse's side is real: its auth metadata endpoint asks MAS (the stand-in) at matrix_mas_upstream."""
    config = yaml.safe_load(hs.host.file("/etc/synapse/homeserver.yaml").content_string)
    mas = config["matrix_authentication_service"]
    assert mas["enabled"] is True and mas["endpoint"] == "http://hs.internal:8080/"
    assert config["password_config"]["enabled"] is False
    secret = hs.host.file(mas["secret_path"])
    assert secret.mode == 0o640 and secret.user == "root" and secret.group == "synapse"
    assert len(secret.content_string.strip()) >= 32
    before = len(hs.records("mas", "/.well-known/openid-configuration"))
    tag = marker()
    (status, _headers, body), = hs.curl_many(
        [(f"https://{CLIENT_HOST}/_matrix/client/v1/auth_metadata?{tag}=1", [])], proxy_ip=proxies["nginx"].ip)
    # The stand-in's answer is no OAuth metadata, so Synapse fails the request; what counts is whom it asked.
    assert hs.homeserver_log_has(tag), (status, body)
    asked = hs.records("mas", "/.well-known/openid-configuration")
    assert len(asked) > before, "Synapse did not ask MAS for its metadata"
    assert headers_of(asked[-1])["host"] == ["hs.internal:8080"]
    assert "x-forwarded-for" not in headers_of(asked[-1]), "Synapse's own request came through a proxy"


def test_well_known_client_names_the_issuer_and_the_rtc_focus_byte_identical(hs, proxies):
    """MX03: the same bytes from every flavour, with MSC2965's issuer and MSC4143's focus."""
    bodies = {}
    for flavour in FLAVOURS:
        (status, headers, body), = hs.curl_many([("https://example.test/.well-known/matrix/client", [])], proxy_ip=proxies[flavour].ip)
        assert status == 200 and headers["content-type"] == "application/json", (flavour, status, headers)
        assert headers["access-control-allow-origin"] == "*"
        bodies[flavour] = body
    assert len(set(bodies.values())) == 1, bodies
    document = json.loads(bodies["nginx"])
    assert document["org.matrix.msc2965.authentication"] == {
        "issuer": f"https://{MAS_HOST}/", "account": f"https://{MAS_HOST}/account/"}
    # No trailing slash: clients append /sfu/get to it.
    assert document["org.matrix.msc4143.rtc_foci"] == [{"type": "livekit", "livekit_service_url": f"https://{JWT_HOST}"}]
    config = yaml.safe_load(hs.host.file("/etc/synapse/homeserver.yaml").content_string)
    assert config["experimental_features"]["msc4143_enabled"] is True
    assert config["matrix_rtc"]["transports"] == [{"type": "livekit", "livekit_service_url": f"https://{JWT_HOST}"}]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_rtc_jwt_service_and_openid_userinfo(hs, proxies, flavour):
    """MX14: the JWT service's host reaches it; the federation openid/userinfo endpoint it calls reaches Synapse."""
    tag = marker()
    results = hs.curl_many([
        (f"https://{JWT_HOST}/sfu/get?{tag}=1",
         ["-X", "POST", "-H", "Content-Type: application/json", "--data", '{"room":"!r:example.test","openid_token":{}}']),
        (f"https://{JWT_HOST}/healthz?{tag}=2", []),
        (f"https://{CLIENT_HOST}:8448/_matrix/federation/v1/openid/userinfo?access_token=nope&{tag}=3", []),
    ], proxy_ip=proxies[flavour].ip)
    for status, _headers, body in results[:2]:
        assert status == 200 and json.loads(body)["standin"] == "rtc_jwt", body
    records = {r["target"]: r for r in hs.records("rtc_jwt", tag)}
    assert sorted(records) == [f"/healthz?{tag}=2", f"/sfu/get?{tag}=1"]
    assert records[f"/sfu/get?{tag}=1"]["method"] == "POST"
    assert_forwarded(records[f"/sfu/get?{tag}=1"], JWT_HOST, hs.ip)
    status, _headers, body = results[2]
    # Synapse's own answer to an unknown OpenID token, not the proxy's 404.
    assert status == 401 and json.loads(body)["errcode"] == "M_UNKNOWN_TOKEN", (status, body)
    assert hs.homeserver_log_has(f"{tag}=3")
    assert not hs.homeserver_log_has(f"{tag}=1")


# Longer than every flavour's ordinary timeouts in this scenario (180 s, their minimum, set in
# molecule.yml), so only the tunnel timeout can keep the socket open; the issue asks for 65 s.
IDLE_SECONDS = 200


async def _hold_websocket(ip, test_ca, tag):
    """Open wss://sfu.example.test/rtc at ip, trade messages both ways, idle, trade again."""
    context = ssl.create_default_context(cafile=test_ca)
    timeout = aiohttp.ClientTimeout(total=IDLE_SECONDS + 60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.ws_connect(f"wss://{ip}/rtc?access_token=t&{tag}=1", ssl=context, server_hostname=SFU_HOST,
                                      headers={"Host": SFU_HOST}, autoping=False, heartbeat=None) as socket:
            transcript = [(await socket.receive_str(timeout=10))]
            await socket.send_str("first")
            transcript.append(await socket.receive_str(timeout=10))
            await asyncio.sleep(IDLE_SECONDS)
            await socket.send_str("after the idle time")
            transcript.append(await socket.receive_str(timeout=10))
            await socket.close()
            return transcript


def test_sfu_websocket_stays_open_and_carries_messages_both_ways(hs, proxies, test_ca):
    """MX14: through every flavour at once, a WebSocket to the SFU survives 200 s of silence (tunnel timeouts).

    The flavours' ordinary timeouts are 180 s here: a tunnel route rendered with them would close.
    """
    tags = {flavour: marker() for flavour in FLAVOURS}

    async def all_flavours():
        return await asyncio.gather(*(_hold_websocket(proxies[f].ip, test_ca, tags[f]) for f in FLAVOURS),
                                    return_exceptions=True)

    results = dict(zip(FLAVOURS, asyncio.run(all_flavours())))
    for flavour, transcript in results.items():
        assert transcript == ["hello rtc_sfu", "rtc_sfu: first", "rtc_sfu: after the idle time"], (flavour, transcript)
        (record,) = hs.records("rtc_sfu", tags[flavour])
        assert record["websocket"] is True and record["target"] == f"/rtc?access_token=t&{tags[flavour]}=1"
        assert_forwarded(record, SFU_HOST, controller_address(proxies[flavour].ip))


def controller_address(ip):
    """The WebSocket clients run on the controller: its source address towards ip is the proxy's client."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((ip, 9))
        return probe.getsockname()[0]
