# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""Matrix federation discovery and the checks of ``mxedge.matrix.federation_check``.

:func:`resolve` follows the Matrix server-server specification, "Resolving
server names" (v1.8 and later: ``_matrix-fed._tcp`` first, ``_matrix._tcp``
deprecated), and records every step it takes; :func:`run_checks` then talks
to each resolved address: TLS with the certificate name the path requires,
the server's published keys (self-signature verified with ``cryptography``'s
Ed25519), the version endpoint, an encoded-slash probe and the client
well-known's CORS.

Everything that touches the network goes through two small interfaces so the
logic is tested with fakes:

* a *resolver* with ``srv(name) -> DnsAnswer`` and
  ``addresses(host) -> DnsAnswer`` (records are address strings);
* a *transport* with ``request(address, port, sni, host_header, path) ->
  HttpResponse`` and ``handshake(address, port, sni) -> dict``, raising
  :class:`TransportError`.

Python 3.8+. Third-party libraries: ``cryptography`` (signatures) here and
dnspython (:mod:`.federation_dns`), both imported the way Ansible modules
import optional libraries (``HAS_CRYPTOGRAPHY`` / ``CRYPTOGRAPHY_IMPORT_ERROR``
here); the module fails with ``missing_required_lib`` when one is missing.
"""

import base64
import binascii
import http.client
import json
import socket
import ssl
import time
import traceback

from ansible_collections.mxedge.matrix.plugins.module_utils.federation_dns import (
    DnsAnswer,
    DnsResolver,
    order_srv,
)
from ansible_collections.mxedge.matrix.plugins.module_utils.matrix_names import (
    MatrixNameError,
    canonical_json,
    parse_https_url,
    server_name_kind,
    split_server_name,
)

DEFAULT_PORT = 8448
MAX_REDIRECTS = 5
MAX_BODY = 1024 * 1024
CHECKS = ("tls", "key", "version", "encoded_slash", "client_well_known")
USER_AGENT = "mxedge.matrix.federation_check"

# The encoded-slash probe. Synapse routes GET /_matrix/key/v2/server/<key id>
# with the pattern "^/_matrix/key/v2/server(/(?P<key_id>[^/]*))?$" on the raw
# (still percent-encoded) path and answers every key ID with its keys. A key ID
# holding %2F therefore gets the key document when the slash arrives encoded,
# and 404 M_UNRECOGNIZED when a proxy decoded it (one more path segment) or
# refused it. The control request without %2F proves the server supports the
# key-ID form at all (Matrix 1.6 deprecated it), so a 404 there makes the probe
# inconclusive instead of failed.
SLASH_PROBE_PATH = "/_matrix/key/v2/server/mxedge-probe%2Fencoded-slash"
SLASH_CONTROL_PATH = "/_matrix/key/v2/server/mxedge-probe"

CRYPTOGRAPHY_IMPORT_ERROR = None
try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
except ImportError:
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CRYPTOGRAPHY = True

ED25519_PUBLIC_KEY_BYTES = 32
ED25519_SIGNATURE_BYTES = 64


def verify_ed25519(public_key, message, signature):
    """True when ``signature`` (64 bytes) over ``message`` verifies with the raw
    ``public_key`` (32 bytes), by ``cryptography``'s Ed25519 (RFC 8032).

    Malformed keys or signatures give False, never an exception.
    """
    if not isinstance(public_key, (bytes, bytearray)) or len(public_key) != ED25519_PUBLIC_KEY_BYTES:
        return False
    if not isinstance(signature, (bytes, bytearray)) or len(signature) != ED25519_SIGNATURE_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(bytes(public_key)).verify(bytes(signature), bytes(message))
    except (InvalidSignature, ValueError):
        return False
    return True


class TransportError(Exception):
    """A request could not complete. ``kind``: dns, refused, timeout, tls, http, other."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind
        self.message = message


