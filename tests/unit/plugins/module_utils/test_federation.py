"""plugins/module_utils/federation.py: the spec's resolution and the checks, with a fake resolver and fake HTTP."""

import base64
import copy
import json

import pytest
from test_ed25519 import sign

from ansible_collections.mxedge.matrix.plugins.module_utils import federation as fed
from ansible_collections.mxedge.matrix.plugins.module_utils.federation import HttpResponse, TransportError
from ansible_collections.mxedge.matrix.plugins.module_utils.federation_dns import DnsAnswer
from ansible_collections.mxedge.matrix.plugins.module_utils.matrix_names import MatrixNameError

NOW_MS = 1_800_000_000_000
WK = "/.well-known/matrix/server"


class FakeResolver:
    """srv: name -> DnsAnswer or list of records; addresses: host -> list (missing = NXDOMAIN)."""

    def __init__(self, srv=None, addresses=None):
        self.srv_table = srv or {}
        self.address_table = addresses or {}
        self.srv_queries = []

    def srv(self, name):
        self.srv_queries.append(name)
        entry = self.srv_table.get(name)
        if entry is None:
            return DnsAnswer("nxdomain", detail="NXDOMAIN")
        if isinstance(entry, DnsAnswer):
            return entry
        return DnsAnswer("ok", entry)

    def addresses(self, host):
        found = self.address_table.get(host)
        return DnsAnswer("ok", found) if found else DnsAnswer("nxdomain", detail="no such host %s" % host)


class FakeTransport:
    """routes: (cert name / SNI, port, path) -> HttpResponse, TransportError or callable.

    Unknown routes are refused connections. ``requests`` records (address, port, sni, host header, path).
    """

    def __init__(self, routes=None, handshakes=None):
        self.routes = routes or {}
        self.handshakes = handshakes or {}
        self.requests = []

    def _answer(self, entry):
        if isinstance(entry, TransportError):
            raise entry
        return entry

    def handshake(self, address, port, sni):
        entry = self.handshakes.get((sni, port), {"version": "TLSv1.3"})
        return self._answer(entry)

    def request(self, address, port, sni, host_header, path):
        self.requests.append((address, port, sni, host_header, path))
        entry = self.routes.get((sni, port, path))
        if entry is None:
            raise TransportError("refused", "connection refused")
        if callable(entry):
            entry = entry()
        return self._answer(entry)


def json_response(data, status=200, headers=None):
    return HttpResponse(status, headers or {"Content-Type": "application/json"}, json.dumps(data).encode())


def well_known(target, headers=None):
    return json_response({"m.server": target}, headers=headers)


def srv(target, port, priority=10, weight=5):
    return {"priority": priority, "weight": weight, "port": port, "target": target}


ADDRESSES = {
    "example.com": ["192.0.2.1"],
    "matrix.example.com": ["192.0.2.2", "2001:db8::2"],
    "srv.example.net": ["192.0.2.3"],
    "srv2.example.net": ["192.0.2.4"],
    "www.example.com": ["192.0.2.5"],
}

