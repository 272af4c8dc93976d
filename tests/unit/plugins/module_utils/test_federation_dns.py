"""plugins/module_utils/federation_dns.py: dnspython's resolver behind DnsResolver.

The lookups run dnspython's real resolution logic (rcodes, NoAnswer, CNAME chains,
retries over nameservers, lifetimes) against fake nameservers that answer with
dnspython message objects, and once over real UDP and TCP on loopback.
"""

import socket
import threading

import dns.exception
import dns.flags
import dns.message
import dns.nameserver
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.rrset
import pytest

from ansible_collections.mxedge.matrix.plugins.module_utils import federation_dns as fdns

SRV = {"priority": 10, "weight": 5, "port": 8448, "target": "matrix.example.com"}

# (owner, type) -> (rcode, [(owner, type, rdata text)]); missing names are NXDOMAIN.
TABLE = {
    ("_matrix-fed._tcp.example.com.", "SRV"): (
        dns.rcode.NOERROR, [("_matrix-fed._tcp.example.com.", "SRV", "10 5 8448 matrix.example.com.")]),
    ("_matrix-fed._tcp.dot.example.com.", "SRV"): (dns.rcode.NOERROR, [("_matrix-fed._tcp.dot.example.com.", "SRV", "0 0 0 .")]),
    ("example.com.", "A"): (dns.rcode.NOERROR, [("example.com.", "A", "192.0.2.1")]),
    ("example.com.", "AAAA"): (dns.rcode.NOERROR, [("example.com.", "AAAA", "2001:db8::1")]),
    ("v4only.example.com.", "A"): (dns.rcode.NOERROR, [("v4only.example.com.", "A", "192.0.2.4")]),
    ("v4only.example.com.", "AAAA"): (dns.rcode.NOERROR, []),
    ("alias.example.com.", "A"): (
        dns.rcode.NOERROR, [("alias.example.com.", "CNAME", "example.com."), ("example.com.", "A", "192.0.2.1")]),
    ("nodata.example.com.", "SRV"): (dns.rcode.NOERROR, []),
    ("broken.example.com.", "SRV"): (dns.rcode.SERVFAIL, []),
    ("refused.example.com.", "SRV"): (dns.rcode.REFUSED, []),
}


def make_response(request, table=None):
    """A nameserver's answer to ``request`` from ``table`` (TABLE by default), as a dnspython message."""
    question = request.question[0]
    key = (question.name.to_text(), dns.rdatatype.to_text(question.rdtype))
    rcode, records = (table or TABLE).get(key, (dns.rcode.NXDOMAIN, []))
    response = dns.message.make_response(request)
    response.set_rcode(rcode)
    for owner, rdtype, text in records:
        response.answer.append(dns.rrset.from_text(owner, 60, "IN", rdtype, text))
    # Through the wire format, as from a real nameserver (this also indexes the sections).
    return dns.message.from_wire(response.to_wire())


class FakeNameserver(dns.nameserver.Nameserver):
    """A nameserver for dnspython's resolver: answers from TABLE, or raises ``fail``."""

    def __init__(self, address, fail=None, rcode=None):
        super().__init__()
        self.address = address
        self.fail = fail
        self.rcode = rcode
        self.calls = 0

    def __str__(self):
        return self.address

    def kind(self):
        return "Fake"

    def is_always_max_size(self):
        return False

    def answer_nameserver(self):
        return self.address

    def answer_port(self):
        return 53

    def query(self, request, timeout, source, source_port, max_size, one_rr_per_rrset=False, ignore_trailing=False):
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        response = make_response(request)
        if self.rcode is not None:
            response.set_rcode(self.rcode)
        return response

    async def async_query(self, *args, **kwargs):  # pragma: no cover - never used
        raise NotImplementedError


def fake_resolver(*nameservers, lifetime=2.0):
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = list(nameservers or [FakeNameserver("192.0.2.53")])
    resolver.cache = None
    resolver.timeout = 0.1
    resolver.lifetime = lifetime
    return fdns.DnsResolver(resolver=resolver)