class HttpResponse:
    def __init__(self, status, headers=None, body=b"", tls=None):
        self.status = status
        self.headers = dict((key.lower(), value) for key, value in (headers or {}).items())
        self.body = body
        self.tls = tls or {}

    def json(self):
        """The body as a JSON object; raises ValueError with a readable reason."""
        try:
            data = json.loads(self.body.decode("utf-8"))
        except UnicodeDecodeError:
            raise ValueError("body is not UTF-8")
        except ValueError as error:
            raise ValueError("body is not valid JSON (%s)" % error)
        if not isinstance(data, dict):
            raise ValueError("body is JSON but not an object")
        return data


def host_literal(host):
    """An IP literal without brackets, or None for DNS names."""
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    parts = host.split(".")
    if len(parts) == 4 and all(part.isdigit() for part in parts):
        return host
    return None


def join_host_port(host, port):
    return "%s:%d" % (host, port) if port is not None else host


def address_label(address, port):
    return "[%s]:%d" % (address, port) if ":" in address else "%s:%d" % (address, port)


# ------------------------------------------------------------------ real I/O


class SystemResolver:
    """SRV through dnspython (:class:`.federation_dns.DnsResolver`); A/AAAA through
    the system (getaddrinfo, so /etc/hosts and the container DNS count), or through
    dnspython too when ``nameservers`` is given (raises ValueError for a
    nameserver that is not ``address[#port]`` or ``[v6]:port``)."""

    def __init__(self, nameservers=None, timeout=5.0):
        self.dns = DnsResolver(nameservers or None, timeout=timeout)
        self.use_dns_for_addresses = bool(nameservers)

    def srv(self, name):
        return self.dns.srv(name)

    def addresses(self, host):
        if self.use_dns_for_addresses:
            return self.dns.addresses(host)
        try:
            infos = socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM)
        except socket.gaierror as error:
            return DnsAnswer("nxdomain", detail="%s: %s" % (host, error.strerror or error))
        found = []
        for info in infos:
            address = info[4][0]
            if address not in found:
                found.append(address)
        return DnsAnswer("ok", found) if found else DnsAnswer("nodata", detail="no addresses for %s" % host)


class _PinnedHTTPSConnection(http.client.HTTPConnection):
    """HTTPS to a fixed address with a chosen SNI / certificate name."""

    def __init__(self, address, port, sni, context, timeout):
        super().__init__(address, port, timeout=timeout)
        self._sni = sni
        self._context = context

    def connect(self):
        super().connect()
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._sni)


class HttpsTransport:
    """Real HTTPS. ``validate_certs`` false turns verification off (not recommended)."""

    def __init__(self, timeout=10.0, ca_path=None, validate_certs=True):
        self.timeout = timeout
        if validate_certs:
            self.context = ssl.create_default_context(cafile=ca_path) if ca_path else ssl.create_default_context()
        else:
            self.context = ssl.create_default_context()
            self.context.check_hostname = False
            self.context.verify_mode = ssl.CERT_NONE

    def _connection(self, address, port, sni):
        return _PinnedHTTPSConnection(address, port, sni, self.context, self.timeout)

    def handshake(self, address, port, sni):
        conn = self._connection(address, port, sni)
        try:
            conn.connect()
            return _tls_info(conn.sock)
        except Exception as error:  # pylint: disable=broad-except
            raise _classify(error)
        finally:
            conn.close()

    def request(self, address, port, sni, host_header, path):
        conn = self._connection(address, port, sni)
        try:
            headers = {"Host": host_header, "User-Agent": USER_AGENT, "Accept": "application/json", "Connection": "close"}
            conn.request("GET", path, headers=headers)
            tls = _tls_info(conn.sock)
            response = conn.getresponse()
            body = response.read(MAX_BODY)
            return HttpResponse(response.status, dict(response.getheaders()), body, tls)
        except Exception as error:  # pylint: disable=broad-except
            raise _classify(error)
        finally:
            conn.close()


