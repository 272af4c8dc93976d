"""SRV delegation end to end: hs1 finds other.test only through its SRV records.

The dns host (the pebble container) runs unbound with the zone lines that
mxedge.matrix.srv_records renders for other.test, `_matrix-fed._tcp` and the
deprecated `_matrix._tcp` (target fed.other.test, port 8449), and an A record
for the target; both homeservers resolve through it (molecule/acme/prepare.yml).
hs2's federation listener is on 8449 and other.test has no well-known
delegation, so the spec's other paths lead nowhere: a server that did not
follow the SRV record would try other.test:8448, where nothing listens. The
certificate hs2 presents there is Pebble's for other.test: the spec requires
the server name, not the SRV target, as TLS name and Host.
"""

import json
import pathlib
import shlex
import ssl
import sys

import pytest
import testinfra

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "tests"))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

# The topology fixtures, used by name by pytest.
from conftest import hs1, hs2, module_utils  # noqa: E402,F401  # pylint: disable=unused-import
from conftest import INVENTORY, RUNNER, federation_check, port_open  # noqa: E402
from test_acme import pebble_root, ssl_context  # noqa: E402,F401  # pylint: disable=unused-import
from test_acme import _served_certificate  # noqa: E402

SRV_SERVICES = ("_matrix-fed._tcp", "_matrix._tcp")

# Runs on a homeserver: dnspython's resolver configured from /etc/resolv.conf, as
# Synapse's own resolvers are. Prints the nameservers and each answer's text.
DNS_QUERY = """
import json, sys
import dns.exception, dns.resolver
resolver = dns.resolver.Resolver()
answers = {}
for name, rdtype in json.loads(sys.argv[1]):
    try:
        answer = resolver.resolve(name, rdtype)
        answers[name + " " + rdtype] = {"server": answer.nameserver, "lines": answer.rrset.to_text().splitlines()}
    except dns.exception.DNSException as error:
        answers[name + " " + rdtype] = {"error": type(error).__name__}
print(json.dumps({"nameservers": resolver.nameservers, "answers": answers}))
"""


@pytest.fixture(scope="session")
def dns_address():
    """The address of the topology's DNS server (the dns group's one host)."""
    (name,) = RUNNER.get_hosts("dns")
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}").check_output("hostname -I").split()[0]


@pytest.fixture(scope="session")
def srv(hs2, module_utils):  # noqa: F811
    """What the SRV delegation of hs2 is: its target, its port and the filter's zone lines."""
    # The module_utils fixture puts this checkout's collection on sys.path.
    from ansible_collections.mxedge.matrix.plugins.filter.srv_records import srv_records  # noqa: PLC0415

    target, port = hs2.vars["mxedge_srv_target"], int(hs2.vars["matrix_federation_port"])
    return {"target": target, "port": port, "lines": srv_records(hs2.server_name, target, port, legacy=True)}


def _resolve(node, queries):
    output = node.host.check_output(f"python3 -c {shlex.quote(DNS_QUERY)} {shlex.quote(json.dumps(queries))}")
    return json.loads(output)


@pytest.mark.parametrize("resolver_host", ["hs1", "hs2"])
def test_dns_server_answers_the_srv_records_the_filter_renders(request, hs2, dns_address, srv, resolver_host):
    """The homeservers resolve through unbound, which serves srv_records' lines exactly.

    Both SRV names answer with the filter's zone lines, byte for byte (owner, TTL,
    priority, weight, port, target), from the dns host; the SRV target has hs2's
    address; other.test itself still resolves (Docker's network alias, forwarded).
    """
    node = request.getfixturevalue(resolver_host)
    names = [f"{service}.{hs2.server_name}" for service in SRV_SERVICES]
    queries = [[name, "SRV"] for name in names] + [[srv["target"], "A"], [hs2.server_name, "A"]]
    found = _resolve(node, queries)
    assert found["nameservers"] == [dns_address], found
    served = []
    for name in names:
        answer = found["answers"][f"{name} SRV"]
        assert answer.get("server") == dns_address, (name, answer)
        served += answer["lines"]
    assert served == srv["lines"], (served, srv["lines"])
    assert found["answers"][f"{srv['target']} A"]["lines"] == [f"{srv['target']}. 3600 IN A {hs2.ip}"], found
    assert found["answers"][f"{hs2.server_name} A"]["lines"][0].endswith(f" IN A {hs2.ip}"), found