# id: (server_name, well-known routes, srv table, expected method, [(host, port, cert, host header)],
#      well_known_server check passed (None: no such check))
RESOLUTION_CASES = {
    "ipv4-literal": ("192.0.2.9", {}, {}, "ip_literal", [("192.0.2.9", 8448, "192.0.2.9", "192.0.2.9")], None),
    "ipv4-literal-port": ("192.0.2.9:1234", {}, {}, "ip_literal", [("192.0.2.9", 1234, "192.0.2.9", "192.0.2.9:1234")], None),
    "ipv6-literal": ("[2001:db8::9]", {}, {}, "ip_literal", [("2001:db8::9", 8448, "2001:db8::9", "[2001:db8::9]")], None),
    "ipv6-literal-port": ("[2001:db8::9]:443", {}, {}, "ip_literal",
                          [("2001:db8::9", 443, "2001:db8::9", "[2001:db8::9]:443")], None),
    "explicit-port": ("example.com:8449", {}, {}, "explicit_port", [("example.com", 8449, "example.com", "example.com:8449")], None),
    "well-known-host-port": (
        "example.com", {("example.com", 443, WK): well_known("matrix.example.com:443")}, {},
        "well_known_explicit_port", [("matrix.example.com", 443, "matrix.example.com", "matrix.example.com:443")], True),
    "well-known-ipv4": (
        "example.com", {("example.com", 443, WK): well_known("192.0.2.7")}, {},
        "well_known_ip_literal", [("192.0.2.7", 8448, "192.0.2.7", "192.0.2.7")], True),
    "well-known-ipv6-port": (
        "example.com", {("example.com", 443, WK): well_known("[2001:db8::7]:8000")}, {},
        "well_known_ip_literal", [("2001:db8::7", 8000, "2001:db8::7", "[2001:db8::7]:8000")], True),
    "well-known-then-srv": (
        "example.com", {("example.com", 443, WK): well_known("matrix.example.com")},
        {"_matrix-fed._tcp.matrix.example.com": [srv("srv.example.net", 8000)]},
        "well_known_srv", [("srv.example.net", 8000, "matrix.example.com", "matrix.example.com")], True),
    "well-known-then-deprecated-srv": (
        "example.com", {("example.com", 443, WK): well_known("matrix.example.com")},
        {"_matrix._tcp.matrix.example.com": [srv("srv.example.net", 8001)]},
        "well_known_srv_deprecated", [("srv.example.net", 8001, "matrix.example.com", "matrix.example.com")], True),
    "well-known-srv-preferred-over-deprecated": (
        "example.com", {("example.com", 443, WK): well_known("matrix.example.com")},
        {"_matrix-fed._tcp.matrix.example.com": [srv("srv.example.net", 8000)],
         "_matrix._tcp.matrix.example.com": [srv("srv2.example.net", 8001)]},
        "well_known_srv", [("srv.example.net", 8000, "matrix.example.com", "matrix.example.com")], True),
    "well-known-no-srv-fallback": (
        "example.com", {("example.com", 443, WK): well_known("matrix.example.com")}, {},
        "well_known_fallback", [("matrix.example.com", 8448, "matrix.example.com", "matrix.example.com")], True),
    "no-well-known-srv": (
        "example.com", {("example.com", 443, WK): HttpResponse(404)},
        {"_matrix-fed._tcp.example.com": [srv("srv2.example.net", 8002, priority=20), srv("srv.example.net", 8000)]},
        "srv", [("srv.example.net", 8000, "example.com", "example.com"), ("srv2.example.net", 8002, "example.com", "example.com")],
        True),
    "no-well-known-deprecated-srv": (
        "example.com", {("example.com", 443, WK): HttpResponse(404)},
        {"_matrix._tcp.example.com": [srv("srv.example.net", 8000)]},
        "srv_deprecated", [("srv.example.net", 8000, "example.com", "example.com")], True),
    "nothing-fallback": ("example.com", {}, {}, "fallback", [("example.com", 8448, "example.com", "example.com")], True),
    "well-known-404-fallback": (
        "example.com", {("example.com", 443, WK): HttpResponse(404)}, {},
        "fallback", [("example.com", 8448, "example.com", "example.com")], True),
    "well-known-timeout": (
        "example.com", {("example.com", 443, WK): TransportError("timeout", "timed out")}, {},
        "fallback", [("example.com", 8448, "example.com", "example.com")], True),
    "well-known-bad-json": (
        "example.com", {("example.com", 443, WK): HttpResponse(200, {}, b"{not json")}, {},
        "fallback", [("example.com", 8448, "example.com", "example.com")], False),
    "well-known-not-object": (
        "example.com", {("example.com", 443, WK): json_response(["matrix.example.com"])}, {},
        "fallback", [("example.com", 8448, "example.com", "example.com")], False),
    "well-known-m-server-not-string": (
        "example.com", {("example.com", 443, WK): json_response({"m.server": 443})}, {},
        "fallback", [("example.com", 8448, "example.com", "example.com")], False),
    "well-known-m-server-bad-name": (
        "example.com", {("example.com", 443, WK): well_known("https://matrix.example.com")}, {},
        "fallback", [("example.com", 8448, "example.com", "example.com")], False),
    "well-known-server-error": (
        "example.com", {("example.com", 443, WK): HttpResponse(500)}, {},
        "fallback", [("example.com", 8448, "example.com", "example.com")], False),
    "well-known-bad-certificate": (
        "example.com", {("example.com", 443, WK): TransportError("tls", "certificate verification failed")}, {},
        "fallback", [("example.com", 8448, "example.com", "example.com")], False),
    "well-known-redirect-followed": (
        "example.com",
        {("example.com", 443, WK): HttpResponse(301, {"Location": "https://www.example.com/matrix/server.json"}),
         ("www.example.com", 443, "/matrix/server.json"): well_known("matrix.example.com:8443")}, {},
        "well_known_explicit_port", [("matrix.example.com", 8443, "matrix.example.com", "matrix.example.com:8443")], True),
    "well-known-relative-redirect": (
        "example.com",
        {("example.com", 443, WK): HttpResponse(302, {"Location": "/static/server"}),
         ("example.com", 443, "/static/server"): well_known("matrix.example.com:8443")}, {},
        "well_known_explicit_port", [("matrix.example.com", 8443, "matrix.example.com", "matrix.example.com:8443")], True),
    "well-known-redirect-loop": (
        "example.com",
        {("example.com", 443, WK): HttpResponse(301, {"Location": "https://www.example.com/a"}),
         ("www.example.com", 443, "/a"): HttpResponse(301, {"Location": "https://example.com" + WK})}, {},
        "fallback", [("example.com", 8448, "example.com", "example.com")], False),
    "well-known-redirect-to-http": (
        "example.com", {("example.com", 443, WK): HttpResponse(301, {"Location": "http://www.example.com/x"})}, {},
        "fallback", [("example.com", 8448, "example.com", "example.com")], False),
    # Synapse stops on a failed SRV lookup and on a lone '.' target (no fallback).
    "srv-servfail-stops": (
        "example.com", {}, {"_matrix-fed._tcp.example.com": DnsAnswer("servfail", detail="SERVFAIL")},
        "srv_error", [], True),
    "srv-timeout-on-deprecated-stops": (
        "example.com", {}, {"_matrix._tcp.example.com": DnsAnswer("timeout", detail="timed out")},
        "srv_error", [], True),
    "srv-dot-target-stops": (
        "example.com", {}, {"_matrix-fed._tcp.example.com": [srv(".", 0)], "_matrix._tcp.example.com": [srv("srv.example.net", 1)]},
        "srv_error", [], True),
    "well-known-then-srv-servfail-stops": (
        "example.com", {("example.com", 443, WK): well_known("matrix.example.com")},
        {"_matrix-fed._tcp.matrix.example.com": DnsAnswer("servfail", detail="SERVFAIL")},
        "well_known_srv_error", [], True),
}

