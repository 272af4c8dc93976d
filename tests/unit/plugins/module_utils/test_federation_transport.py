"""plugins/module_utils/federation.py: the real HTTPS transport against a TLS server on loopback."""

import datetime
import http.server
import json
import ssl
import threading

import pytest

from ansible_collections.mxedge.matrix.plugins.module_utils import federation as fed

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402  pylint: disable=wrong-import-position
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402  pylint: disable=wrong-import-position
from cryptography.x509.oid import NameOID  # noqa: E402  pylint: disable=wrong-import-position


def _cert(subject, issuer, public_key, signing_key, ca, names=()):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    base = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("mxedge unit CA", "mxedge unit CA", ca_key.public_key(), ca_key, True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = _cert("matrix.example.test", "mxedge unit CA", leaf_key.public_key(), ca_key, False,
                 ["matrix.example.test"])
    (base / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (base / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (base / "leaf.key").write_bytes(leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return base


@pytest.fixture(scope="module")
def server(pki):
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append((self.path, self.headers.get("Host")))
            body = json.dumps({"path": self.path}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pki / "leaf.pem"), str(pki / "leaf.key"))
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1], seen
    httpd.shutdown()
    httpd.server_close()


def test_request_with_sni_host_header_and_raw_path(pki, server):
    port, seen = server
    transport = fed.HttpsTransport(timeout=5, ca_path=str(pki / "ca.pem"))
    response = transport.request("127.0.0.1", port, "matrix.example.test", "matrix.example.test:443", fed.SLASH_PROBE_PATH)
    assert response.status == 200 and response.json() == {"path": fed.SLASH_PROBE_PATH}
    assert seen[-1] == (fed.SLASH_PROBE_PATH, "matrix.example.test:443")
    assert response.tls["version"].startswith("TLS")
    info = transport.handshake("127.0.0.1", port, "matrix.example.test")
    assert "DNS:matrix.example.test" in info["subject_alt_names"]


def test_wrong_certificate_name_is_a_tls_error(pki, server):
    port, _seen = server
    transport = fed.HttpsTransport(timeout=5, ca_path=str(pki / "ca.pem"))
    with pytest.raises(fed.TransportError) as error:
        transport.handshake("127.0.0.1", port, "example.test")
    assert error.value.kind == "tls" and "certificate verification failed" in error.value.message


def test_unknown_ca_is_a_tls_error_unless_validation_is_off(server):
    port, _seen = server
    with pytest.raises(fed.TransportError) as error:
        fed.HttpsTransport(timeout=5).handshake("127.0.0.1", port, "matrix.example.test")
    assert error.value.kind == "tls"
    assert fed.HttpsTransport(timeout=5, validate_certs=False).request(
        "127.0.0.1", port, "other.name", "other.name", "/x").status == 200


def test_connection_refused_is_classified():
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(fed.TransportError) as error:
        fed.HttpsTransport(timeout=5).request("127.0.0.1", port, "x.test", "x.test", "/")
    assert error.value.kind == "refused"