def _tls_info(sock):
    info = {"version": None, "cipher": None, "subject_alt_names": [], "not_after": None}
    if sock is None or not hasattr(sock, "version"):
        return info
    info["version"] = sock.version()
    cipher = sock.cipher()
    info["cipher"] = cipher[0] if cipher else None
    cert = sock.getpeercert() or {}
    info["subject_alt_names"] = ["%s:%s" % item for item in cert.get("subjectAltName", ())]
    info["not_after"] = cert.get("notAfter")
    return info


def _classify(error):
    if isinstance(error, TransportError):
        return error
    if isinstance(error, ssl.SSLCertVerificationError):
        return TransportError("tls", "certificate verification failed: %s" % (error.verify_message or error))
    if isinstance(error, ssl.SSLError):
        return TransportError("tls", "TLS handshake failed: %s" % error)
    if isinstance(error, socket.timeout):
        return TransportError("timeout", "timed out")
    if isinstance(error, ConnectionRefusedError):
        return TransportError("refused", "connection refused")
    if isinstance(error, socket.gaierror):
        return TransportError("dns", "name resolution failed: %s" % error)
    if isinstance(error, (http.client.HTTPException, ConnectionError)):
        return TransportError("http", "HTTP exchange failed: %s" % (error or type(error).__name__))
    if isinstance(error, OSError):
        return TransportError("other", "connection failed: %s" % (error.strerror or error))
    return TransportError("other", "%s: %s" % (type(error).__name__, error))


# ---------------------------------------------------------------- discovery


class Target:
    """Where to connect and what to expect there."""

    def __init__(self, host, port, cert_name, host_header, via):
        self.host = host          # DNS name or IP literal (IPv6 without brackets)
        self.port = port
        self.cert_name = cert_name  # name (or IP) the certificate must be valid for
        self.host_header = host_header
        self.via = via

    def as_dict(self):
        return {"host": self.host, "port": self.port, "cert_name": self.cert_name,
                "host_header": self.host_header, "via": self.via}


class Resolution:
    def __init__(self, server_name):
        self.server_name = server_name
        self.method = None
        self.targets = []
        self.steps = []
        self.checks = []
        self.well_known = None
        self.warnings = []

    def step(self, step_name, outcome, **details):
        entry = {"step": step_name, "outcome": outcome}
        entry.update(details)
        self.steps.append(entry)

    def check(self, name, passed, reason, address=None, skipped=False):
        self.checks.append(make_check(name, passed, reason, address, skipped))


def make_check(name, passed, reason, address=None, skipped=False):
    return {"name": name, "passed": bool(passed), "reason": reason, "address": address, "skipped": bool(skipped)}


def fetch_url(url, resolver, transport, max_redirects=MAX_REDIRECTS):
    """GET an https URL, following redirects (bounded, loops refused).

    Returns ``(response, chain)``; ``chain`` lists every URL requested with its
    status. Raises :class:`TransportError` (``kind`` ``redirect`` for loops,
    too many hops and non-https locations).
    """
    chain = []
    seen = set()
    current = url
    while True:
        if current in seen:
            raise TransportError("redirect", "redirect loop at %s" % current)
        seen.add(current)
        parsed = _parse_url(current)
        response = _get_first_reachable(parsed, resolver, transport)
        chain.append({"url": current, "status": response.status})
        if response.status in (301, 302, 303, 307, 308):
            location = response.headers.get("location")
            if not location:
                raise TransportError("redirect", "HTTP %d from %s without a Location header" % (response.status, current))
            if len(chain) > max_redirects:
                raise TransportError("redirect", "more than %d redirects, starting at %s" % (max_redirects, url))
            current = _join_url(current, location)
            continue
        return response, chain


def _parse_url(url):
    try:
        parts = parse_https_url(url.split("?", 1)[0], "URL")
    except MatrixNameError as error:
        raise TransportError("redirect", "cannot follow %s: %s" % (url, error))
    path = url.split("://", 1)[1]
    path = path[path.find("/"):] if "/" in path else "/"
    return {"host": parts["host"], "port": parts["port"], "path": path}