@pytest.mark.parametrize(
    ("name", "rdtype", "status", "records"),
    [
        ("_matrix-fed._tcp.example.com", "SRV", "ok", [SRV]),
        ("_matrix-fed._tcp.dot.example.com", "SRV", "ok", [{"priority": 0, "weight": 0, "port": 0, "target": "."}]),
        ("example.com", "A", "ok", ["192.0.2.1"]),
        ("example.com.", "AAAA", "ok", ["2001:db8::1"]),
        ("alias.example.com", "A", "ok", ["192.0.2.1"]),
        ("_matrix._tcp.example.com", "SRV", "nxdomain", []),
        ("nodata.example.com", "SRV", "nodata", []),
        ("broken.example.com", "SRV", "servfail", []),
        ("refused.example.com", "SRV", "refused", []),
        ("a" * 64 + ".example.com", "SRV", "error", []),
        ("a..b", "SRV", "error", []),
    ],
)
def test_lookup_statuses(name, rdtype, status, records):
    answer = fake_resolver().lookup(name, rdtype)
    assert (answer.status, answer.records) == (status, records), answer.detail
    assert answer.definitive == (status in ("ok", "nodata", "nxdomain"))
    assert answer.server == ("192.0.2.53" if status == "ok" else None)


def test_failure_details_name_the_server_and_rcode():
    answer = fake_resolver().srv("broken.example.com")
    assert answer.detail == "192.0.2.53 answered SERVFAIL"
    assert "NXDOMAIN" in fake_resolver().srv("_matrix._tcp.example.com").detail


def test_servfail_wins_over_refused():
    resolver = fake_resolver(FakeNameserver("192.0.2.1", rcode=dns.rcode.REFUSED),
                             FakeNameserver("192.0.2.2", rcode=dns.rcode.SERVFAIL))
    answer = resolver.srv("_matrix-fed._tcp.example.com")
    assert answer.status == "servfail"
    assert answer.detail == "192.0.2.1 answered REFUSED; 192.0.2.2 answered SERVFAIL"


def test_next_nameserver_after_timeout():
    first = FakeNameserver("192.0.2.1", fail=dns.exception.Timeout())
    answer = fake_resolver(first, FakeNameserver("192.0.2.2")).lookup("example.com", "A")
    assert answer.status == "ok" and answer.server == "192.0.2.2" and first.calls == 1


def test_all_nameservers_time_out():
    silent = FakeNameserver("192.0.2.1", fail=dns.exception.Timeout())
    answer = fake_resolver(silent, lifetime=0.5).lookup("example.com", "A")
    assert answer.status == "timeout" and not answer.definitive and silent.calls >= 2
    assert "no answer to the A query within 0.5s" in answer.detail


def test_unreachable_nameserver_is_an_error():
    answer = fake_resolver(FakeNameserver("192.0.2.1", fail=ConnectionRefusedError("refused"))).srv("example.com")
    assert answer.status == "error" and "192.0.2.1: refused" in answer.detail


