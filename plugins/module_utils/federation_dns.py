# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""The DNS lookups of ``federation_check`` (SRV, A, AAAA), through dnspython.

:class:`DnsResolver` asks a ``dns.resolver.Resolver`` (nameservers of
``/etc/resolv.conf``, or the ones given; no cache, no search list) and turns
its answer or exception into a :class:`DnsAnswer` whose ``status`` tells
"records found" (``ok``) from "no such name" (``nxdomain``), "name exists, no
records of this type" (``nodata``) and the failures (``servfail``,
``refused``, ``timeout``, ``error``). Server discovery treats the first three
as an answer; a failed SRV lookup stops it, as in Synapse.

dnspython is imported the way Ansible modules import optional libraries:
``HAS_DNSPYTHON`` is false and ``DNSPYTHON_IMPORT_ERROR`` holds the traceback
when it is missing, and the module fails with ``missing_required_lib``.
"""

import ipaddress
import traceback

DNSPYTHON_IMPORT_ERROR = None
try:
    import dns.exception
    import dns.rcode
    import dns.resolver
except ImportError:
    HAS_DNSPYTHON = False
    DNSPYTHON_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_DNSPYTHON = True

RESOLV_CONF = "/etc/resolv.conf"
FALLBACK_NAMESERVER = "127.0.0.1"  # what the C library uses when resolv.conf names none


class DnsAnswer:
    """Result of one lookup.

    ``status``: ``ok``, ``nodata``, ``nxdomain``, ``servfail``, ``refused``,
    ``timeout`` or ``error``; ``records``: the answers of the asked type
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


def parse_nameserver(text):
    """(address, port) of a nameserver given as ``address``, ``address#port``,
    ``v4address:port`` or ``[v6address]:port``; raises ValueError otherwise."""
    host, port = text, "53"
    if text.startswith("["):
        host, _sep, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError("nameserver %r: expected [address]:port" % text)
            port = rest[1:]
    elif "#" in text:
        host, _sep, port = text.partition("#")
    elif text.count(":") == 1:
        host, _sep, port = text.partition(":")
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        raise ValueError("nameserver %r: %r is not an IP address" % (text, host))
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("nameserver %r: port %r is not between 1 and 65535" % (text, port))
    return address, int(port)


def make_resolver(nameservers=None, timeout=5.0, attempts=2, resolv_conf=RESOLV_CONF):
    """A ``dns.resolver.Resolver`` for ``nameservers`` (see :func:`parse_nameserver`),
    else for those of ``resolv_conf`` (127.0.0.1 when it names none).

    Each query waits at most ``timeout`` seconds; a lookup gives up after
    ``attempts`` rounds over the nameservers. No cache: every run sees what the
    DNS says now.
    """
    if nameservers:
        resolver = dns.resolver.Resolver(configure=False)
        parsed = [parse_nameserver(server) for server in nameservers]
        resolver.nameservers = [address for address, _port in parsed]
        resolver.nameserver_ports = dict(parsed)
    else:
        try:
            resolver = dns.resolver.Resolver(filename=resolv_conf, configure=True)
        except dns.resolver.NoResolverConfiguration:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [FALLBACK_NAMESERVER]
    resolver.cache = None
    resolver.timeout = float(timeout)
    resolver.lifetime = float(timeout) * attempts * max(1, len(resolver.nameservers))
    return resolver


def _name_text(name):
    """A dnspython name as text without the final dot; the root stays ``.``."""
    text = name.to_text(omit_final_dot=True)
    return text or "."


def _record(rdtype, rdata):
    if rdtype == "SRV":
        return {"priority": rdata.priority, "weight": rdata.weight, "port": rdata.port, "target": _name_text(rdata.target)}
    return rdata.address


def _failure(name, rdtype, errors):
    """DnsAnswer for dnspython's NoNameservers: SERVFAIL before REFUSED before the rest."""
    statuses = []
    details = []
    for error in errors or []:
        server, reason = str(error[0]), error[3]
        response = error[4] if len(error) > 4 else None
        if response is not None and hasattr(response, "rcode"):
            status = dns.rcode.to_text(response.rcode()).lower()
            details.append("%s answered %s" % (server, status.upper()))
        else:
            status = "error"
            details.append("%s: %s" % (server, reason))
        statuses.append(status)
    if "servfail" in statuses:
        status = "servfail"
    elif "refused" in statuses:
        status = "refused"
    else:
        status = statuses[0] if statuses else "error"
    detail = "; ".join(details) or "no nameserver answered the %s query for %s" % (rdtype, name)
    return DnsAnswer(status, detail=detail)


class DnsResolver:
    """SRV, A and AAAA lookups. ``resolver`` is injectable (tests, or a
    prepared ``dns.resolver.Resolver``); otherwise :func:`make_resolver`."""

    def __init__(self, nameservers=None, timeout=5.0, attempts=2, resolver=None):
        self.timeout = timeout
        self.resolver = resolver if resolver is not None else make_resolver(nameservers, timeout, attempts)

    def lookup(self, name, rdtype):
        """Look ``name`` (absolute, no search list) up; returns a :class:`DnsAnswer`."""
        qname = name.rstrip(".") + "."
        try:
            answer = self.resolver.resolve(qname, rdtype)
        except dns.resolver.NXDOMAIN:
            return DnsAnswer("nxdomain", detail="%s: no such name (NXDOMAIN)" % name)
        except dns.resolver.NoAnswer:
            return DnsAnswer("nodata", detail="%s: no %s records" % (name, rdtype))
        except dns.resolver.NoNameservers as error:
            return _failure(name, rdtype, error.kwargs.get("errors"))
        except dns.exception.Timeout:
            return DnsAnswer("timeout", detail="%s: no answer to the %s query within %ss" % (
                name, rdtype, getattr(self.resolver, "lifetime", self.timeout)))
        except (dns.exception.DNSException, ValueError, UnicodeError) as error:
            return DnsAnswer("error", detail="%s: %s" % (name, error or type(error).__name__))
        records = [_record(rdtype, rdata) for rdata in answer]
        server = getattr(answer, "nameserver", None)
        if not records:
            return DnsAnswer("nodata", server=server, detail="%s: no %s records" % (name, rdtype))
        return DnsAnswer("ok", records, server=server)

    def srv(self, name):
        return self.lookup(name, "SRV")

    def addresses(self, host):
        """AAAA then A records of ``host``, in one answer."""
        found = []
        details = []
        failures = []
        for rdtype in ("AAAA", "A"):
            answer = self.lookup(host, rdtype)
            found.extend(answer.records)
            details.append(answer.detail)
            if not answer.definitive:
                failures.append(answer)
        if found:
            return DnsAnswer("ok", found)
        if failures:
            return DnsAnswer(failures[0].status, detail="; ".join(d for d in details if d))
        return DnsAnswer("nxdomain", detail="no AAAA or A records for %s" % host)


def order_srv(records):
    """SRV records in the order to try them: priority ascending, weight descending.

    (RFC 2782 picks by weighted random within a priority, which is what
    dnspython's ``processing_order()`` does; a checker wants a stable order and
    checks every target anyway.) Records with target ``.`` mean "service not
    available" and are dropped, so a lone one gives an empty list.
    """
    usable = [record for record in records if record["target"] not in ("", ".")]
    return sorted(usable, key=lambda record: (record["priority"], -record["weight"], record["target"], record["port"]))
