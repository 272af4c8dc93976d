"""plugins/module_utils/federation_dns.py: packet encode/decode and the stub resolver with fake servers."""

import socket
import struct

import pytest

from ansible_collections.mxedge.matrix.plugins.module_utils import federation_dns as dns

SRV = {"priority": 10, "weight": 5, "port": 8448, "target": "matrix.example.com"}


@pytest.mark.parametrize(
    ("name", "wire"),
    [
        ("example.com", b"\x07example\x03com\x00"),
        ("example.com.", b"\x07example\x03com\x00"),
        ("_matrix-fed._tcp.example.com", b"\x0b_matrix-fed\x04_tcp\x07example\x03com\x00"),
        ("", b"\x00"),
    ],
)
def test_encode_name(name, wire):
    assert dns.encode_name(name) == wire


@pytest.mark.parametrize("name", ["a..b", "a" * 64 + ".com", ".".join(["a" * 60] * 5)])
def test_encode_name_refuses_bad_names(name):
    with pytest.raises(dns.DnsError):
        dns.encode_name(name)


def test_query_layout():
    query = dns.encode_query("_matrix-fed._tcp.example.com", dns.TYPE_SRV, 0x1234)
    assert query[:12] == struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    assert query[-4:] == struct.pack("!HH", 33, 1)
    parsed = dns.decode_response(query)
    assert parsed["questions"] == [("_matrix-fed._tcp.example.com", 33, 1)]
    assert parsed["response"] is False


@pytest.mark.parametrize(
    ("rtype", "data"),
    [
        (dns.TYPE_A, "192.0.2.1"),
        (dns.TYPE_AAAA, "2001:db8::1"),
        (dns.TYPE_SRV, SRV),
        (dns.TYPE_SRV, {"priority": 0, "weight": 0, "port": 1, "target": ""}),
        (dns.TYPE_CNAME, "alias.example.com"),
    ],
)
def test_response_round_trip(rtype, data):
    message = dns.encode_response(7, [("q.example.com", rtype)], [("q.example.com", rtype, 300, data)])
    parsed = dns.decode_response(message)
    assert parsed["id"] == 7 and parsed["response"] and parsed["rcode"] == 0 and not parsed["truncated"]
    assert parsed["answers"] == [{"name": "q.example.com", "type": rtype, "class": 1, "ttl": 300, "data": data}]


def test_compressed_names_are_followed():
    # Question name at offset 12; the answer's owner and SRV target point back into it.
    header = struct.pack("!HHHHHH", 9, 0x8180, 1, 1, 0, 0)
    question = dns.encode_name("_matrix-fed._tcp.example.com") + struct.pack("!HH", 33, 1)
    # target "matrix" + pointer to "example.com" (offset 12 + 1+11 + 1+4 = 29)
    rdata = struct.pack("!HHH", 1, 2, 443) + b"\x06matrix\xc0\x1d"
    answer = b"\xc0\x0c" + struct.pack("!HHIH", 33, 1, 60, len(rdata)) + rdata
    parsed = dns.decode_response(header + question + answer)
    record = parsed["answers"][0]
    assert record["name"] == "_matrix-fed._tcp.example.com"
    assert record["data"] == {"priority": 1, "weight": 2, "port": 443, "target": "matrix.example.com"}


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(b"\x00" * 5, id="short-header"),
        pytest.param(struct.pack("!HHHHHH", 1, 0x8180, 1, 0, 0, 0) + b"\x07exam", id="truncated-name"),
        pytest.param(struct.pack("!HHHHHH", 1, 0x8180, 1, 0, 0, 0) + b"\xc0\x0c", id="pointer-loop"),
        pytest.param(struct.pack("!HHHHHH", 1, 0x8180, 0, 1, 0, 0) + b"\x00" + struct.pack("!HHIH", 1, 1, 1, 9) + b"\x01",
                     id="rdata-past-end"),
    ],
)
def test_malformed_messages_raise(message):
    with pytest.raises(dns.DnsError):
        dns.decode_response(message)


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        ([], []),
        ([{"priority": 0, "weight": 0, "port": 0, "target": ""}], []),
        ([dict(SRV, priority=20, target="b"), dict(SRV, priority=10, target="a")], ["a", "b"]),
        ([dict(SRV, weight=1, target="light"), dict(SRV, weight=9, target="heavy")], ["heavy", "light"]),
    ],
)
def test_order_srv(records, expected):
    assert [record["target"] for record in dns.order_srv(records)] == expected


class FakeNameserver:
    """exchange() for StubResolver: answers from a table, records the calls."""

    def __init__(self, table, truncate_udp=False, fail=None):
        self.table = table
        self.truncate_udp = truncate_udp
        self.fail = fail or {}
        self.calls = []

    def __call__(self, query, server, tcp, timeout):
        self.calls.append((server, tcp))
        if server in self.fail:
            raise self.fail[server]
        parsed = dns.decode_response(query)
        name, qtype, _qclass = parsed["questions"][0]
        rcode, records = self.table.get((name, qtype), (3, []))
        if self.truncate_udp and not tcp:
            return dns.encode_response(parsed["id"], [(name, qtype)], [], rcode=0, truncated=True)
        answers = [(name, qtype, 60, record) for record in records]
        return dns.encode_response(parsed["id"], [(name, qtype)], answers, rcode=rcode)