# id: (srv table, fragment of the failed srv check's reason)
SRV_STOPS = {
    "servfail": ({"_matrix-fed._tcp.example.com": DnsAnswer("servfail", detail="SERVFAIL")}, "SERVFAIL"),
    "dot-target": ({"_matrix-fed._tcp.example.com": [srv(".", 0)]}, "declared unavailable"),
}


@pytest.mark.parametrize("case", list(SRV_STOPS))
def test_srv_stop_fails_the_srv_check(case):
    srv_table, fragment = SRV_STOPS[case]
    result = fed.run_checks("example.com", FakeResolver(srv_table, ADDRESSES), FakeTransport(), checks=["version"])
    srv_checks = [check for check in result["checks"] if check["name"] == "srv"]
    assert len(srv_checks) == 1 and not srv_checks[0]["passed"] and fragment in srv_checks[0]["reason"]
    assert not result["passed"] and result["targets"] == [] and result["host"] is None


@pytest.mark.parametrize("case", list(RESOLUTION_CASES))
def test_resolution(case):
    server_name, routes, srv_table, method, targets, wk_passed = RESOLUTION_CASES[case]
    transport = FakeTransport(routes)
    resolver = FakeResolver(srv_table, ADDRESSES)
    resolution = fed.resolve(server_name, resolver, transport)
    assert resolution.method == method
    assert [(t.host, t.port, t.cert_name, t.host_header) for t in resolution.targets] == targets
    wk_checks = [check for check in resolution.checks if check["name"] == "well_known_server"]
    if wk_passed is None:
        assert not wk_checks and not transport.requests, "no well-known request for IP literals and explicit ports"
        assert not resolver.srv_queries, "no SRV lookups for IP literals and explicit ports"
    else:
        assert [check["passed"] for check in wk_checks] == [wk_passed], wk_checks