def _join_url(base, location):
    if "://" in location:
        return location
    scheme_host = base.split("://", 1)
    head = scheme_host[0] + "://" + scheme_host[1].split("/", 1)[0]
    if location.startswith("//"):
        return scheme_host[0] + ":" + location
    if location.startswith("/"):
        return head + location
    base_path = "/" + scheme_host[1].split("/", 1)[1] if "/" in scheme_host[1] else "/"
    return head + base_path.rsplit("/", 1)[0] + "/" + location


def _get_first_reachable(parsed, resolver, transport):
    host, port = parsed["host"], parsed["port"] or 443
    literal = host_literal(host)
    if literal:
        addresses = [literal]
    else:
        answer = resolver.addresses(host)
        if not answer.records:
            raise TransportError("dns", "%s does not resolve (%s)" % (host, answer.detail or answer.status))
        addresses = answer.records
    host_header = join_host_port(host, parsed["port"])
    last = None
    for address in addresses:
        try:
            return transport.request(address, port, literal or host, host_header, parsed["path"])
        except TransportError as error:
            if error.kind in ("refused", "timeout", "other"):
                last = error
                continue
            raise
    raise last


def _well_known(resolution, host, resolver, transport):
    """Step 3's request. Returns the m.server value or None (fall through)."""
    url = "https://%s/.well-known/matrix/server" % host
    info = {"url": url, "status": None, "redirects": [], "cache_control": None, "expires": None,
            "m_server": None, "error": None}
    resolution.well_known = info
    try:
        response, chain = fetch_url(url, resolver, transport)
    except TransportError as error:
        info["error"] = error.message
        if error.kind in ("refused", "timeout", "dns", "other", "http"):
            resolution.step("well_known", "unreachable", url=url, detail=error.message)
            resolution.check("well_known_server", True,
                             "%s not answered (%s): no delegation, falling through to SRV" % (url, error.message))
            if error.kind == "timeout":
                resolution.warnings.append(
                    "%s timed out; homeservers wait for it before falling back to SRV/8448" % url)
        else:
            resolution.step("well_known", "error", url=url, detail=error.message)
            resolution.check("well_known_server", False, "%s: %s (servers fall through to SRV)" % (url, error.message))
        return None
    info["status"] = response.status
    info["redirects"] = [hop["url"] for hop in chain[1:]]
    info["cache_control"] = response.headers.get("cache-control")
    info["expires"] = response.headers.get("expires")
    if response.status != 200:
        resolution.step("well_known", "http_%d" % response.status, url=url, redirects=info["redirects"])
        if response.status in (404, 410):
            resolution.check("well_known_server", True, "%s answered %d: no delegation" % (url, response.status))
        else:
            resolution.check("well_known_server", False,
                             "%s answered HTTP %d (expected 200 with {\"m.server\": ...} or 404 for no delegation); "
                             "servers fall through to SRV" % (url, response.status))
        return None
    try:
        body = response.json()
    except ValueError as error:
        info["error"] = str(error)
        resolution.step("well_known", "invalid", url=url, detail=str(error))
        resolution.check("well_known_server", False, "%s: %s; servers ignore it and fall through to SRV" % (url, error))
        return None
    target = body.get("m.server")
    problem = None
    if not isinstance(target, str):
        problem = "has no string \"m.server\" property"
    else:
        try:
            split_server_name(target)
        except MatrixNameError as error:
            problem = "\"m.server\" %r is not a server name: %s" % (target, error)
    if problem:
        info["error"] = problem
        resolution.step("well_known", "invalid", url=url, detail=problem)
        resolution.check("well_known_server", False, "%s %s; servers ignore it and fall through to SRV" % (url, problem))
        return None
    info["m_server"] = target
    resolution.step("well_known", "delegated", url=url, m_server=target, redirects=info["redirects"],
                    cache_control=info["cache_control"], expires=info["expires"])
    resolution.check("well_known_server", True, "%s delegates to %s" % (url, target))
    return target