def test_nothing_answers_on_the_fallback_port(hs1, hs2, srv):
    """MX02: hs2's federation listener is on the SRV port only; the spec's other paths lead nowhere.

    No well-known delegation for other.test (404) and nothing on other.test:8448, where a
    server that ignored the SRV record would connect; the federation listener answers on
    the SRV port for Host other.test.
    """
    assert not port_open(hs2.ip, 8448)
    assert port_open(hs2.ip, srv["port"])
    well_known, fallback, listener = hs1.curl_many([
        (f"https://{hs2.server_name}/.well-known/matrix/server", ()),
        (f"https://{hs2.server_name}:8448/_matrix/federation/v1/version", ()),
        (f"https://{hs2.server_name}:{srv['port']}/_matrix/federation/v1/version", ()),
    ])
    assert well_known[0] == 404, well_known
    assert fallback[0] == 0, fallback  # curl could not connect
    assert listener[0] == 200 and b"server" in listener[2], listener


def test_federation_check_reports_the_srv_path(hs1, hs2, srv):
    """MX02, MX09: federation_check on hs1 finds other.test through _matrix-fed._tcp and passes.

    Method srv, host and port from the record, certificate name and Host other.test
    (the server name, not the SRV target); the SRV step carries the record the filter
    rendered; every check passes on hs2's address at the SRV port against Pebble's root.
    """
    failed, result = federation_check(hs1, hs2.server_name, ca_path=hs1.vars["mxedge_pebble_root"])
    assert not failed, result.get("msg", result)
    assert (result["method"], result["host"], result["port"], result["cert_name"], result["host_header"]) == (
        "srv", srv["target"], srv["port"], hs2.server_name, hs2.server_name)
    assert result["passed"] is True and result["failed_checks"] == []
    assert result["addresses"] == [f"{hs2.ip}:{srv['port']}"], result["addresses"]
    fields = srv["lines"][0].split()  # name ttl IN SRV priority weight port target.
    record = {"priority": int(fields[4]), "weight": int(fields[5]), "port": int(fields[6]), "target": fields[7].rstrip(".")}
    steps = [step for step in result["steps"] if step["step"] == "srv"]
    # The current record answers, so the deprecated one is not asked for.
    assert [(step["name"], step["outcome"], step["records"]) for step in steps] == [
        (f"_matrix-fed._tcp.{hs2.server_name}", "ok", [record])], steps
    names = {check["name"] for check in result["checks"] if check["address"]}
    assert names == {"tls", "key", "version", "encoded_slash"}, result["checks"]
    assert all(check["passed"] for check in result["checks"]), result["checks"]


def test_srv_target_presents_the_server_names_certificate(hs2, srv, ssl_context):
    """MX09: on the SRV target's port the certificate is valid for other.test, not for the target.

    A TLS connection to the SRV port verified against Pebble's root succeeds for the
    server name and fails for the SRV target's name, on the hostname (the listener
    answers any SNI with the same certificate): a server that checked the SRV
    target's name instead of the spec's could not federate with other.test.
    """
    cert = _served_certificate(hs2, hs2.server_name, srv["port"], ssl_context)
    sans = sorted(value for kind, value in cert["subjectAltName"] if kind == "DNS")
    assert sans == [hs2.server_name], sans
    with pytest.raises(ssl.SSLCertVerificationError) as error:
        _served_certificate(hs2, srv["target"], srv["port"], ssl_context)
    assert "hostname mismatch" in error.value.verify_message.lower(), error.value