def test_explicit_port_in_m_server_skips_srv():
    resolver = FakeResolver({"_matrix-fed._tcp.matrix.example.com": [srv("srv.example.net", 1)]}, ADDRESSES)
    transport = FakeTransport({("example.com", 443, WK): well_known("matrix.example.com:443")})
    fed.resolve("example.com", resolver, transport)
    assert resolver.srv_queries == []


def test_srv_order_and_lookup_names():
    resolver = FakeResolver({}, ADDRESSES)
    resolution = fed.resolve("example.com", resolver, FakeTransport())
    assert resolver.srv_queries == ["_matrix-fed._tcp.example.com", "_matrix._tcp.example.com"]
    assert [step["step"] for step in resolution.steps] == ["well_known", "srv", "srv", "fallback"]


def test_well_known_details_reported():
    headers = {"Content-Type": "application/json", "Cache-Control": "max-age=86400", "Expires": "Thu, 01 Jan 2037 00:00:00 GMT"}
    transport = FakeTransport({
        ("example.com", 443, WK): HttpResponse(308, {"Location": "https://www.example.com/wk"}),
        ("www.example.com", 443, "/wk"): well_known("matrix.example.com:443", headers),
    })
    resolution = fed.resolve("example.com", FakeResolver({}, ADDRESSES), transport)
    assert resolution.well_known == {
        "url": "https://example.com/.well-known/matrix/server", "status": 200,
        "redirects": ["https://www.example.com/wk"], "cache_control": "max-age=86400",
        "expires": "Thu, 01 Jan 2037 00:00:00 GMT", "m_server": "matrix.example.com:443", "error": None,
    }
    # The well-known request itself: SNI and Host header are the server name.
    assert transport.requests[0] == ("192.0.2.1", 443, "example.com", "example.com", WK)


def test_too_many_redirects():
    routes = {("example.com", 443, "/r%d" % i): HttpResponse(302, {"Location": "/r%d" % (i + 1)}) for i in range(10)}
    routes[("example.com", 443, WK)] = HttpResponse(302, {"Location": "/r0"})
    resolution = fed.resolve("example.com", FakeResolver({}, ADDRESSES), FakeTransport(routes))
    check = resolution.checks[0]
    assert not check["passed"] and "more than 5 redirects" in check["reason"]


def test_timeout_warns():
    transport = FakeTransport({("example.com", 443, WK): TransportError("timeout", "timed out")})
    resolution = fed.resolve("example.com", FakeResolver({}, ADDRESSES), transport)
    assert any("timed out" in warning for warning in resolution.warnings)


def test_deprecated_srv_warns():
    resolver = FakeResolver({"_matrix._tcp.example.com": [srv("srv.example.net", 8000)]}, ADDRESSES)
    resolution = fed.resolve("example.com", resolver, FakeTransport())
    assert any("deprecated" in warning for warning in resolution.warnings)


@pytest.mark.parametrize("name", ["", "https://example.com", "example.com:0", "exa mple.com", "[::1"])
def test_invalid_server_names_raise(name):
    with pytest.raises(MatrixNameError):
        fed.resolve(name, FakeResolver(), FakeTransport())


# ------------------------------------------------------------ key documents

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))


def b64(data):
    return base64.b64encode(data).decode().rstrip("=")


def key_document(server_name="example.com", valid_until=NOW_MS + 3_600_000, secret=SECRET, signer=None,
                 key_id="ed25519:a_AbCd", extra=None):
    public, _sig = sign(secret, b"")
    document = {
        "server_name": server_name,
        "valid_until_ts": valid_until,
        "verify_keys": {key_id: {"key": b64(public)}},
        "old_verify_keys": {},
    }
    document.update(extra or {})
    message = fed.signing_bytes(document)
    _public, signature = sign(secret if signer is None else signer, message)
    document["signatures"] = {server_name: {key_id: b64(signature)}}
    return document


def mutate(document, change):
    document = copy.deepcopy(document)
    change(document)
    return document


