"""matrix_tls_source=acme against Pebble: issuance, port 80, federation, renewal.

hs1 (Debian 12, nginx) serves example.test and matrix.example.test, hs2
(Debian 13, Caddy) other.test, federation on 8449, found through SRV records
(test_srv.py). Their certificates come from Pebble through certbot and HTTP-01
answered by each proxy's port 80. The topology helpers and the federation story
are the end-to-end scenarios' own (molecule/shared/tests), imported, not copied.
"""

import asyncio
import pathlib
import shlex
import socket
import ssl
import sys
import time
import uuid

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "tests"))

# The topology fixtures, used by name by pytest.
from conftest import hs1, hs2  # noqa: E402,F401  # pylint: disable=unused-import
from conftest import assert_check_mode_reports_no_change, port_open  # noqa: E402
from test_e2e import PASSWORD, _federation_story  # noqa: E402

PEBBLE_ISSUER = "Pebble Intermediate"
PROXY_SERVICE = {"nginx": "nginx", "caddy": "caddy"}


@pytest.fixture(scope="session")
def pebble_root(hs1, tmp_path_factory):
    """Pebble's issuing root, as prepare installed it on the homeservers."""
    path = tmp_path_factory.mktemp("pebble") / "root.pem"
    path.write_text(hs1.host.file(hs1.vars["mxedge_pebble_root"]).content_string)
    return str(path)


@pytest.fixture(scope="session")
def ssl_context(pebble_root):
    """Trusts Pebble's root only: a certificate that verifies was issued by Pebble."""
    return ssl.create_default_context(cafile=pebble_root)


def _names(node):
    return sorted({node.fqdn, node.server_name.split(":")[0]})


def _tls_ports(node):
    client = int(node.vars.get("matrix_client_port", 443))
    federation = int(node.vars.get("matrix_federation_port", 8448))
    return sorted({client, federation})