@pytest.mark.parametrize(
    ("host", "status", "records"),
    [
        ("example.com", "ok", ["2001:db8::1", "192.0.2.1"]),
        ("v4only.example.com", "ok", ["192.0.2.4"]),
        ("missing.example.com", "nxdomain", []),
        ("broken.example.com", "servfail", []),
    ],
)
def test_addresses_aaaa_then_a(host, status, records):
    table = dict(TABLE)
    table[("broken.example.com.", "A")] = table[("broken.example.com.", "AAAA")] = (dns.rcode.SERVFAIL, [])
    resolver = fake_resolver()
    resolver.resolver.nameservers[0].query = lambda request, *args, **kwargs: make_response(request, table)
    answer = resolver.addresses(host)
    assert (answer.status, answer.records) == (status, records)


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        ([], []),
        ([{"priority": 0, "weight": 0, "port": 0, "target": "."}], []),
        ([{"priority": 0, "weight": 0, "port": 0, "target": ""}], []),
        ([dict(SRV, priority=20, target="b"), dict(SRV, priority=10, target="a")], ["a", "b"]),
        ([dict(SRV, weight=1, target="light"), dict(SRV, weight=9, target="heavy")], ["heavy", "light"]),
        ([dict(SRV, priority=20, weight=9, target="c"), dict(SRV, weight=1, target="b"), dict(SRV, weight=9, target="a")],
         ["a", "b", "c"]),
    ],
)
def test_order_srv(records, expected):
    assert [record["target"] for record in fdns.order_srv(records)] == expected


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("192.0.2.1", ("192.0.2.1", 53)),
        ("192.0.2.1#5353", ("192.0.2.1", 5353)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("2001:db8::1", ("2001:db8::1", 53)),
        ("2001:db8::1#5353", ("2001:db8::1", 5353)),
        ("[2001:db8::1]:5353", ("2001:db8::1", 5353)),
        ("[2001:db8::1]", ("2001:db8::1", 53)),
    ],
)
def test_parse_nameserver(server, expected):
    assert fdns.parse_nameserver(server) == expected


@pytest.mark.parametrize("server", ["ns.example.com", "192.0.2.1#0", "192.0.2.1:x", "[2001:db8::1]x", "192.0.2.1#70000", ""])
def test_parse_nameserver_refuses(server):
    with pytest.raises(ValueError):
        fdns.parse_nameserver(server)


def test_make_resolver_with_nameservers():
    resolver = fdns.make_resolver(["192.0.2.1#5353", "[2001:db8::1]:53"], timeout=3)
    assert list(resolver.nameservers) == ["192.0.2.1", "2001:db8::1"]
    assert resolver.nameserver_ports == {"192.0.2.1": 5353, "2001:db8::1": 53}
    assert (resolver.timeout, resolver.lifetime, resolver.cache) == (3.0, 12.0, None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nameserver 127.0.0.11\noptions ndots:0\n", ["127.0.0.11"]),
        ("# comment\nnameserver 192.0.2.1\nnameserver 2001:db8::1\nsearch example\n", ["192.0.2.1", "2001:db8::1"]),
        ("search example\n", ["127.0.0.1"]),
    ],
)
def test_make_resolver_reads_resolv_conf(tmp_path, text, expected):
    path = tmp_path / "resolv.conf"
    path.write_text(text)
    resolver = fdns.make_resolver(timeout=5, resolv_conf=str(path))
    assert [str(server) for server in resolver.nameservers] == expected
    assert resolver.lifetime == 10.0 * len(expected) and resolver.cache is None


def test_make_resolver_without_resolv_conf(tmp_path):
    assert list(fdns.make_resolver(resolv_conf=str(tmp_path / "missing")).nameservers) == ["127.0.0.1"]


def test_real_udp_and_tcp_round_trip_on_loopback():
    """dnspython's socket path through make_resolver's address#port: UDP answers truncated, TCP answers."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    port = udp.getsockname()[1]
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", port))
    tcp.listen(1)
    seen = []

    def serve():
        data, peer = udp.recvfrom(4096)
        query = dns.message.from_wire(data)
        seen.append("udp")
        truncated = dns.message.make_response(query)
        truncated.flags |= dns.flags.TC
        udp.sendto(truncated.to_wire(), peer)
        conn, _peer = tcp.accept()
        with conn:
            conn.settimeout(5)
            length = int.from_bytes(conn.recv(2), "big")
            data = b""
            while len(data) < length:
                data += conn.recv(length - len(data))
            seen.append("tcp")
            reply = make_response(dns.message.from_wire(data)).to_wire()
            conn.sendall(len(reply).to_bytes(2, "big") + reply)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        answer = fdns.DnsResolver(["127.0.0.1#%d" % port], timeout=5, attempts=1).srv("_matrix-fed._tcp.example.com")
    finally:
        thread.join(10)
        udp.close()
        tcp.close()
    assert (answer.status, answer.records, seen) == ("ok", [SRV], ["udp", "tcp"]), answer.detail