KEY_CASES = {
    "good": (key_document(), True, "signed by ed25519:a_AbCd"),
    "good-with-unsigned": (mutate(key_document(), lambda d: d.update(unsigned={"x": 1})), True, "signed by"),
    "good-non-ascii-content": (key_document(extra={"note": "caf\u00e9"}), True, "signed by"),
    "expired": (key_document(valid_until=NOW_MS - 1000), False, "in the past"),
    "wrong-server-name": (key_document(server_name="evil.example"), False, "server_name is 'evil.example'"),
    "bad-signature": (key_document(signer=OTHER_SECRET), False, "does not verify"),
    "tampered-after-signing": (mutate(key_document(), lambda d: d.update(valid_until_ts=d["valid_until_ts"] + 1)),
                               False, "does not verify"),
    "no-ed25519-key": (mutate(key_document(), lambda d: d.update(verify_keys={"curve25519:x": {"key": "AAAA"}})),
                       False, "no ed25519 key"),
    "no-signatures": (mutate(key_document(), lambda d: d.pop("signatures")), False, "no signatures by example.com"),
    "signed-by-unlisted-key": (key_document(key_id="ed25519:other") | {"verify_keys": key_document()["verify_keys"]},
                               False, "signed the response"),
    "key-not-base64": (mutate(key_document(), lambda d: d["verify_keys"]["ed25519:a_AbCd"].update(key="!!!")),
                       False, "not unpadded base64"),
    "key-wrong-length": (mutate(key_document(), lambda d: d["verify_keys"]["ed25519:a_AbCd"].update(key=b64(b"x" * 31))),
                         False, "31 bytes"),
    "valid-until-not-int": (mutate(key_document(), lambda d: d.update(valid_until_ts="soon")), False, "not an integer"),
    "valid-until-bool": (mutate(key_document(), lambda d: d.update(valid_until_ts=True)), False, "not an integer"),
    "not-an-object": ([], False, "not a JSON object"),
}


@pytest.mark.parametrize("case", list(KEY_CASES))
def test_validate_key_response(case):
    document, passed, words = KEY_CASES[case]
    ok, reason, _ids = fed.validate_key_response(document, "example.com", NOW_MS)
    assert ok is passed, reason
    assert words in reason


def test_key_check_without_cryptography_fails_readably(monkeypatch):
    monkeypatch.setattr(fed, "HAS_CRYPTOGRAPHY", False)
    ok, reason, _ids = fed.validate_key_response(key_document(), "example.com", NOW_MS)
    assert not ok and "cryptography is missing" in reason


def test_signature_checked_through_cryptography(monkeypatch):
    calls = []
    real = fed.verify_ed25519
    monkeypatch.setattr(fed, "verify_ed25519", lambda *args: calls.append(args) or real(*args))
    document = key_document()
    assert fed.validate_key_response(document, "example.com", NOW_MS)[0]
    public = base64.b64decode(document["verify_keys"]["ed25519:a_AbCd"]["key"] + "=")
    assert calls == [(public, fed.signing_bytes(document),
                      base64.b64decode(document["signatures"]["example.com"]["ed25519:a_AbCd"] + "=="))]


def test_system_resolver_uses_dnspython_for_srv_and_given_nameservers():
    resolver = fed.SystemResolver(["192.0.2.53#5353"], timeout=2)
    assert list(resolver.dns.resolver.nameservers) == ["192.0.2.53"]
    assert resolver.dns.resolver.nameserver_ports == {"192.0.2.53": 5353}
    assert resolver.use_dns_for_addresses
    with pytest.raises(ValueError):
        fed.SystemResolver(["ns.example.com"])


def test_system_resolver_addresses_through_the_system_without_nameservers():
    resolver = fed.SystemResolver(None, timeout=2)
    assert not resolver.use_dns_for_addresses
    answer = resolver.addresses("localhost")
    assert answer.status == "ok" and ("127.0.0.1" in answer.records or "::1" in answer.records)


def test_signing_bytes_are_canonical():
    document = {"b": 1, "a": {"d": [1, 2], "c": "x"}, "signatures": {}, "unsigned": {}}
    assert fed.signing_bytes(document) == b'{"a":{"c":"x","d":[1,2]},"b":1}'
    assert fed.signing_bytes({"n": "caf\u00e9"}) == '{"n":"caf\u00e9"}'.encode("utf-8")


