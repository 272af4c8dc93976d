"""A parser for the subset of relayd.conf(5) that mxedge.matrix.relayd writes,
and an evaluator of its HTTP filter rules.

relayd only runs on OpenBSD, so the role's output cannot be fed to ``relayd -n``
on the Linux test machines. This module stands in for it as far as the tests
need: it tokenises like relayd's yylex() (parse.y: quoting, macros expanded
outside quotes, line continuation, the characters allowed in bare strings),
parses macros, global options, tables, http/tcp protocols with their tls/tcp/
http options and filter rules, and relays, and then applies a subset of the
semantic checks load_config() and the grammar actions make (undefined or unused
tables, a rule's forward table missing from the relay, duplicate listeners,
"global timeout exceeds interval", invalid TLS flags, path rules in the
response direction, ...). Anything outside the subset is a ParseError, so a
template change that produces unknown syntax fails the tests instead of being
ignored.

``evaluate()`` replays relay_test() and relay_apply_actions() from relayd's
relay_http.c for one request or response: rules in order, ``match`` rules
applying their options at once, the last matching ``pass``/``block`` rule (or
the first ``quick`` one) deciding, tags sticky per session, fnmatch(3) on the
raw request path with flags 0 (so ``*`` also matches ``/``), header values
matched with fnmatch(3), ``header set`` replacing every line of that header.

Sources read to write this (OpenBSD relayd, 2014-2022 revisions, via the
FreeBSD port of relayd 7.x and openbsd/src): relayd.conf.5 1.205, parse.y
(grammar and lexer), relay_http.c 1.84 (relay_read_http, relay_test,
relay_httpheader_test, relay_httppath_test, relay_apply_actions), relayd.c
(kv_set, kv_find, rule_add), relay.c (relay_from_table).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import ipaddress
import re
import string

__all__ = [
    "ParseError",
    "Config",
    "parse",
    "evaluate",
    "parse_blocks",
    "relayd_fnmatch",
]


class ParseError(Exception):
    """The text is outside the supported grammar or fails a semantic check."""

    def __init__(self, message, line=None):
        self.line = line
        super().__init__(f"line {line}: {message}" if line else message)


# --------------------------------------------------------------------------
# Lexer (parse.y yylex)
# --------------------------------------------------------------------------

NL = "\n"
_PUNCT_TOKENS = set("{}<>=,/!()")


@dataclasses.dataclass
class Token:
    kind: str  # "str", "num", "punct", "nl"
    value: object
    line: int
    quoted: bool = False

    def is_word(self, *words):
        return self.kind == "str" and not self.quoted and self.value in words

    def __repr__(self):
        return f"Token({self.kind}, {self.value!r}, line {self.line})"


def _allowed_in_string(c):
    # OpenBSD parse.y: isalnum(x) || (ispunct(x) && x not in "(){}<>!=/#,")
    return c.isalnum() or (c in string.punctuation and c not in "(){}<>!=/#,")


def _allowed_to_end_number(c):
    return c.isspace() or c in "),/}="


def tokenize(text, macros=None):
    """Tokenise relayd.conf text. ``macros`` is updated with name="value"
    definitions as they are seen (relayd expands a macro only after its
    definition line has been parsed, which the caller does line by line)."""
    macros = {} if macros is None else macros
    tokens = []
    buf = list(text)
    pos = 0
    line = 1

    def peek(i=0):
        return buf[pos + i] if pos + i < len(buf) else ""

    while pos < len(buf):
        c = buf[pos]
        if c in " \t":
            pos += 1
            continue
        if c == "\\" and peek(1) == "\n":
            pos += 2
            line += 1
            continue
        if c == "#":
            while pos < len(buf) and buf[pos] != "\n":
                pos += 1
            continue
        if c == "\n":
            tokens.append(Token("nl", NL, line))
            # A definition completed on this line becomes usable afterwards.
            if len(tokens) >= 4 and tokens[-2].kind == "str" and tokens[-3].value == "=" \
                    and tokens[-4].kind == "str" and not tokens[-4].quoted \
                    and (len(tokens) == 4 or tokens[-5].kind == "nl"):
                macros[tokens[-4].value] = tokens[-2].value
            line += 1
            pos += 1
            continue
        if c == "$":
            m = re.match(r"[A-Za-z0-9_]+", "".join(buf[pos + 1:pos + 200]))
            if not m:
                raise ParseError("empty macro name", line)
            name = m.group(0)
            if name not in macros:
                raise ParseError(f"macro '{name}' not defined", line)
            # relayd pushes the value back into the input and lexes it again.
            buf[pos:pos + 1 + len(name)] = list(macros[name])
            continue
        if c in "'\"":
            quote = c
            pos += 1
            out = []
            while True:
                if pos >= len(buf):
                    raise ParseError("unterminated quoted string", line)
                ch = buf[pos]
                if ch == "\n":
                    line += 1
                    pos += 1
                    continue
                if ch == "\\":
                    nxt = peek(1)
                    if nxt in (quote, " ", "\t"):
                        out.append(nxt)
                        pos += 2
                        continue
                    if nxt == "\n":
                        line += 1
                        pos += 2
                        continue
                    out.append(ch)
                    pos += 1
                    continue
                if ch == quote:
                    pos += 1
                    break
                out.append(ch)
                pos += 1
            tokens.append(Token("str", "".join(out), line, quoted=True))
            continue
        if c == "-" or c.isdigit():
            j = pos + 1
            while j < len(buf) and buf[j].isdigit():
                j += 1
            text_num = "".join(buf[pos:j])
            end = buf[j] if j < len(buf) else ""
            if text_num != "-" and (end == "" or _allowed_to_end_number(end)):
                tokens.append(Token("num", int(text_num), line))
                pos = j
                continue
            if text_num == "-":
                tokens.append(Token("punct", "-", line))
                pos += 1
                continue
            # not a number: fall through to the string rule (starts with a digit)
        if c.isalnum() or c in ":_":
            j = pos + 1
            while j < len(buf) and _allowed_in_string(buf[j]):
                j += 1
            tokens.append(Token("str", "".join(buf[pos:j]), line))
            pos = j
            continue
        if c in _PUNCT_TOKENS:
            tokens.append(Token("punct", c, line))
            pos += 1
            continue
        raise ParseError(f"unexpected character {c!r}", line)
    tokens.append(Token("nl", NL, line))
    return tokens


# --------------------------------------------------------------------------
# Data model
# --------------------------------------------------------------------------

TLS_FLAGS = {"sslv3", "tlsv1", "tlsv1.0", "tlsv1.1", "tlsv1.2", "tlsv1.3",
             "cipher-server-preference", "client-renegotiation"}
TLS_VERSIONS = {"sslv3", "tlsv1", "tlsv1.0", "tlsv1.1", "tlsv1.2", "tlsv1.3"}
# relayd's defaults (TLSFLAG_DEFAULT): TLSv1.2, TLSv1.3, server cipher preference.
TLS_DEFAULT = {"tlsv1.2", "tlsv1.3", "cipher-server-preference"}
HTTP_METHODS = {
    "ACL", "BASELINE-CONTROL", "CHECKIN", "CHECKOUT", "CONNECT", "COPY", "DELETE", "GET", "HEAD", "LABEL", "LOCK",
    "MERGE", "MKACTIVITY", "MKCOL", "MKREDIRECTREF", "MKWORKSPACE", "MOVE", "OPTIONS", "ORDERPATCH", "PATCH", "POST",
    "PROPFIND", "PROPPATCH", "PUT", "REPORT", "SEARCH", "TRACE", "UNCHECKOUT", "UNLOCK", "UPDATE",
    "UPDATEREDIRECTREF", "VERSION-CONTROL",
}
KEY_OPTIONS = {"append", "set", "remove", "hash", "log"}
KEY_TYPES = ("cookie", "header", "path", "query", "url")
RELAY_MAXPROC = 32
RELAY_MAX_BACKLOG = 512
RELAY_MAXHEADERLENGTH = 131072


@dataclasses.dataclass
class KeyValue:
    type: str  # header, path, query, cookie, url
    option: str  # none, append, set, remove, hash, log, strip
    key: str | None = None
    value: str | None = None


@dataclasses.dataclass
class Rule:
    action: str  # block, pass, match
    direction: str  # request, response
    quick: bool = False
    af: str | None = None
    src: str | None = None
    dst: str | None = None
    method: str | None = None
    kvs: dict = dataclasses.field(default_factory=dict)  # type -> KeyValue
    table: str | None = None
    tag: str | None = None  # name, or "" for "no tag"
    tagged: str | None = None
    label: str | None = None
    line: int = 0

    def describe(self):
        return f"line {self.line}: {self.action} {self.direction}{' quick' if self.quick else ''}"


@dataclasses.dataclass
class Protocol:
    name: str
    type: str  # http, tcp, dns
    line: int = 0
    return_error: bool = False
    keypairs: list = dataclasses.field(default_factory=list)
    tls_flags: set = dataclasses.field(default_factory=lambda: set(TLS_DEFAULT))
    tls_ciphers: str | None = None
    tls_ecdhe: str | None = None
    tls_session_tickets: bool = False
    tcp: dict = dataclasses.field(default_factory=dict)
    http: dict = dataclasses.field(default_factory=dict)
    rules: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Listen:
    address: str
    port: int
    tls: bool


@dataclasses.dataclass
class Forward:
    table: str | None  # table name, or None for an address target
    address: str | None
    port: int | None
    options: dict = dataclasses.field(default_factory=dict)  # check, mode, timeout, interval, retry
    tls: bool = False


@dataclasses.dataclass
class Relay:
    name: str
    line: int = 0
    listens: list = dataclasses.field(default_factory=list)
    forwards: list = dataclasses.field(default_factory=list)
    protocol: str | None = None
    session_timeout: int = 600
    disabled: bool = False


@dataclasses.dataclass
class Table:
    name: str
    hosts: list
    disabled: bool = False
    line: int = 0


@dataclasses.dataclass
class Config:
    macros: dict
    globals: dict
    tables: dict
    protocols: dict
    relays: dict
    includes: list

    def relay_for_port(self, port):
        found = [r for r in self.relays.values() if any(listen.port == port for listen in r.listens)]
        if len(found) != 1:
            raise KeyError(f"{len(found)} relays listen on port {port}")
        return found[0]

    def protocol_of(self, relay):
        return self.protocols[relay.protocol]


# --------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------


class _Parser:
    def __init__(self, tokens):
        self.toks = tokens
        self.i = 0
        self.seen_tag = False  # relayd refuses "no tag" before any "tag" in the file

    # token helpers
    def peek(self, k=0):
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def next(self):
        tok = self.peek()
        self.i += 1
        return tok

    def at_end(self):
        return self.i >= len(self.toks)

    def error(self, message, tok=None):
        tok = tok or self.peek()
        raise ParseError(f"{message} (at {tok.value!r})", tok.line)

    def accept_word(self, *words):
        if self.peek().is_word(*words):
            return self.next().value
        return None

    def expect_word(self, *words):
        tok = self.next()
        if not tok.is_word(*words):
            self.error(f"expected {' or '.join(words)}", tok)
        return tok.value

    def expect_punct(self, c):
        tok = self.next()
        if tok.kind != "punct" or tok.value != c:
            self.error(f"expected {c!r}", tok)

    def accept_punct(self, c):
        if self.peek().kind == "punct" and self.peek().value == c:
            self.i += 1
            return True
        return False

    def expect_string(self, what="string"):
        tok = self.next()
        if tok.kind != "str":
            self.error(f"expected {what}", tok)
        return tok.value

    def expect_number(self, what="number"):
        tok = self.next()
        if tok.kind != "num":
            self.error(f"expected {what}", tok)
        return tok.value

    def skip_nl(self):
        while self.peek().kind == "nl" and not self.at_end():
            self.i += 1
            if self.at_end():
                break

    def expect_eol(self):
        tok = self.next()
        if tok.kind != "nl":
            self.error("expected end of line", tok)

    def port(self):
        tok = self.next()
        if tok.kind == "num":
            if tok.value <= 0 or tok.value >= 65535:
                self.error(f"invalid port: {tok.value}", tok)
            return tok.value
        if tok.kind == "str" and tok.value in ("http", "https", "www"):
            return {"http": 80, "www": 80, "https": 443}[tok.value]
        self.error("expected a port", tok)
        return None

    def addrprefix(self):
        address = self.expect_string("address")
        prefix = None
        if self.accept_punct("/"):
            prefix = self.expect_number("prefix length")
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            self.error(f"invalid host {address}")
        limit = 32 if ip.version == 4 else 128
        if prefix is not None and not 0 <= prefix <= limit:
            self.error(f"invalid prefixlen {prefix}")
        return f"{address}/{limit if prefix is None else prefix}"

    # grammar
    def config(self):
        cfg = Config(macros={}, globals={}, tables={}, protocols={}, relays={}, includes=[])
        while not self.at_end():
            tok = self.peek()
            if tok.kind == "nl":
                self.i += 1
                continue
            if tok.is_word("include"):
                self.next()
                cfg.includes.append(self.expect_string("file name"))
                self.expect_eol()
            elif tok.kind == "str" and not tok.quoted and self.peek(1).kind == "punct" and self.peek(1).value == "=":
                name = self.next().value
                self.next()
                cfg.macros[name] = self.expect_string("macro value")
                self.expect_eol()
            elif tok.is_word("interval", "timeout", "prefork", "log", "socket", "agentx"):
                self.global_option(cfg)
            elif tok.is_word("table"):
                self.table(cfg)
            elif tok.is_word("http", "tcp", "dns", "protocol"):
                self.protocol(cfg)
            elif tok.is_word("relay"):
                self.relay(cfg)
            elif tok.is_word("redirect", "router"):
                self.error("redirections and routers are outside the supported subset")
            else:
                self.error("syntax error")
        return cfg

    def global_option(self, cfg):
        word = self.next().value
        if word in ("interval", "timeout", "prefork"):
            value = self.expect_number()
            if word == "prefork" and not 0 < value <= RELAY_MAXPROC:
                self.error(f"invalid number of preforked relays: {value}")
            if word in ("interval", "timeout") and value < 0:
                self.error(f"invalid {word}: {value}")
            cfg.globals[word] = value
        elif word == "log":
            if self.accept_word("state"):
                self.expect_word("changes")
                cfg.globals.setdefault("log", []).append("state changes")
            elif self.accept_word("host"):
                self.expect_word("checks")
                cfg.globals.setdefault("log", []).append("host checks")
            elif self.accept_word("connection"):
                what = "connection errors" if self.accept_word("errors") else "connection"
                cfg.globals.setdefault("log", []).append(what)
            else:
                self.error("expected state changes, host checks or connection after log")
        elif word == "socket":
            cfg.globals["socket"] = self.expect_string()
        else:
            self.error("agentx is outside the supported subset")
        self.expect_eol()

    def table(self, cfg):
        line = self.next().line
        self.expect_punct("<")
        name = self.expect_string("table name")
        self.expect_punct(">")
        if name in cfg.tables:
            self.error(f"table {name} defined twice")
        disabled = bool(self.accept_word("disable"))
        self.expect_punct("{")
        hosts = []
        while True:
            self.skip_nl()
            if self.accept_punct("}"):
                break
            address = self.expect_string("host")
            hosts.append(address)
            while self.peek().is_word("retry", "parent", "priority"):
                self.next()
                self.expect_number()
            if self.peek().is_word("ip"):
                self.next()
                self.expect_word("ttl")
                self.expect_number()
            self.accept_punct(",")
        if not hosts:
            self.error(f"table {name} has no hosts")
        cfg.tables[name] = Table(name=name, hosts=hosts, disabled=disabled, line=line)
        self.expect_eol()

    def protocol(self, cfg):
        line = self.peek().line
        ptype = "tcp"
        if self.peek().is_word("http", "tcp", "dns"):
            ptype = self.next().value
        self.expect_word("protocol")
        name = self.expect_string("protocol name")
        if name in cfg.protocols:
            self.error(f"protocol {name} defined twice")
        proto = Protocol(name=name, type=ptype, line=line)
        if self.accept_punct("{"):
            while True:
                self.skip_nl()
                if self.accept_punct("}"):
                    break
                self.protocol_option(cfg, proto)
        if not proto.tls_flags & TLS_VERSIONS:
            self.error("invalid TLS protocol")
        cfg.protocols[name] = proto
        self.expect_eol()

    def _braced_list(self, item):
        if self.accept_punct("{"):
            while True:
                item()
                if self.accept_punct("}"):
                    return
                self.accept_punct(",")
        else:
            item()

    def protocol_option(self, cfg, proto):
        tok = self.peek()
        if tok.is_word("tls", "ssl"):
            if proto.type not in ("tcp", "http"):
                self.error("can set tls options only for tcp or http protocols")
            self.next()
            self._braced_list(lambda: self.tls_option(proto))
        elif tok.is_word("tcp"):
            self.next()
            self._braced_list(lambda: self.tcp_option(proto))
        elif tok.is_word("http"):
            if proto.type != "http":
                self.error("can set http options only for http protocol")
            self.next()
            self._braced_list(lambda: self.http_option(proto))
        elif tok.is_word("return"):
            self.next()
            self.expect_word("error")
            proto.return_error = True
            if self.accept_word("style"):
                self.expect_string()
        elif tok.is_word("block", "pass", "match"):
            proto.rules.append(self.rule(cfg, proto))
            return
        elif tok.is_word("include"):
            self.error("include inside a protocol is outside the supported subset")
        else:
            self.error("syntax error in protocol")
        self.expect_eol()

    def tls_option(self, proto):
        tok = self.next()
        if tok.is_word("keypair"):
            proto.keypairs.append(self.expect_string("keypair name"))
        elif tok.is_word("ciphers"):
            proto.tls_ciphers = self.expect_string()
        elif tok.is_word("ecdhe"):
            proto.tls_ecdhe = self.expect_string()
        elif tok.is_word("edh"):
            if self.accept_word("params"):
                self.expect_string()
        elif tok.is_word("session"):
            self.expect_word("tickets")
            proto.tls_session_tickets = True
        elif tok.is_word("ca"):
            kind = self.expect_word("file", "key", "cert")
            self.expect_string()
            if kind == "key":
                self.expect_word("password")
                self.expect_string()
        elif tok.is_word("no"):
            nxt = self.next()
            if nxt.is_word("session"):
                self.expect_word("tickets")
                proto.tls_session_tickets = False
            elif nxt.is_word("edh"):
                pass
            elif nxt.kind == "str" and nxt.value in TLS_FLAGS:
                proto.tls_flags.discard(nxt.value)
                if nxt.value == "tlsv1":
                    proto.tls_flags -= {"tlsv1.0", "tlsv1.1", "tlsv1.2", "tlsv1.3"}
            else:
                self.error(f"invalid TLS flag: {nxt.value}", nxt)
        elif tok.kind == "str" and tok.value in TLS_FLAGS:
            proto.tls_flags.add(tok.value)
            if tok.value == "tlsv1":
                proto.tls_flags |= {"tlsv1.0", "tlsv1.1", "tlsv1.2", "tlsv1.3"}
        else:
            self.error(f"invalid TLS flag: {tok.value}", tok)

    def tcp_option(self, proto):
        tok = self.next()
        negate = False
        if tok.is_word("no"):
            negate = True
            tok = self.next()
        if tok.is_word("nodelay", "sack", "splice"):
            proto.tcp[tok.value] = not negate
        elif not negate and tok.is_word("backlog"):
            value = self.expect_number()
            if not 0 <= value <= RELAY_MAX_BACKLOG:
                self.error(f"invalid backlog: {value}")
            proto.tcp["backlog"] = value
        elif not negate and tok.is_word("socket"):
            self.expect_word("buffer")
            proto.tcp["socket buffer"] = self.expect_number()
        elif not negate and tok.is_word("ip"):
            which = self.expect_word("ttl", "minttl")
            proto.tcp["ip " + which] = self.expect_number()
        else:
            self.error(f"invalid tcp option {tok.value}", tok)

    def http_option(self, proto):
        tok = self.next()
        if tok.is_word("headerlen"):
            value = self.expect_number()
            if not 0 <= value <= RELAY_MAXHEADERLENGTH:
                self.error(f"invalid headerlen: {value}")
            proto.http["headerlen"] = value
        elif tok.is_word("websockets"):
            proto.http["websockets"] = True
        elif tok.is_word("no"):
            self.expect_word("websockets")
            proto.http["websockets"] = False
        else:
            self.error(f"invalid http option {tok.value}", tok)

    def rule(self, cfg, proto):
        tok = self.next()
        rule = Rule(action=tok.value, direction="request", line=tok.line)
        if self.peek().is_word("request", "response"):
            rule.direction = self.next().value
        rule.quick = bool(self.accept_word("quick"))
        if self.peek().is_word("inet", "inet6"):
            rule.af = self.next().value
        if self.accept_word("from"):
            rule.src = self.addrprefix()
        if self.accept_word("to"):
            rule.dst = self.addrprefix()
        families = {ipaddress.ip_network(a, strict=False).version for a in (rule.src, rule.dst) if a}
        if rule.af:
            families.add(4 if rule.af == "inet" else 6)
        if len(families) > 1:
            self.error("address family mismatch")
        while self.peek().kind != "nl":
            self.rule_option(cfg, proto, rule)
        self.expect_eol()
        for kv in rule.kvs.values():
            if kv.type in ("path", "query", "url") and rule.direction != "request":
                raise ParseError("failed to load rule: path, query and url only match requests", rule.line)
        return rule

    def rule_option(self, cfg, proto, rule):
        tok = self.next()
        if tok.is_word("method"):
            name = self.expect_string("method")
            if name not in HTTP_METHODS:
                self.error("unknown HTTP method currently not supported", tok)
            rule.method = name
        elif tok.is_word(*KEY_TYPES):
            ktype = tok.value
            if ktype == "path" and self.peek().is_word("strip"):
                self.next()
                rule.kvs["path"] = KeyValue("path", "strip", None, str(self.expect_number()))
                return
            option = "none"
            if self.peek().is_word(*KEY_OPTIONS):
                option = self.next().value
            if ktype in ("query", "url") and option in ("append", "set", "remove"):
                self.error(f"combining {ktype} type and the given option is not supported", tok)
            key = value = None
            if self.peek().kind == "str" and not self._is_rule_keyword(self.peek()):
                key = self.next().value
                if self.accept_word("value"):
                    value = self.expect_string("value")
                else:
                    value = "*"
            rule.kvs[ktype] = KeyValue(ktype, option, key, value)
        elif tok.is_word("forward"):
            self.expect_word("to")
            self.expect_punct("<")
            name = self.expect_string("table name")
            self.expect_punct(">")
            if name not in cfg.tables:
                self.error("undefined forward table", tok)
            rule.table = name
        elif tok.is_word("tag"):
            if rule.tag is not None:
                self.error("tag already defined", tok)
            rule.tag = self.expect_string("tag")
            self.seen_tag = True
        elif tok.is_word("tagged"):
            if rule.tagged is not None:
                self.error("tagged already defined", tok)
            rule.tagged = self.expect_string("tag")
        elif tok.is_word("label"):
            if rule.label is not None:
                self.error("label already defined", tok)
            rule.label = self.expect_string("label")
        elif tok.is_word("no"):
            what = self.expect_word("tag", "label")
            if what == "tag":
                if not self.seen_tag:
                    self.error("no tag defined", tok)
                rule.tag = ""
            else:
                rule.label = ""
        elif tok.is_word("file"):
            self.error("rules loaded from a file are outside the supported subset", tok)
        else:
            self.error("syntax error in rule", tok)

    @staticmethod
    def _is_rule_keyword(tok):
        return tok.is_word("method", "cookie", "header", "path", "query", "url", "forward", "tag", "tagged",
                           "label", "no", "file", "value")

    def relay(self, cfg):
        line = self.next().line
        name = self.expect_string("relay name")
        relay = Relay(name=name, line=line)
        self.expect_punct("{")
        while True:
            self.skip_nl()
            if self.accept_punct("}"):
                break
            self.relay_option(cfg, relay)
            self.expect_eol()
        if name in cfg.relays:
            raise ParseError(f"relay {name} or listener defined twice", line)
        if not relay.listens:
            raise ParseError(f"relay {name} has no listener", line)
        if not relay.forwards:
            raise ParseError(f"relay {name} has no target, rdr, or table", line)
        cfg.relays[name] = relay
        self.expect_eol()

    def relay_option(self, cfg, relay):
        tok = self.next()
        if tok.is_word("listen"):
            self.expect_word("on")
            address = self.expect_string("address")
            try:
                ipaddress.ip_address(address)
            except ValueError:
                self.error(f"invalid listen ip: {address} (only literals are supported here)", tok)
            self.expect_word("port")
            port = self.port()
            tls = bool(self.accept_word("tls", "ssl"))
            relay.listens.append(Listen(address, port, tls))
        elif tok.is_word("forward", "transparent"):
            if tok.value == "transparent":
                self.expect_word("forward")
            tls = False
            if self.accept_word("with"):
                self.expect_word("tls", "ssl")
                tls = True
            self.expect_word("to")
            relay.forwards.append(self.forward_spec(cfg, tls))
        elif tok.is_word("session"):
            self.expect_word("timeout")
            value = self.expect_number()
            if not 0 <= value <= 2147483647:
                self.error(f"invalid timeout: {value}", tok)
            relay.session_timeout = value
        elif tok.is_word("protocol"):
            if relay.protocol is not None:
                self.error("more than one protocol specified", tok)
            name = self.expect_string("protocol name")
            if name not in cfg.protocols:
                self.error(f"no such protocol: {name}", tok)
            relay.protocol = name
        elif tok.is_word("disable"):
            relay.disabled = True
        else:
            self.error("syntax error in relay", tok)

    def forward_spec(self, cfg, tls):
        if self.accept_punct("<"):
            name = self.expect_string("table name")
            self.expect_punct(">")
            if name not in cfg.tables:
                self.error(f"unknown table {name}")
            fwd = Forward(table=name, address=None, port=None, tls=tls)
            seen = False
            while self.peek().kind != "nl":
                seen = True
                self.table_option(fwd)
            if not seen:
                self.error("table options expected after forward to <table>")
            return fwd
        if self.peek().is_word("nat", "destination"):
            self.error("nat lookup and destination are outside the supported subset")
        address = self.expect_string("address")
        if address.startswith("/"):
            # host() only knows addresses, interface names and DNS names.
            self.error(f"invalid forward ip: {address} (relayd cannot forward to a UNIX socket)")
        fwd = Forward(table=None, address=address, port=None, tls=tls)
        if self.accept_word("port"):
            fwd.port = self.port()
        if self.accept_word("retry"):
            fwd.options["retry"] = self.expect_number()
        return fwd

    def table_option(self, fwd):
        tok = self.next()
        if tok.is_word("port"):
            fwd.port = self.port()
        elif tok.is_word("check"):
            fwd.options["check"] = self.check()
        elif tok.is_word("timeout", "interval", "retry"):
            fwd.options[tok.value] = self.expect_number()
        elif tok.is_word("mode"):
            mode = self.expect_word("hash", "loadbalance", "random", "roundrobin", "source-hash", "least-states")
            if mode == "least-states":
                self.error("mode not supported for relays", tok)
            fwd.options["mode"] = mode
            if mode in ("hash", "loadbalance", "source-hash") and self.peek().kind == "str" \
                    and not self.peek().is_word("port", "check", "timeout", "interval", "retry", "mode"):
                fwd.options["mode key"] = self.next().value
        else:
            self.error("syntax error in table options", tok)

    def check(self):
        tok = self.next()
        if tok.is_word("icmp", "tcp", "tls", "ssl"):
            return (tok.value,)
        if tok.is_word("http", "https"):
            path = self.expect_string("path")
            host = None
            if self.accept_word("host"):
                host = self.expect_string("host")
            if self.accept_word("code"):
                code = self.expect_number("code")
                if code <= 0:
                    self.error(f"invalid HTTP code: {code}")
                return (tok.value, path, host, "code", code)
            self.expect_word("digest")
            digest = self.expect_string("digest")
            if len(digest) not in (32, 40):
                self.error("invalid http digest")
            return (tok.value, path, host, "digest", digest)
        if tok.is_word("script"):
            return ("script", self.expect_string("path"))
        self.error("check method outside the supported subset", tok)
        return None


def _semantic_checks(cfg):
    interval = cfg.globals.get("interval", 10)
    timeout = cfg.globals.get("timeout", 200)
    if timeout >= interval * 1000:
        raise ParseError("global timeout exceeds interval")
    used_tables = set()
    listeners = {}
    for relay in cfg.relays.values():
        for listen in relay.listens:
            key = (ipaddress.ip_address(listen.address), listen.port)
            if key in listeners:
                raise ParseError(f"relay {relay.name} or listener defined twice", relay.line)
            listeners[key] = relay.name
        tables = []
        for fwd in relay.forwards:
            if fwd.table:
                used_tables.add(fwd.table)
                tables.append(fwd.table)
                port = fwd.port or (relay.listens[0].port if relay.listens else None)
                if not port:
                    raise ParseError(f"invalid port for table {fwd.table}", relay.line)
                if fwd.options.get("timeout", timeout) >= interval * 1000:
                    raise ParseError(f"table timeout exceeds interval: {fwd.table}", relay.line)
        proto = cfg.protocols.get(relay.protocol) if relay.protocol else None
        if proto is None:
            if any(listen.tls for listen in relay.listens):
                raise ParseError(f"relay {relay.name}: TLS without a protocol naming a keypair", relay.line)
            continue
        if any(listen.tls for listen in relay.listens) and not proto.keypairs:
            # relayd would fall back to /etc/ssl/<listen address>.crt; the role never relies on that.
            raise ParseError(f"relay {relay.name} listens with tls but protocol {proto.name} has no tls keypair",
                             relay.line)
        for rule in proto.rules:
            if rule.table and rule.table not in tables:
                raise ParseError(f"rule forwards to <{rule.table}>, which relay {relay.name} does not forward to",
                                 rule.line)
    for name, table in cfg.tables.items():
        if name not in used_tables:
            raise ParseError(f"unused table: {name}", table.line)


def parse(text):
    """Parse relayd.conf text into a Config, or raise ParseError."""
    tokens = tokenize(text)
    cfg = _Parser(tokens).config()
    _semantic_checks(cfg)
    return cfg


# --------------------------------------------------------------------------
# Rule evaluation (relay_http.c relay_test / relay_apply_actions)
# --------------------------------------------------------------------------


def relayd_fnmatch(pattern, text, casefold=False):
    """fnmatch(3) as relayd calls it: flags 0 (or FNM_CASEFOLD), so '*' and '?'
    match '/' and leading dots too. Python's fnmatchcase has the same
    semantics for the patterns used here; backslash escapes (which C fnmatch
    honours and Python does not) are refused rather than guessed."""
    if "\\" in pattern:
        raise ValueError(f"backslash in pattern {pattern!r} is not modelled")
    if casefold:
        pattern, text = pattern.lower(), text.lower()
    return fnmatch.fnmatchcase(text, pattern)


class Headers:
    """HTTP headers the way relayd keeps them: one entry per name
    (case-insensitive), later lines of the same name as its children."""

    def __init__(self, pairs=()):
        self._entries = []  # [name, [values]]
        for name, value in pairs:
            self.add(name, value)

    def _find(self, name):
        for entry in self._entries:
            if entry[0].lower() == name.lower():
                return entry
        return None

    def add(self, name, value):
        entry = self._find(name)
        if entry is None:
            self._entries.append([name, [value]])
        else:
            entry[1].append(value)

    def set(self, name, value):
        entry = self._find(name)
        if entry is None:
            self._entries.append([name, [value]])
        else:
            entry[1] = [value]  # kv_set() frees the children

    def remove(self, name):
        self._entries = [e for e in self._entries if e[0].lower() != name.lower()]

    def get_all(self, name):
        entry = self._find(name)
        return list(entry[1]) if entry else []

    def get(self, name):
        values = self.get_all(name)
        return values[0] if values else None

    def first_value(self, name):
        return self.get(name)

    def names(self):
        return [e[0] for e in self._entries]

    def __contains__(self, name):
        return self._find(name) is not None

    def __repr__(self):
        return f"Headers({self._entries!r})"


@dataclasses.dataclass
class Request:
    path: str
    method: str = "GET"
    query: str | None = None
    headers: list = dataclasses.field(default_factory=list)
    source: str = "198.51.100.7"
    source_port: int = 50000
    relay_address: str = "0.0.0.0"
    relay_port: int = 443


@dataclasses.dataclass
class Outcome:
    action: str  # pass or block
    table: str  # the table the request goes to (None if blocked)
    headers: Headers
    path: str
    tag: str | None
    label: str | None
    rule: Rule | None
    status: int | None  # 403 when blocked with "return error"


def _expand(value, request, relay):
    if "$" not in value:
        return value
    host = None
    for name, v in request.headers:
        if name.lower() == "host":
            host = v
    repl = {
        "$HOST": host or "",
        "$REMOTE_ADDR": request.source,
        "$REMOTE_PORT": str(request.source_port),
        "$SERVER_ADDR": request.relay_address,
        "$SERVER_PORT": str(request.relay_port),
        "$SERVER_NAME": "OpenBSD relayd",
        "$TIMEOUT": str(relay.session_timeout),
    }
    for macro, text in repl.items():
        value = value.replace(macro, text)
    return value


def _address_matches(prefix, address):
    if prefix is None:
        return True
    net = ipaddress.ip_network(prefix, strict=False)
    ip = ipaddress.ip_address(address)
    return ip.version == net.version and ip in net


def _header_test(rule, headers, direction):
    kv = rule.kvs.get("header")
    if kv is None:
        return True, []
    if kv.option in ("append", "set"):
        return True, [kv]
    if kv.key is None:
        return True, [kv] if kv.option != "none" else []
    if any(c in kv.key for c in "*?["):
        match = next((n for n in headers.names() if relayd_fnmatch(kv.key, n, casefold=True)), None)
    else:
        match = kv.key if kv.key in headers else None
    if match is None:
        return False, []
    value = headers.get(match)
    if kv.value is not None and value is not None and not relayd_fnmatch(kv.value, value):
        return False, []
    return True, ([kv] if kv.option != "none" else [])


def _path_test(rule, request, direction):
    kv = rule.kvs.get("path")
    if kv is None or direction == "response":
        return True, []
    if kv.option != "strip":
        if kv.key is None:
            return True, []
        if not relayd_fnmatch(kv.key, request.path):
            return False, []
        if kv.value is not None and kv.option == "none":
            if not relayd_fnmatch(kv.value, request.query or "", casefold=True):
                return False, []
    return True, ([kv] if kv.option != "none" else [])


def _has_token(headers, name, token):
    """Whether a header (name case-insensitive) holds ``token`` among its comma-separated values."""
    for value in headers.get_all(name) if name in headers else []:
        if value and any(part.strip().lower() == token for part in value.split(",")):
            return True
    return False


def evaluate(cfg, relay, request, session_tag=None, direction="request", response_headers=None):
    """Run one request (or, with direction="response", the response headers
    given) through the relay's protocol. Returns an Outcome; for requests,
    ``table`` is where relayd would connect (the first forward table when no
    rule chose one)."""
    if isinstance(relay, str):
        relay = cfg.relays[relay]
    proto = cfg.protocols[relay.protocol]
    if proto.type != "http":
        raise ValueError("only http protocols are evaluated")
    for kv_type in ("query", "url", "cookie"):
        if any(kv_type in r.kvs for r in proto.rules):
            raise NotImplementedError(f"{kv_type} rules are not modelled")
    headers = Headers(response_headers if direction == "response" else request.headers)
    tag = session_tag
    label = None
    table = None
    action = "pass"
    final = None
    actions = []
    final_kvs = []
    src_family = ipaddress.ip_address(request.source).version
    for rule in proto.rules:
        if rule.direction != direction:
            continue
        if rule.af and {"inet": 4, "inet6": 6}[rule.af] != src_family:
            continue
        if not _address_matches(rule.src, request.source):
            continue
        if rule.dst is not None:
            raise NotImplementedError("'to' rules are not modelled")
        if rule.method and (direction == "response" or request.method != rule.method):
            continue
        if rule.tagged and tag != rule.tagged:
            continue
        ok, kvs = _header_test(rule, headers, direction)
        if not ok:
            continue
        ok, path_kvs = _path_test(rule, request, direction)
        if not ok:
            continue
        kvs = kvs + path_kvs
        if rule.action == "match":
            if rule.table:
                table = rule.table
            if rule.tag is not None:
                tag = rule.tag or None
            if rule.label is not None:
                label = rule.label or None
            actions.extend(kvs)
            continue
        action = "block" if rule.action == "block" else "pass"
        final = rule
        final_kvs = kvs
        if rule.quick:
            break
    if final is not None:
        if final.table:
            table = final.table
        if final.tag is not None:
            tag = final.tag or None
        if final.label is not None:
            label = final.label or None
        actions.extend(final_kvs)
    path = request.path
    for kv in actions:
        if kv.type == "header":
            value = _expand(kv.value, request, relay) if kv.value is not None else None
            if kv.option == "set":
                headers.set(kv.key, value)
            elif kv.option == "append":
                if kv.key in headers and headers.get(kv.key) is not None:
                    headers.add(kv.key, value)
                else:
                    headers.set(kv.key, value)
            elif kv.option == "remove":
                headers.remove(kv.key)
        elif kv.type == "path":
            if kv.option == "set":
                path = kv.value
            elif kv.option == "append":
                path = path + kv.key
            elif kv.option == "remove":
                path = "/"
            elif kv.option == "strip":
                n = int(kv.value)
                parts = path.split("/")
                path = "/" + "/".join(parts[1 + n:]) if n < len(parts) - 1 else "/"
    status = 403 if action == "block" and proto.return_error else None
    # relay_http.c, after the filter rules passed a request: one whose Upgrade header has the
    # token "websocket" is refused unless the protocol has "http websockets" (403), and needs
    # "Connection: upgrade" (400) and GET (405). Tokens are compared case-insensitively.
    if direction == "request" and action == "pass" and _has_token(headers, "Upgrade", "websocket"):
        if not proto.http.get("websockets"):
            action, status, label = "block", 403, "Websocket Forbidden"
        elif not _has_token(headers, "Connection", "upgrade"):
            action, status, label = "block", 400, "Bad Websocket Request"
        elif request.method != "GET":
            action, status, label = "block", 405, "Websocket Method Not Allowed"
    destination = None
    if direction == "request" and action == "pass":
        destination = table or next(f.table for f in relay.forwards if f.table)
    return Outcome(action=action, table=destination, headers=headers, path=path, tag=tag, label=label,
                   rule=final, status=status)


# --------------------------------------------------------------------------
# Generic block structure (for httpd.conf(5), which shares relayd's lexer)
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Node:
    words: list
    children: list | None
    line: int

    def find(self, *words):
        return [c for c in (self.children or []) if c.words[:len(words)] == list(words)]


def parse_blocks(text):
    """Statements (lists of token values) and ``{ ... }`` blocks, nested.
    Macros are expanded. Used for httpd.conf, whose lexer is relayd's."""
    tokens = tokenize(text)
    stack = [Node(words=[], children=[], line=0)]
    current = []
    line = 1
    for tok in tokens:
        if tok.kind == "nl":
            if current:
                stack[-1].children.append(Node(words=current, children=None, line=line))
                current = []
            continue
        if tok.kind == "punct" and tok.value == "{":
            node = Node(words=current, children=[], line=tok.line)
            stack[-1].children.append(node)
            stack.append(node)
            current = []
            continue
        if tok.kind == "punct" and tok.value == "}":
            if current:
                stack[-1].children.append(Node(words=current, children=None, line=line))
                current = []
            if len(stack) == 1:
                raise ParseError("unbalanced '}'", tok.line)
            stack.pop()
            continue
        if not current:
            line = tok.line
        current.append(tok.value)
    if len(stack) != 1:
        raise ParseError("unterminated block")
    root = stack[0]
    # Macro definitions are statements too; drop them from the tree.
    root.children = [c for c in root.children if not (c.children is None and len(c.words) == 3 and c.words[1] == "=")]
    return root