TABLE = {
    ("_matrix-fed._tcp.example.com", 33): (0, [SRV]),
    ("example.com", 1): (0, ["192.0.2.1"]),
    ("nodata.example.com", 33): (0, []),
    ("broken.example.com", 33): (2, []),
    ("refused.example.com", 33): (5, []),
}


@pytest.mark.parametrize(
    ("name", "qtype", "status", "records"),
    [
        ("_matrix-fed._tcp.example.com", 33, "ok", [SRV]),
        ("example.com", 1, "ok", ["192.0.2.1"]),
        ("_matrix._tcp.example.com", 33, "nxdomain", []),
        ("nodata.example.com", 33, "nodata", []),
        ("broken.example.com", 33, "servfail", []),
        ("refused.example.com", 33, "refused", []),
    ],
)
def test_stub_resolver_statuses(name, qtype, status, records):
    resolver = dns.StubResolver(["192.0.2.53"], exchange=FakeNameserver(TABLE), attempts=1)
    answer = resolver.lookup(name, qtype)
    assert (answer.status, answer.records) == (status, records)
    assert answer.definitive == (status in ("ok", "nodata", "nxdomain"))


def test_truncated_udp_answer_retried_over_tcp():
    fake = FakeNameserver(TABLE, truncate_udp=True)
    answer = dns.StubResolver(["192.0.2.53"], exchange=fake).lookup("_matrix-fed._tcp.example.com", 33)
    assert answer.records == [SRV]
    assert fake.calls == [("192.0.2.53", False), ("192.0.2.53", True)]


def test_next_nameserver_after_timeout():
    fake = FakeNameserver(TABLE, fail={"192.0.2.1": socket.timeout()})
    answer = dns.StubResolver(["192.0.2.1", "192.0.2.2"], exchange=fake, attempts=1).lookup("example.com", 1)
    assert answer.status == "ok" and answer.server == "192.0.2.2"


def test_all_nameservers_time_out():
    fake = FakeNameserver(TABLE, fail={"192.0.2.1": socket.timeout()})
    answer = dns.StubResolver(["192.0.2.1"], exchange=fake, attempts=2).lookup("example.com", 1)
    assert answer.status == "timeout" and len(fake.calls) == 2


def test_mismatched_id_is_an_error():
    def exchange(query, server, tcp, timeout):
        return dns.encode_response(1 + struct.unpack("!H", query[:2])[0] & 0xFFFF, [("example.com", 1)], [])

    answer = dns.StubResolver(["192.0.2.1"], exchange=exchange, attempts=1).lookup("example.com", 1)
    assert answer.status == "error"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nameserver 127.0.0.11\noptions ndots:0\n", ["127.0.0.11"]),
        ("# comment\nnameserver 192.0.2.1 # x\nnameserver 2001:db8::1\nsearch example\n", ["192.0.2.1", "2001:db8::1"]),
        ("search example\n", ["127.0.0.1"]),
    ],
)
def test_read_nameservers(tmp_path, text, expected):
    path = tmp_path / "resolv.conf"
    path.write_text(text)
    assert dns.read_nameservers(str(path)) == expected


def test_read_nameservers_missing_file(tmp_path):
    assert dns.read_nameservers(str(tmp_path / "missing")) == ["127.0.0.1"]


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("192.0.2.1", (socket.AF_INET, ("192.0.2.1", 53))),
        ("192.0.2.1#5353", (socket.AF_INET, ("192.0.2.1", 5353))),
        ("127.0.0.1:5353", (socket.AF_INET, ("127.0.0.1", 5353))),
        ("2001:db8::1", (socket.AF_INET6, ("2001:db8::1", 53, 0, 0))),
        ("[2001:db8::1]:5353", (socket.AF_INET6, ("2001:db8::1", 5353, 0, 0))),
    ],
)
def test_server_address(server, expected):
    assert dns._server_address(server) == expected


def test_real_udp_and_tcp_round_trip_on_loopback():
    """The socket path, against a one-shot nameserver on 127.0.0.1 (UDP truncates, TCP answers)."""
    import threading  # noqa: PLC0415

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    port = udp.getsockname()[1]
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", port))
    tcp.listen(1)
    fake = FakeNameserver(TABLE)

    def serve():
        data, peer = udp.recvfrom(512)
        parsed = dns.decode_response(data)
        udp.sendto(dns.encode_response(parsed["id"], [parsed["questions"][0][:2]], [], truncated=True), peer)
        conn, _peer = tcp.accept()
        with conn:
            (length,) = struct.unpack("!H", conn.recv(2))
            query = conn.recv(length)
            reply = fake(query, "x", True, 1)
            conn.sendall(struct.pack("!H", len(reply)) + reply)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        answer = dns.StubResolver(["127.0.0.1#%d" % port], timeout=5, attempts=1).lookup("_matrix-fed._tcp.example.com", 33)
    finally:
        thread.join(10)
        udp.close()
        tcp.close()
    assert answer.status == "ok" and answer.records == [SRV]