# ------------------------------------------------------------ full runs

def healthy_routes(cert, port, server_name="example.com", document=None):
    document = document or key_document(server_name)
    return {
        (cert, port, "/_matrix/key/v2/server"): json_response(document),
        (cert, port, "/_matrix/federation/v1/version"): json_response({"server": {"name": "Synapse", "version": "1.0"}}),
        (cert, port, fed.SLASH_PROBE_PATH): json_response(document),
        (cert, port, fed.SLASH_CONTROL_PATH): json_response(document),
    }


def delegated_setup(**overrides):
    routes = {
        ("example.com", 443, WK): well_known("matrix.example.com:443"),
        ("example.com", 443, "/.well-known/matrix/client"): json_response(
            {"m.homeserver": {"base_url": "https://matrix.example.com/"}},
            headers={"Access-Control-Allow-Origin": "*"}),
    }
    routes.update(healthy_routes("matrix.example.com", 443))
    routes.update(overrides)
    return FakeResolver({}, ADDRESSES), FakeTransport(routes)


def by_name(result, name):
    return [check for check in result["checks"] if check["name"] == name]


def test_run_checks_all_pass():
    resolver, transport = delegated_setup()
    result = fed.run_checks("example.com", resolver, transport, now_ms=NOW_MS)
    assert result["passed"], fed.summary(result)
    assert (result["method"], result["host"], result["port"], result["cert_name"], result["host_header"]) == (
        "well_known_explicit_port", "matrix.example.com", 443, "matrix.example.com", "matrix.example.com:443")
    assert result["addresses"] == ["192.0.2.2:443", "[2001:db8::2]:443"]
    per_address = [(check["name"], check["address"]) for check in result["checks"] if check["address"]]
    assert per_address == [(name, address) for address in result["addresses"]
                           for name in ("tls", "key", "version", "encoded_slash")]
    assert by_name(result, "client_well_known")[0]["skipped"] is False
    assert fed.summary(result).startswith("federation checks passed for example.com -> matrix.example.com:443")
    # Requests to the homeserver carry the SNI and Host header the spec asks for.
    assert ("192.0.2.2", 443, "matrix.example.com", "matrix.example.com:443", "/_matrix/key/v2/server") in transport.requests


def test_check_selection():
    resolver, transport = delegated_setup()
    result = fed.run_checks("example.com", resolver, transport, checks=["key"], now_ms=NOW_MS)
    assert {check["name"] for check in result["checks"]} == {"well_known_server", "key"}


@pytest.mark.parametrize(
    ("override", "check", "words"),
    [
        pytest.param({(fed.SLASH_PROBE_PATH): HttpResponse(404, {}, b'{"errcode":"M_UNRECOGNIZED"}')},
                     "encoded_slash", "decoded or refused %2F", id="proxy-decodes-slash"),
        pytest.param({(fed.SLASH_PROBE_PATH): json_response({"server_name": "other"})},
                     "encoded_slash", "not with the key document", id="probe-wrong-body"),
        pytest.param({("/_matrix/key/v2/server"): json_response(key_document(valid_until=NOW_MS - 1))},
                     "key", "in the past", id="expired-keys"),
        pytest.param({("/_matrix/key/v2/server"): HttpResponse(502, {}, b"Bad Gateway")},
                     "key", "HTTP 502", id="key-502"),
        pytest.param({("/_matrix/federation/v1/version"): json_response({"server": {}})},
                     "version", "no server.name", id="version-shape"),
        pytest.param({("/_matrix/federation/v1/version"): HttpResponse(200, {}, b"<html>")},
                     "version", "not valid JSON", id="version-html"),
    ],
)
def test_run_checks_failures(override, check, words):
    resolver, transport = delegated_setup(**{})
    for path, response in override.items():
        transport.routes[("matrix.example.com", 443, path)] = response
    result = fed.run_checks("example.com", resolver, transport, now_ms=NOW_MS)
    assert not result["passed"]
    failed = [c for c in by_name(result, check) if not c["passed"]]
    assert failed and words in failed[0]["reason"], failed
    text = fed.summary(result)
    assert text.startswith("federation check failed for example.com -> matrix.example.com:443") and words in text


