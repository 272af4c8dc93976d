# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""A small DNS stub resolver for SRV, A and AAAA (RFC 1035, RFC 2782, RFC 3596).

The ``federation_check`` module runs with the target host's system Python,
where dnspython is not guaranteed, and the standard library cannot look up SRV
records. This client sends one recursive query over UDP to the nameservers of
``/etc/resolv.conf`` (or the ones given), retries over TCP when the answer is
truncated, and decodes the answer section (name compression included).

:func:`lookup` returns a :class:`DnsAnswer` whose ``status`` tells "records
found" (``ok``) from "no such name" (``nxdomain``), "name exists, no records
of this type" (``nodata``) and the failures (``servfail``, ``refused``,
``timeout``, ``error``): server discovery treats the first three as an answer
and the others as "no record found" with a warning.

Standard library only; Python 3.8+.
"""

import random
import socket
import struct

TYPE_A = 1
TYPE_CNAME = 5
TYPE_AAAA = 28
TYPE_SRV = 33
CLASS_IN = 1

_RCODES = {0: "ok", 1: "formerr", 2: "servfail", 3: "nxdomain", 4: "notimp", 5: "refused"}
_MAX_POINTERS = 64
RESOLV_CONF = "/etc/resolv.conf"


class DnsError(Exception):
    """A malformed message (ours or the server's)."""


class DnsAnswer:
    """Result of one lookup.

    ``status``: ``ok``, ``nodata``, ``nxdomain``, ``servfail``, ``refused``,
    ``timeout`` or ``error``; ``records``: decoded answers of the asked type
    (SRV: dicts with priority, weight, port, target; A/AAAA: address text);
    ``server``: the nameserver that answered; ``detail``: text for humans.
    """

    def __init__(self, status, records=None, server=None, detail=""):
        self.status = status
        self.records = list(records or [])
        self.server = server
        self.detail = detail

    @property
    def found(self):
        return self.status == "ok" and bool(self.records)

    @property
    def definitive(self):
        """True when the DNS answered (records, no such name, or no such record)."""
        return self.status in ("ok", "nodata", "nxdomain")

    def as_dict(self):
        return {"status": self.status, "records": self.records, "server": self.server, "detail": self.detail}


# ------------------------------------------------------------------ encoding


def encode_name(name):
    """Wire form of a domain name (sequence of length-prefixed labels, then 0)."""
    name = name.rstrip(".")
    out = bytearray()
    if name:
        for label in name.split("."):
            raw = label.encode("ascii")
            if not raw or len(raw) > 63:
                raise DnsError("invalid DNS label %r in %r" % (label, name))
            out.append(len(raw))
            out += raw
    out.append(0)
    if len(out) > 255:
        raise DnsError("DNS name %r is longer than 255 octets" % name)
    return bytes(out)


def encode_query(name, qtype, query_id):
    """A standard recursive query (RD set) for ``name``/``qtype``/IN."""
    header = struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0)
    return header + encode_name(name) + struct.pack("!HH", qtype, CLASS_IN)