def _srv_targets(resolution, hostname, resolver, cert_name, host_header, via_prefix):
    """Steps SRV _matrix-fed._tcp then _matrix._tcp.

    Returns the targets, [] when neither name has a record (the caller falls
    back to port 8448), or None when resolution must stop as it does in
    Synapse: a lookup that failed (SERVFAIL, time-out: Synapse re-raises the
    error instead of falling back) or a lone record with target ``.`` (RFC
    2782: the service is not available here). Both record a failed ``srv`` check.
    """
    for service, deprecated in (("_matrix-fed._tcp", False), ("_matrix._tcp", True)):
        name = "%s.%s" % (service, hostname)
        answer = resolver.srv(name)
        records = order_srv(answer.records) if answer.status == "ok" else []
        resolution.step("srv", answer.status if not (answer.status == "ok" and not records) else "unavailable",
                        name=name, records=answer.records, detail=answer.detail)
        stop = None
        if not answer.definitive:
            stop = "the SRV lookup of %s failed (%s); homeservers do not fall back to port %d then, so " \
                   "federation to this name fails until DNS answers" % (name, answer.detail or answer.status, DEFAULT_PORT)
        elif answer.status == "ok" and not records:
            stop = "%s has a single record with target '.': the service is declared unavailable, and " \
                   "homeservers stop there" % name
        if stop:
            resolution.method = "%ssrv_error" % (via_prefix + "_" if via_prefix else "")
            resolution.check("srv", False, stop)
            return None
        if records:
            via = "%ssrv%s" % (via_prefix + "_" if via_prefix else "", "_deprecated" if deprecated else "")
            if deprecated:
                resolution.warnings.append(
                    "%s uses the deprecated _matrix._tcp SRV record; publish _matrix-fed._tcp (Matrix 1.8)" % hostname)
            resolution.method = via
            return [Target(record["target"], record["port"], cert_name, host_header, via) for record in records]
    return []


def resolve(server_name, resolver, transport):
    """Run the specification's resolution for ``server_name``; returns a :class:`Resolution`.

    Raises :class:`MatrixNameError` for a server name outside the grammar.
    """
    host, port = split_server_name(server_name)
    kind = server_name_kind(server_name)
    resolution = Resolution(server_name)
    if kind != "dns":
        literal = host_literal(host)
        resolution.method = "ip_literal"
        resolution.step("ip_literal", "used", host=literal, port=port or DEFAULT_PORT)
        resolution.targets = [Target(literal, port or DEFAULT_PORT, literal, server_name, "ip_literal")]
        return resolution
    if port is not None:
        resolution.method = "explicit_port"
        resolution.step("explicit_port", "used", host=host, port=port)
        resolution.targets = [Target(host, port, host, server_name, "explicit_port")]
        return resolution

    delegated = _well_known(resolution, host, resolver, transport)
    if delegated is not None:
        d_host, d_port = split_server_name(delegated)
        literal = host_literal(d_host)
        if literal:
            resolution.method = "well_known_ip_literal"
            resolution.step("well_known_ip_literal", "used", host=literal, port=d_port or DEFAULT_PORT)
            resolution.targets = [Target(literal, d_port or DEFAULT_PORT, literal, delegated, resolution.method)]
            return resolution
        if d_port is not None:
            resolution.method = "well_known_explicit_port"
            resolution.step("well_known_explicit_port", "used", host=d_host, port=d_port)
            resolution.targets = [Target(d_host, d_port, d_host, delegated, resolution.method)]
            return resolution
        targets = _srv_targets(resolution, d_host, resolver, d_host, d_host, "well_known")
        if targets is None or targets:
            resolution.targets = targets or []
            return resolution
        resolution.method = "well_known_fallback"
        resolution.step("well_known_fallback", "used", host=d_host, port=DEFAULT_PORT)
        resolution.targets = [Target(d_host, DEFAULT_PORT, d_host, d_host, resolution.method)]
        return resolution

    targets = _srv_targets(resolution, host, resolver, host, host, "")
    if targets is None or targets:
        resolution.targets = targets or []
        return resolution
    resolution.method = "fallback"
    resolution.step("fallback", "used", host=host, port=DEFAULT_PORT)
    resolution.targets = [Target(host, DEFAULT_PORT, host, host, "fallback")]
    return resolution