def test_encoded_slash_inconclusive_without_key_id_support():
    resolver, transport = delegated_setup()
    transport.routes[("matrix.example.com", 443, fed.SLASH_PROBE_PATH)] = HttpResponse(404)
    transport.routes[("matrix.example.com", 443, fed.SLASH_CONTROL_PATH)] = HttpResponse(404)
    result = fed.run_checks("example.com", resolver, transport, now_ms=NOW_MS)
    slash = by_name(result, "encoded_slash")
    assert all(c["passed"] and c["skipped"] and "inconclusive" in c["reason"] for c in slash)


def test_tls_failure_stops_the_address_checks():
    resolver, transport = delegated_setup()
    transport.handshakes[("matrix.example.com", 443)] = TransportError(
        "tls", "certificate verification failed: Hostname mismatch")
    result = fed.run_checks("example.com", resolver, transport, now_ms=NOW_MS)
    per_address = [c for c in result["checks"] if c["address"]]
    assert [c["name"] for c in per_address] == ["tls", "tls"]
    assert "certificate name required: matrix.example.com" in per_address[0]["reason"]


@pytest.mark.parametrize(
    ("response", "passed", "skipped", "words"),
    [
        (json_response({"m.homeserver": {"base_url": "https://m/"}}), False, False, "Access-Control-Allow-Origin is missing"),
        (json_response({"m.homeserver": {"base_url": "https://m/"}}, headers={"Access-Control-Allow-Origin": "https://app"}),
         False, False, "'https://app'"),
        (json_response({}, headers={"Access-Control-Allow-Origin": "*"}), False, False, "base_url is missing"),
        (HttpResponse(404), True, True, "404"),
        (HttpResponse(500), False, False, "HTTP 500"),
        (HttpResponse(410), True, True, "410"),
        (TransportError("refused", "connection refused"), True, True, "not served"),
        (TransportError("timeout", "timed out"), True, True, "not served"),
        (TransportError("tls", "certificate verification failed: Hostname mismatch"), False, False, "Hostname mismatch"),
        (TransportError("http", "HTTP exchange failed: bad status line"), False, False, "bad status line"),
    ],
)
def test_client_well_known(response, passed, skipped, words):
    transport = FakeTransport({("example.com", 443, "/.well-known/matrix/client"): response})
    check = fed.check_client_well_known("example.com:8448", FakeResolver({}, ADDRESSES), transport)
    assert (check["passed"], check["skipped"]) == (passed, skipped)
    assert words in check["reason"]


def test_fallback_without_address_fails():
    result = fed.run_checks("nowhere.example", FakeResolver({}, {}), FakeTransport(), now_ms=NOW_MS)
    assert not result["passed"]
    assert result["failed_checks"] == ["addresses"]
    assert "nowhere.example has no AAAA or A record" in fed.summary(result)


def test_ip_literal_uses_ip_as_certificate_name():
    routes = healthy_routes("192.0.2.9", 8448, server_name="192.0.2.9")
    result = fed.run_checks("192.0.2.9", FakeResolver(), FakeTransport(routes), checks=["key", "version"], now_ms=NOW_MS)
    assert result["passed"], fed.summary(result)
    assert result["cert_name"] == "192.0.2.9" and result["addresses"] == ["192.0.2.9:8448"]


def test_srv_checks_every_target_with_server_name_certificate():
    resolver = FakeResolver({"_matrix-fed._tcp.example.com": [srv("srv.example.net", 8000), srv("srv2.example.net", 8001, 20)]},
                            ADDRESSES)
    routes = {("example.com", 443, WK): HttpResponse(404)}
    routes.update(healthy_routes("example.com", 8000))
    routes.update(healthy_routes("example.com", 8001))
    transport = FakeTransport(routes)
    result = fed.run_checks("example.com", resolver, transport, checks=["key"], now_ms=NOW_MS)
    assert result["passed"], fed.summary(result)
    assert result["addresses"] == ["192.0.2.3:8000", "192.0.2.4:8001"]
    assert {(r[0], r[2], r[3]) for r in transport.requests if r[4] == "/_matrix/key/v2/server"} == {
        ("192.0.2.3", "example.com", "example.com"), ("192.0.2.4", "example.com", "example.com")}
