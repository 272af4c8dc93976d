"""The relayd.conf parser and rule evaluator used by test_relayd_render.py,
checked against relayd.conf(5)'s own examples and statements, and against
text relayd rejects (so the render tests cannot pass on a parser that accepts
anything)."""

from __future__ import annotations

import textwrap

import pytest

import relayd_conf_parser as rc

# relayd.conf(5), EXAMPLES (TLS acceleration), with an IP literal for the
# listener and the keypair named explicitly.
MANPAGE_EXAMPLE = textwrap.dedent("""\
    www1="10.0.0.1"
    www2="10.0.0.2"
    table <phphosts> { $www1, $www2 }

    http protocol "https" {
    \tmatch header set "X-Forwarded-For" \\
    \t\tvalue "$REMOTE_ADDR"
    \tmatch header set "X-Forwarded-By" \\
    \t\tvalue "$SERVER_ADDR:$SERVER_PORT"
    \tmatch header set "Keep-Alive" value "$TIMEOUT"

    \tmatch query hash "sessid"

    \tpass
    \tblock path "/cgi-bin/index.cgi" value "*command=*"

    \ttls { no tlsv1.0, ciphers "HIGH" }
    \ttls keypair "www.example.com"
    }

    relay "tlsaccel" {
    \tlisten on 192.0.2.1 port 443 tls
    \tprotocol "https"
    \tforward to <phphosts> port 8080 mode loadbalance check tcp
    }
    """)

MINIMAL = textwrap.dedent("""\
    table <hs> { "127.0.0.1" }
    http protocol "p" {
    \ttls keypair "example.test"
    \tpass request quick path "/_matrix/*" forward to <hs>
    }
    relay "r" {
    \tlisten on 0.0.0.0 port 443 tls
    \tprotocol "p"
    \tforward to <hs> port 8008 check tcp
    }
    """)


def test_manpage_example_parses():
    cfg = rc.parse(MANPAGE_EXAMPLE)
    assert cfg.macros == {"www1": "10.0.0.1", "www2": "10.0.0.2"}
    assert cfg.tables["phphosts"].hosts == ["10.0.0.1", "10.0.0.2"]
    proto = cfg.protocols["https"]
    assert [r.action for r in proto.rules] == ["match", "match", "match", "match", "pass", "block"]
    assert proto.rules[0].kvs["header"] == rc.KeyValue("header", "set", "X-Forwarded-For", "$REMOTE_ADDR")
    assert proto.rules[5].kvs["path"] == rc.KeyValue("path", "none", "/cgi-bin/index.cgi", "*command=*")
    assert proto.tls_ciphers == "HIGH"
    assert "tlsv1.0" not in proto.tls_flags
    relay = cfg.relays["tlsaccel"]
    assert relay.listens == [rc.Listen("192.0.2.1", 443, True)]
    assert relay.forwards[0].options == {"mode": "loadbalance", "check": ("tcp",)}


def test_minimal_parses():
    cfg = rc.parse(MINIMAL)
    assert cfg.relay_for_port(443).name == "r"


def test_lexer_details():
    tokens = rc.tokenize('a="x y" # comment\nb = \'it\\\'s\'\nlisten on :: port 443\nc "$REMOTE_ADDR" 10.0.0.0/8 -1\n')
    values = [(t.kind, t.value) for t in tokens if t.kind != "nl"]
    assert values == [
        ("str", "a"), ("punct", "="), ("str", "x y"),
        ("str", "b"), ("punct", "="), ("str", "it's"),
        ("str", "listen"), ("str", "on"), ("str", "::"), ("str", "port"), ("num", 443),
        ("str", "c"), ("str", "$REMOTE_ADDR"), ("str", "10.0.0.0"), ("punct", "/"), ("num", 8), ("num", -1),
    ]
    # Macros expand outside quotes only, and after their definition.
    tokens = rc.tokenize('p="8008"\nport $p "$p"\n')
    assert [(t.kind, t.value) for t in tokens if t.kind != "nl"][-3:] == [("str", "port"), ("num", 8008), ("str", "$p")]
    with pytest.raises(rc.ParseError, match="macro 'q' not defined"):
        rc.tokenize("port $q\n")