def _served_certificate(node, name, port, context):
    """Connect from the controller to node's address, asking for `name`; verified against Pebble's root."""
    with socket.create_connection((node.ip, port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=name) as tls:
            return tls.getpeercert()


def _serial(node, context):
    return _served_certificate(node, node.fqdn, _tls_ports(node)[0], context)["serialNumber"]


def _pair(request, hs1, hs2):
    return (hs1, hs2) if request.param == "hs1" else (hs2, hs1)


@pytest.fixture(params=["hs1", "hs2"])
def node_and_peer(request, hs1, hs2):
    return _pair(request, hs1, hs2)


def test_served_certificates_are_pebble_issued_for_both_names(node_and_peer, ssl_context):
    node, _peer = node_and_peer
    for name in _names(node):
        for port in _tls_ports(node):
            cert = _served_certificate(node, name, port, ssl_context)
            issuer = dict(item[0] for item in cert["issuer"])
            assert issuer["commonName"].startswith(PEBBLE_ISSUER), (name, port, cert["issuer"])
            sans = sorted(value for kind, value in cert["subjectAltName"] if kind == "DNS")
            assert sans == _names(node), (name, port, sans)


def test_certificate_files_and_lineage(node_and_peer):
    node, _peer = node_and_peer
    host = node.host
    group = "caddy" if node.vars["matrix_proxy_flavour"] == "caddy" else "root"
    base = f"/etc/mxedge-matrix/tls/{node.fqdn}"
    for suffix, mode, file_group in ((".crt", 0o644, "root"), (".key", 0o640, group), (".pem", 0o640, group)):
        file = host.file(base + suffix)
        assert (file.user, file.group, file.mode) == ("root", file_group, mode), suffix
    # The installed chain is the lineage's, and the bundle is chain + key.
    assert host.file(base + ".crt").content == host.file(f"/etc/letsencrypt/live/{node.fqdn}/fullchain.pem").content
    assert host.file(base + ".pem").content == host.file(base + ".crt").content + host.file(base + ".key").content
    renewal = host.file(f"/etc/letsencrypt/renewal/{node.fqdn}.conf").content_string
    assert "server = https://pebble:14000/dir" in renewal
    assert "authenticator = standalone" in renewal
    assert "http01_address = 127.0.0.1" in renewal


def test_renewal_is_scheduled(node_and_peer):
    node, _peer = node_and_peer
    timer = node.host.service("certbot.timer")
    assert timer.is_enabled
    assert timer.is_running


def test_port_80_redirects_to_https(node_and_peer):
    node, peer = node_and_peer
    for name in _names(node):
        status, headers, _body = peer.curl(f"http://{name}/_matrix/client/versions?probe=1")
        assert status == 301, name
        assert headers["location"] == f"https://{name}/_matrix/client/versions?probe=1"


def test_port_80_forwards_the_challenge_path(node_and_peer):
    """A stand-in for certbot on the challenge port answers through the proxy, Host header intact."""
    node, peer = node_and_peer
    port = int(node.vars.get("matrix_acme_challenge_port", 8402))
    token = uuid.uuid4().hex
    server = (
        "import http.server\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        body = (self.path + ' ' + self.headers.get('Host', '')).encode()\n"
        "        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()\n"
        "        self.wfile.write(body)\n"
        f"s = http.server.HTTPServer(('127.0.0.1', {port}), H); s.timeout = 20\n"
        "s.handle_request(); s.handle_request()\n"
    )
    pid = node.host.check_output(f"setsid nohup timeout 40 python3 -c {shlex.quote(server)} >/dev/null 2>&1 & echo $!")
    try:
        assert node.wait_until(lambda: node.host.run(f"ss -Hltn 'sport = :{port}' | grep -q .").rc == 0, 20)
        for name in _names(node):
            status, _headers, body = peer.curl(f"http://{name}/.well-known/acme-challenge/{token}")
            assert (status, body.decode()) == (200, f"/.well-known/acme-challenge/{token} {name}"), name
    finally:
        node.host.run(f"kill {int(pid)} 2>/dev/null || true")


def test_federation_join_over_pebble_certificates(hs1, hs2, ssl_context):
    """MX02, MX03, MX09: a federation join and messages both ways, on Pebble's certificates.

    hs2 finds example.test through its well-known delegation (MX03); hs1 finds
    other.test only through its SRV record (test_srv.py): no well-known for it and
    nothing on other.test:8448, so every request hs1's Synapse sends to other.test
    goes to the SRV target's port (MX02), with the certificate for other.test (MX09).
    Synapse keeps those connections open afterwards: they are hs1's, on that port.
    """
    federation_port = int(hs2.vars["matrix_federation_port"])
    assert federation_port != 8448 and not port_open(hs2.ip, 8448)
    hs1.register("alice", PASSWORD)
    hs2.register("bob", PASSWORD)
    asyncio.run(_federation_story(hs1, hs2, ssl_context))
    peers = hs2.host.check_output(f"ss -Htn state established '( sport = :{federation_port} )'")
    assert f" {hs1.ip}:" in f" {peers}", peers


LOOP_SCRIPT = """
end=$((SECONDS+{limit})); : > {log}
while [ ! -e {stop} ] && [ $SECONDS -lt $end ]; do
  curl -sS -o /dev/null --max-time 10 -w '%{{http_code}}\\n' {url} >> {log} 2>&1 || echo "curl-failed" >> {log}
  sleep 0.05
done
touch {done}
"""


def test_forced_renewal_reloads_the_proxy_without_dropping_requests(node_and_peer, ssl_context):
    node, peer = node_and_peer
    service = PROXY_SERVICE[node.vars["matrix_proxy_flavour"]]
    pid_before = node.service_pid(service)
    serial_before = _serial(node, ssl_context)
    tag = uuid.uuid4().hex[:8]
    log, stop, done = f"/tmp/renew-{tag}.log", f"/tmp/renew-{tag}.stop", f"/tmp/renew-{tag}.done"
    script = LOOP_SCRIPT.format(limit=120, log=log, stop=stop, done=done, url=shlex.quote(f"{node.base_url}_matrix/client/versions"))
    peer.host.run(f"setsid nohup bash -c {shlex.quote(script)} >/dev/null 2>&1 &")
    try:
        assert node.wait_until(lambda: peer.host.run(f"test -s {log}").rc == 0, 20)
        renew = node.host.run(f"certbot renew --force-renewal --cert-name {node.fqdn} --no-random-sleep-on-renew")
        assert renew.rc == 0, renew.stdout + renew.stderr
        # Requests go on for a while after the reload, on the new certificate.
        time.sleep(3)
    finally:
        peer.host.run(f"touch {stop}")
    assert node.wait_until(lambda: peer.host.run(f"test -e {done}").rc == 0, 30)
    results = peer.host.file(log).content_string.split()
    peer.host.run(f"rm -f {log} {stop} {done}")
    assert len(results) >= 20, results
    assert set(results) == {"200"}, [r for r in results if r != "200"]
    assert _serial(node, ssl_context) != serial_before
    assert node.service_pid(service) == pid_before, "the proxy was restarted, not reloaded"


def test_check_mode_after_renewal_reports_no_change(hs1, hs2):
    """A renewed lineage is the converged state: --check neither re-issues nor reinstalls."""
    assert_check_mode_reports_no_change(hs1, hs2)