# ------------------------------------------------------------------- checks


def _b64decode(text):
    if not isinstance(text, str):
        raise ValueError("not a string")
    text = text.strip()
    padded = text + "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not unpadded base64")


def signing_bytes(document):
    """The bytes a Matrix signature covers: canonical JSON without signatures/unsigned."""
    stripped = dict((key, value) for key, value in document.items() if key not in ("signatures", "unsigned"))
    text = canonical_json(stripped)
    if "\\u" in text:
        # canonical_json escapes non-ASCII; Matrix canonical JSON sends it as UTF-8.
        text = json.dumps(stripped, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def validate_key_response(document, server_name, now_ms):
    """Check a ``/_matrix/key/v2/server`` document; returns (passed, reason, key_ids)."""
    if not isinstance(document, dict):
        return False, "the key response is not a JSON object", []
    if document.get("server_name") != server_name:
        return False, "server_name is %r, expected %r" % (document.get("server_name"), server_name), []
    valid_until = document.get("valid_until_ts")
    if isinstance(valid_until, bool) or not isinstance(valid_until, int):
        return False, "valid_until_ts is missing or not an integer", []
    if valid_until <= now_ms:
        return False, "valid_until_ts %d is in the past (%d s ago)" % (valid_until, (now_ms - valid_until) // 1000), []
    verify_keys = document.get("verify_keys")
    if not isinstance(verify_keys, dict):
        return False, "verify_keys is missing or not an object", []
    keys = {}
    for key_id, entry in sorted(verify_keys.items()):
        if not key_id.startswith("ed25519:"):
            continue
        try:
            raw = _b64decode(entry.get("key") if isinstance(entry, dict) else None)
        except ValueError as error:
            return False, "verify_keys[%r].key is %s" % (key_id, error), []
        if len(raw) != ED25519_PUBLIC_KEY_BYTES:
            return False, "verify_keys[%r].key is %d bytes, an ed25519 key has 32" % (key_id, len(raw)), []
        keys[key_id] = raw
    if not keys:
        return False, "verify_keys holds no ed25519 key", []
    signatures = document.get("signatures")
    ours = signatures.get(server_name) if isinstance(signatures, dict) else None
    if not isinstance(ours, dict):
        return False, "no signatures by %s" % server_name, list(keys)
    if not HAS_CRYPTOGRAPHY:
        return False, "cannot verify the signatures: the Python library cryptography is missing", list(keys)
    message = signing_bytes(document)
    verified = []
    for key_id, public in sorted(keys.items()):
        if key_id not in ours:
            continue
        try:
            signature = _b64decode(ours[key_id])
        except ValueError as error:
            return False, "signature by %s is %s" % (key_id, error), list(keys)
        if not verify_ed25519(public, message, signature):
            return False, "the signature by %s does not verify" % key_id, list(keys)
        verified.append(key_id)
    if not verified:
        return False, "none of the ed25519 verify_keys (%s) signed the response" % ", ".join(sorted(keys)), list(keys)
    seconds = (valid_until - now_ms) // 1000
    return True, "signed by %s, valid for %d more seconds" % (", ".join(verified), seconds), list(keys)


def _request_check(name, target, address, transport, path, evaluate):
    label = address_label(address, target.port)
    try:
        response = transport.request(address, target.port, target.cert_name, target.host_header, path)
    except TransportError as error:
        return make_check(name, False, "GET %s: %s" % (path, error.message), label)
    passed, reason = evaluate(response)
    return make_check(name, passed, reason, label)


def _json_or_reason(response, path):
    if response.status != 200:
        return None, "GET %s answered HTTP %d: %s" % (path, response.status, response.body[:200].decode("utf-8", "replace"))
    try:
        return response.json(), None
    except ValueError as error:
        return None, "GET %s: %s" % (path, error)


def check_address(target, address, transport, server_name, checks, now_ms):
    """The per-address checks; returns a list of check dicts."""
    label = address_label(address, target.port)
    results = []
    if "tls" in checks or any(c in checks for c in ("key", "version", "encoded_slash")):
        try:
            info = transport.handshake(address, target.port, target.cert_name)
        except TransportError as error:
            results.append(make_check("tls", False, "%s (certificate name required: %s)" % (error.message, target.cert_name), label))
            return results
        if "tls" in checks:
            results.append(make_check("tls", True, "%s, certificate valid for %s" % (
                info.get("version") or "TLS", target.cert_name), label))

    def key_eval(response):
        data, reason = _json_or_reason(response, "/_matrix/key/v2/server")
        if data is None:
            return False, reason
        passed, reason, _ids = validate_key_response(data, server_name, now_ms)
        return passed, reason

    def version_eval(response):
        data, reason = _json_or_reason(response, "/_matrix/federation/v1/version")
        if data is None:
            return False, reason
        server = data.get("server")
        if not isinstance(server, dict) or not isinstance(server.get("name"), str):
            return False, "the version response has no server.name"
        return True, "%s %s" % (server.get("name"), server.get("version", ""))

    if "key" in checks:
        results.append(_request_check("key", target, address, transport, "/_matrix/key/v2/server", key_eval))
    if "version" in checks:
        results.append(_request_check("version", target, address, transport, "/_matrix/federation/v1/version", version_eval))
    if "encoded_slash" in checks:
        results.append(check_encoded_slash(target, address, transport, server_name))
    return results


def check_encoded_slash(target, address, transport, server_name):
    """Does a %2F in the path reach the homeserver un-decoded? (See SLASH_PROBE_PATH.)"""
    label = address_label(address, target.port)
    try:
        probe = transport.request(address, target.port, target.cert_name, target.host_header, SLASH_PROBE_PATH)
    except TransportError as error:
        return make_check("encoded_slash", False, "GET %s: %s" % (SLASH_PROBE_PATH, error.message), label)
    if probe.status == 200:
        try:
            name = probe.json().get("server_name")
        except ValueError:
            name = None
        if name == server_name:
            return make_check("encoded_slash", True, "GET %s reached the homeserver with %%2F intact" % SLASH_PROBE_PATH, label)
        return make_check("encoded_slash", False, "GET %s answered 200 but not with the key document of %s" % (
            SLASH_PROBE_PATH, server_name), label)
    try:
        control = transport.request(address, target.port, target.cert_name, target.host_header, SLASH_CONTROL_PATH)
    except TransportError as error:
        return make_check("encoded_slash", False, "GET %s: %s" % (SLASH_CONTROL_PATH, error.message), label)
    if control.status != 200:
        return make_check("encoded_slash", True, "inconclusive: the server does not answer the key-ID form %s (HTTP %d), "
                          "so the probe cannot tell" % (SLASH_CONTROL_PATH, control.status), label, skipped=True)
    return make_check("encoded_slash", False,
                      "GET %s answered HTTP %d while %s answered 200: the proxy decoded or refused %%2F "
                      "(nginx: proxy_pass without a URI part; Apache: AllowEncodedSlashes NoDecode and nocanon)"
                      % (SLASH_PROBE_PATH, probe.status, SLASH_CONTROL_PATH), label)


def check_client_well_known(server_name, resolver, transport):
    """CORS (and shape) of https://<hostname>/.well-known/matrix/client, when it exists."""
    host, _port = split_server_name(server_name)
    url = "https://%s/.well-known/matrix/client" % host
    try:
        response, _chain = fetch_url(url, resolver, transport)
    except TransportError as error:
        if error.kind in ("tls", "http", "redirect"):
            # Served, but broken: web clients cannot read it either.
            return make_check("client_well_known", False, "%s: %s" % (url, error.message))
        return make_check("client_well_known", True, "%s not served (%s): nothing to check" % (url, error.message), skipped=True)
    if response.status in (404, 410):
        return make_check("client_well_known", True, "%s answered %d: nothing to check" % (url, response.status), skipped=True)
    if response.status != 200:
        return make_check("client_well_known", False, "%s answered HTTP %d" % (url, response.status))
    problems = []
    cors = response.headers.get("access-control-allow-origin")
    if cors != "*":
        problems.append("Access-Control-Allow-Origin is %s, web clients need '*'" % ("missing" if cors is None else repr(cors)))
    try:
        body = response.json()
        base_url = body.get("m.homeserver", {}).get("base_url") if isinstance(body.get("m.homeserver"), dict) else None
        if not isinstance(base_url, str):
            problems.append("m.homeserver.base_url is missing")
    except ValueError as error:
        problems.append(str(error))
    if problems:
        return make_check("client_well_known", False, "%s: %s" % (url, "; ".join(problems)))
    return make_check("client_well_known", True, "%s: CORS '*', m.homeserver.base_url %s" % (url, base_url))


def run_checks(server_name, resolver, transport, checks=CHECKS, now_ms=None):
    """Resolve ``server_name`` and run ``checks``; returns the module's result dict."""
    if now_ms is None:
        now_ms = int(time.time() * 1000)
    resolution = resolve(server_name, resolver, transport)
    all_checks = list(resolution.checks)
    addresses = []
    for target in resolution.targets:
        literal = host_literal(target.host) or (target.host if ":" in target.host else None)
        if literal:
            found = [literal]
        else:
            answer = resolver.addresses(target.host)
            found = answer.records
            resolution.step("addresses", answer.status, host=target.host, addresses=found, detail=answer.detail)
            if not found:
                all_checks.append(make_check("addresses", False, "%s has no AAAA or A record (%s)" % (
                    target.host, answer.detail or answer.status)))
                continue
        for address in found:
            addresses.append(address_label(address, target.port))
            all_checks.extend(check_address(target, address, transport, server_name, checks, now_ms))
    if "client_well_known" in checks:
        all_checks.append(check_client_well_known(server_name, resolver, transport))
    first = resolution.targets[0] if resolution.targets else None
    failed = [check for check in all_checks if not check["passed"]]
    return {
        "server_name": server_name,
        "method": resolution.method,
        "host": first.host if first else None,
        "port": first.port if first else None,
        "cert_name": first.cert_name if first else None,
        "host_header": first.host_header if first else None,
        "targets": [target.as_dict() for target in resolution.targets],
        "addresses": addresses,
        "steps": resolution.steps,
        "well_known": resolution.well_known,
        "checks": all_checks,
        "failed_checks": ["%s%s" % (check["name"], " (%s)" % check["address"] if check["address"] else "") for check in failed],
        "passed": not failed,
        "warnings": resolution.warnings,
    }


def summary(result):
    """One readable paragraph for the task's msg."""
    where = "%s -> %s:%s (%s, certificate name %s)" % (
        result["server_name"], result["host"], result["port"], result["method"], result["cert_name"])
    failed = [check for check in result["checks"] if not check["passed"]]
    if not failed:
        return "federation checks passed for %s" % where
    lines = ["%s%s: %s" % (check["name"], " [%s]" % check["address"] if check["address"] else "", check["reason"])
             for check in failed]
    return "federation check failed for %s: %d of %d checks failed: %s" % (
        where, len(failed), len(result["checks"]), "; ".join(lines))