def decode_name(message, offset):
    """Decode a possibly compressed name at ``offset``; returns (name, next offset)."""
    labels = []
    end = None
    jumps = 0
    while True:
        if offset >= len(message):
            raise DnsError("name runs past the end of the message")
        length = message[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(message):
                raise DnsError("truncated compression pointer")
            if end is None:
                end = offset + 2
            jumps += 1
            if jumps > _MAX_POINTERS:
                raise DnsError("compression pointer loop")
            offset = ((length & 0x3F) << 8) | message[offset + 1]
            continue
        if length & 0xC0:
            raise DnsError("unsupported label type 0x%02x" % length)
        offset += 1
        if length == 0:
            break
        if offset + length > len(message):
            raise DnsError("label runs past the end of the message")
        labels.append(message[offset:offset + length].decode("ascii", "replace"))
        offset += length
    return ".".join(labels), (end if end is not None else offset)


def _decode_rdata(message, rtype, start, length):
    rdata = message[start:start + length]
    if rtype == TYPE_A:
        if length != 4:
            raise DnsError("A record of %d octets" % length)
        return socket.inet_ntop(socket.AF_INET, rdata)
    if rtype == TYPE_AAAA:
        if length != 16:
            raise DnsError("AAAA record of %d octets" % length)
        return socket.inet_ntop(socket.AF_INET6, rdata)
    if rtype == TYPE_SRV:
        if length < 7:
            raise DnsError("SRV record of %d octets" % length)
        priority, weight, port = struct.unpack("!HHH", rdata[:6])
        target, _end = decode_name(message, start + 6)
        return {"priority": priority, "weight": weight, "port": port, "target": target}
    if rtype == TYPE_CNAME:
        return decode_name(message, start)[0]
    return rdata


def decode_response(message):
    """Parse a response; returns a dict with id, flags, rcode, truncated, answers.

    ``answers`` is a list of dicts: name, type, class, ttl, data (decoded for
    A, AAAA, SRV and CNAME; raw bytes otherwise).
    """
    if len(message) < 12:
        raise DnsError("message shorter than a DNS header")
    query_id, flags, qdcount, ancount, _nscount, _arcount = struct.unpack("!HHHHHH", message[:12])
    offset = 12
    questions = []
    for _index in range(qdcount):
        name, offset = decode_name(message, offset)
        if offset + 4 > len(message):
            raise DnsError("truncated question")
        qtype, qclass = struct.unpack("!HH", message[offset:offset + 4])
        offset += 4
        questions.append((name, qtype, qclass))
    answers = []
    truncated = bool(flags & 0x0200)
    for _index in range(ancount):
        try:
            name, offset = decode_name(message, offset)
            if offset + 10 > len(message):
                raise DnsError("truncated resource record")
            rtype, rclass, ttl, rdlength = struct.unpack("!HHIH", message[offset:offset + 10])
            offset += 10
            if offset + rdlength > len(message):
                raise DnsError("resource data runs past the end of the message")
            data = _decode_rdata(message, rtype, offset, rdlength)
            offset += rdlength
        except DnsError:
            if truncated:
                break
            raise
        answers.append({"name": name, "type": rtype, "class": rclass, "ttl": ttl, "data": data})
    return {
        "id": query_id,
        "response": bool(flags & 0x8000),
        "truncated": truncated,
        "rcode": flags & 0x000F,
        "questions": questions,
        "answers": answers,
    }


def encode_response(query_id, questions, answers, rcode=0, truncated=False):
    """Build a response message (for tests and fakes): no compression.

    ``questions``: (name, type); ``answers``: (name, type, ttl, data) where
    data is an address text (A/AAAA), an SRV dict or a CNAME target.
    """
    flags = 0x8000 | 0x0100 | 0x0080 | (rcode & 0x0F) | (0x0200 if truncated else 0)
    out = bytearray(struct.pack("!HHHHHH", query_id, flags, len(questions), len(answers), 0, 0))
    for name, qtype in questions:
        out += encode_name(name) + struct.pack("!HH", qtype, CLASS_IN)
    for name, rtype, ttl, data in answers:
        if rtype == TYPE_A:
            rdata = socket.inet_pton(socket.AF_INET, data)
        elif rtype == TYPE_AAAA:
            rdata = socket.inet_pton(socket.AF_INET6, data)
        elif rtype == TYPE_SRV:
            rdata = struct.pack("!HHH", data["priority"], data["weight"], data["port"]) + encode_name(data["target"])
        elif rtype == TYPE_CNAME:
            rdata = encode_name(data)
        else:
            rdata = bytes(data)
        out += encode_name(name) + struct.pack("!HHIH", rtype, CLASS_IN, ttl, len(rdata)) + rdata
    return bytes(out)


# ------------------------------------------------------------------ transport


def read_nameservers(path=RESOLV_CONF):
    """The ``nameserver`` entries of resolv.conf (127.0.0.1 when there are none)."""
    servers = []
    try:
        with open(path) as handle:
            for line in handle:
                fields = line.split("#", 1)[0].split(";", 1)[0].split()
                if len(fields) >= 2 and fields[0] == "nameserver":
                    servers.append(fields[1])
    except (IOError, OSError):
        pass
    return servers or ["127.0.0.1"]


def _server_address(server):
    """(family, sockaddr) for a nameserver given as address or address#port / [v6]:port."""
    port = 53
    host = server
    if server.startswith("["):
        host, _sep, rest = server[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
    elif "#" in server:
        host, _sep, port_text = server.partition("#")
        port = int(port_text)
    elif server.count(":") == 1:
        host, _sep, port_text = server.partition(":")
        port = int(port_text)
    if ":" in host:
        return socket.AF_INET6, (host, port, 0, 0)
    return socket.AF_INET, (host, port)


def _udp_exchange(query, family, address, timeout):
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.settimeout(timeout)
        sock.connect(address)
        sock.send(query)
        while True:
            reply = sock.recv(65535)
            if len(reply) >= 2 and reply[:2] == query[:2]:
                return reply
    finally:
        sock.close()


def _recv_exactly(sock, count):
    data = bytearray()
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise DnsError("connection closed by the nameserver")
        data += chunk
    return bytes(data)


def _tcp_exchange(query, family, address, timeout):
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(address)
        sock.sendall(struct.pack("!H", len(query)) + query)
        (length,) = struct.unpack("!H", _recv_exactly(sock, 2))
        return _recv_exactly(sock, length)
    finally:
        sock.close()


class StubResolver:
    """Query nameservers directly. ``exchange`` is injectable for tests:
    ``exchange(query_bytes, server, tcp, timeout) -> response bytes``."""

    def __init__(self, nameservers=None, timeout=5.0, attempts=2, exchange=None):
        self.nameservers = list(nameservers) if nameservers else read_nameservers()
        self.timeout = timeout
        self.attempts = attempts
        self.exchange = exchange or self._socket_exchange

    @staticmethod
    def _socket_exchange(query, server, tcp, timeout):
        family, address = _server_address(server)
        if tcp:
            return _tcp_exchange(query, family, address, timeout)
        return _udp_exchange(query, family, address, timeout)

    def lookup(self, name, qtype):
        """Look ``name`` up; returns a :class:`DnsAnswer`."""
        last = DnsAnswer("error", detail="no nameserver configured")
        for _attempt in range(self.attempts):
            for server in self.nameservers:
                answer = self._ask(server, name, qtype)
                if answer.definitive:
                    return answer
                last = answer
        return last

    def _ask(self, server, name, qtype):
        query_id = random.randint(0, 0xFFFF)
        try:
            query = encode_query(name, qtype, query_id)
        except (DnsError, UnicodeError) as error:
            return DnsAnswer("error", server=server, detail=str(error))
        try:
            reply = self.exchange(query, server, False, self.timeout)
            parsed = decode_response(reply)
            if parsed["truncated"]:
                reply = self.exchange(query, server, True, self.timeout)
                parsed = decode_response(reply)
        except socket.timeout:
            return DnsAnswer("timeout", server=server, detail="no answer from %s within %ss" % (server, self.timeout))
        except (OSError, DnsError, ValueError, struct.error) as error:
            return DnsAnswer("error", server=server, detail="%s: %s" % (server, error))
        if parsed["id"] != query_id or not parsed["response"]:
            return DnsAnswer("error", server=server, detail="%s: answer does not match the query" % server)
        status = _RCODES.get(parsed["rcode"], "rcode %d" % parsed["rcode"])
        if status != "ok":
            return DnsAnswer(status, server=server, detail="%s answered %s" % (server, status.upper()))
        records = [answer["data"] for answer in parsed["answers"] if answer["type"] == qtype]
        if not records:
            return DnsAnswer("nodata", server=server, detail="%s: no %s records" % (server, type_name(qtype)))
        return DnsAnswer("ok", records, server=server)


def type_name(qtype):
    return {TYPE_A: "A", TYPE_AAAA: "AAAA", TYPE_SRV: "SRV", TYPE_CNAME: "CNAME"}.get(qtype, str(qtype))


def order_srv(records):
    """SRV records in the order to try them: priority ascending, weight descending.

    (RFC 2782 picks by weighted random within a priority; a checker wants a
    stable order and checks every target anyway.) A single record with target
    ``.`` means "service not available" and gives an empty list.
    """
    usable = [record for record in records if record["target"] not in ("", ".")]
    return sorted(usable, key=lambda record: (record["priority"], -record["weight"], record["target"], record["port"]))