@pytest.mark.parametrize("text, message", [
    (MINIMAL.replace("pass request quick", "allow request quick"), "syntax error"),
    (MINIMAL.replace("\ttls keypair", "\ttls keypar"), "invalid TLS flag"),
    (MINIMAL.replace('\ttls keypair "example.test"', "\ttls tlsv1.4"), "invalid TLS flag"),
    (MINIMAL.replace('\ttls keypair "example.test"', "\ttls no tlsv1.2\n\ttls no tlsv1.3"), "invalid TLS protocol"),
    (MINIMAL.replace("}\nrelay", "\nrelay"), "syntax error"),
    (MINIMAL.replace("forward to <hs> port 8008", "forward to <hs2> port 8008"), "unknown table hs2"),
    (MINIMAL.replace('path "/_matrix/*" forward to <hs>', 'path "/x" forward to <nope>'), "undefined forward table"),
    (MINIMAL.replace(" port 8008 check tcp", ""), "table options expected"),
    (MINIMAL.replace('forward to <hs> port 8008 check tcp', 'forward to "/run/synapse.sock" port 8008'),
     "UNIX socket"),
    (MINIMAL.replace('pass request quick path', 'pass response quick path'), "only match requests"),
    (MINIMAL.replace('pass request quick path "/_matrix/*"', 'pass request quick path "/x" no tag'), "no tag defined"),
    (MINIMAL.replace("port 443", "port 70000"), "invalid port"),
    (MINIMAL.replace('table <hs> { "127.0.0.1" }', 'table <hs> { "127.0.0.1" }\ntable <unused> { "127.0.0.2" }'),
     "unused table: unused"),
    (MINIMAL + MINIMAL.split("relay")[0].replace("table <hs>", "table <hs9>").replace('protocol "p"', 'protocol "p2"')
     + 'relay "r2" {\n\tlisten on 0.0.0.0 port 443 tls\n\tprotocol "p2"\n\tforward to <hs9> port 8008 check tcp\n}\n',
     "listener defined twice"),
    ("interval 10\ntimeout 10000\n" + MINIMAL, "global timeout exceeds interval"),
    ("prefork 33\n" + MINIMAL, "invalid number of preforked relays"),
    (MINIMAL.replace('\ttls keypair "example.test"\n', ""), "has no tls keypair"),
    (MINIMAL.replace('protocol "p"\n\tforward', 'protocol "q"\n\tforward'), "no such protocol"),
    (MINIMAL.replace("quick path", "quick from 10.0.0.0/8 to 2001:db8::/32 path"), "address family mismatch"),
    (MINIMAL.replace("pass request quick", "pass request quick method FETCH"), "unknown HTTP method"),
    (MINIMAL.replace('tls keypair "example.test"', 'tls keypair "example.test"\n\ttcp backlog 513'), "invalid backlog"),
    ('redirect "www" {\n}\n', "outside the supported subset"),
    (MINIMAL.replace('{ "127.0.0.1" }', "{ }"), "has no hosts"),
    (MINIMAL.replace('"127.0.0.1" }', '"127.0.0.1"'), "unterminated|syntax|expected"),
])
def test_rejects_what_relayd_rejects(text, message):
    with pytest.raises(rc.ParseError, match=message):
        rc.parse(text)


RULES = textwrap.dedent("""\
    table <a> { "127.0.0.1" }
    table <b> { "127.0.0.2" }
    http protocol "p" {
    \treturn error
    \ttls keypair "x"
    \tmatch request header set "X-Forwarded-For" value "$REMOTE_ADDR"
    \tmatch request header append "X-Trace" value "relayd"
    \tmatch request tag "base"
    \tblock request path "/blocked/*"
    \tpass request path "/blocked/but-passed-later"
    \tblock request quick path "/quick/*" label "quick block"
    \tpass request quick path "/quick/*"
    \tmatch request path "/b/*" forward to <b> tag "bee"
    \tpass request quick from 10.0.0.0/8 path "/admin*" forward to <b>
    \tblock request quick path "/admin*"
    \tmatch response tagged "bee" header set "X-Bee" value "1"
    }
    relay "r" {
    \tlisten on 0.0.0.0 port 443 tls
    \tprotocol "p"
    \tforward to <a> port 80 check tcp
    \tforward to <b> port 80 check tcp
    }
    """)


def _eval(path, **kwargs):
    cfg = rc.parse(RULES)
    return rc.evaluate(cfg, "r", rc.Request(path=path, **kwargs))


def test_last_matching_pass_or_block_decides():
    assert _eval("/blocked/x").action == "block"
    assert _eval("/blocked/but-passed-later").action == "pass"


def test_quick_stops_evaluation():
    out = _eval("/quick/x")
    assert (out.action, out.label, out.status) == ("block", "quick block", 403)


def test_match_rules_do_not_decide_but_apply_options():
    out = _eval("/b/x", headers=[("X-Forwarded-For", "1.1.1.1"), ("X-Forwarded-For", "2.2.2.2"), ("X-Trace", "client")])
    assert (out.action, out.table, out.tag) == ("pass", "b", "bee")
    assert out.headers.get_all("X-Forwarded-For") == ["198.51.100.7"]  # set replaces every line
    assert out.headers.get_all("X-Trace") == ["client", "relayd"]  # append adds one
    out = _eval("/other")
    assert (out.action, out.table, out.tag) == ("pass", "a", "base")  # first table by default


def test_source_addresses_and_star_crossing_slashes():
    assert _eval("/admin/v1/x", source="10.1.2.3").table == "b"
    assert _eval("/admin/v1/x", source="11.1.2.3").action == "block"
    assert _eval("/admin/v1/x", source="2001:db8::1").action == "block"
    # fnmatch(3) without FNM_PATHNAME: '*' matches '/'.
    assert rc.relayd_fnmatch("/a*", "/a/b/c")
    assert not rc.relayd_fnmatch("/a/*", "/A/b")
    assert rc.relayd_fnmatch("%2[eE]", "%2E")


def test_tags_are_sticky_per_session_and_drive_response_rules():
    cfg = rc.parse(RULES)
    out = rc.evaluate(cfg, "r", rc.Request(path="/b/x"))
    response = rc.evaluate(cfg, "r", rc.Request(path="/"), session_tag=out.tag, direction="response",
                           response_headers=[("Content-Type", "text/plain")])
    assert response.headers.get("X-Bee") == "1"
    response = rc.evaluate(cfg, "r", rc.Request(path="/"), session_tag="base", direction="response",
                           response_headers=[])
    assert "X-Bee" not in response.headers


def test_block_structure_parser_for_httpd():
    tree = rc.parse_blocks('port="80"\nserver "a" {\n\tlisten on 127.0.0.1 port $port\n\tlocation "*" {\n'
                           '\t\tblock return 404\n\t}\n}\n')
    server = tree.find("server")[0]
    assert server.words == ["server", "a"]
    assert server.find("listen")[0].words == ["listen", "on", "127.0.0.1", "port", 80]
    assert server.find("location")[0].children[0].words == ["block", "return", 404]
    with pytest.raises(rc.ParseError):
        rc.parse_blocks("server {\n")
