"""module_utils/haproxy_config: the operator's listeners, and the role's marked edits to a frontend."""

import json
import pathlib
import subprocess
import sys

import pytest

from ansible_collections.mxedge.matrix.plugins.module_utils import haproxy_config as hc

ROOT = pathlib.Path(__file__).resolve().parents[4]
OPERATOR = (ROOT / "molecule" / "shared" / "operator" / "haproxy" / "haproxy.cfg").read_text()

DEBIAN_STOCK = """global
\tlog /dev/log\tlocal0
\tchroot /var/lib/haproxy
\tstats socket /run/haproxy/admin.sock mode 660 level admin
\tuser haproxy
\tdaemon
\tssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets

defaults
\tlog\tglobal
\tmode\thttp
\ttimeout client  50000
\terrorfile 400 /etc/haproxy/errors/400.http
"""

# name: (config text, expected [(port, names, where)])
LISTENERS = {
    "debian_stock_has_none": (DEBIAN_STOCK, []),
    "scenario_operator": (OPERATOR, [
        (80, ["example.test", "unrelated.test", "*"], "frontend www (haproxy.cfg:43)"),
        (443, ["example.test", "unrelated.test", "*"], "frontend www (haproxy.cfg:43)"),
    ]),
    "listen_ipv6_and_ranges": ("listen stats\n    bind [::]:8404 v6only\n    bind ipv4@127.0.0.1:9000-9001\n", [
        (8404, ["*"], "listen stats (haproxy.cfg:1)"),
        (9000, ["*"], "listen stats (haproxy.cfg:1)"),
        (9001, ["*"], "listen stats (haproxy.cfg:1)"),
    ]),
    "sockets_are_not_ports": ("frontend inside\n    bind unix@/run/x.sock\n    bind abns@x accept-proxy\n"
                              "    bind fd@${FD}\n    bind quic4@:443 ssl crt /x.pem\n", []),
    "comma_separated_addresses": ("frontend f\n    bind :80,:8080\n", [
        (80, ["*"], "frontend f (haproxy.cfg:1)"), (8080, ["*"], "frontend f (haproxy.cfg:1)"),
    ]),
    "inline_and_sni_conditions": (
        "frontend tls\n    bind *:443 ssl crt /etc/haproxy/certs/\n"
        "    use_backend a if { req.hdr(host) -i A.Example.org www.example.org }\n"
        "    use_backend b if { ssl_fc_sni -m str b.example.org }\n", [
            (443, ["a.example.org", "b.example.org", "www.example.org"], "frontend tls (haproxy.cfg:1)"),
        ]),
    "regex_and_prefix_acls_name_nothing": (
        "frontend f\n    bind :443 ssl crt /x.pem\n    acl a hdr_reg(host) ^x\\.example\\.org$\n"
        "    acl b hdr_beg(host) -i www.\n    acl c hdr(host) -m reg .*\n    use_backend x if a b c\n", [
            (443, ["*"], "frontend f (haproxy.cfg:1)"),
        ]),
    "comments_and_quotes": (
        "frontend \"quoted\" # comment\n    bind :443 ssl crt '/x y.pem' # bind :8443\n"
        "    acl h hdr(host) -i example.org # other.org\n", [
            (443, ["example.org"], "frontend quoted (haproxy.cfg:1)"),
        ]),
    "backends_do_not_listen": ("backend b\n    server s 127.0.0.1:443\n", []),
}


@pytest.mark.parametrize("name", LISTENERS)
def test_listeners(name):
    text, expected = LISTENERS[name]
    got = [(item["port"], item["names"], item["where"]) for item in hc.listeners(text)]
    assert got == expected
    assert all(item["default"] for item in hc.listeners(text))


def test_own_paths_are_skipped_and_paths_named():
    files = {"/etc/haproxy/haproxy.cfg": OPERATOR, "/etc/haproxy/mxedge-matrix.cfg": "frontend fe_matrix_443\n  bind :443\n"}
    got = hc.listeners(files, own_paths=["/etc/haproxy/mxedge-matrix.cfg"])
    assert {item["where"] for item in got} == {"frontend www (/etc/haproxy/haproxy.cfg:43)"}
    assert {item["port"] for item in hc.listeners(files)} == {80, 443}


def test_marked_lines_are_not_the_operators():
    edited = hc.join(OPERATOR, "www", "use_backend be_mxedge_matrix_443 if { req.hdr(host) -m str matrix.example.test }",
                     "/etc/haproxy/mxedge-matrix/tls/matrix.pem", 443, isdir=lambda path: False)
    assert "matrix.example.test" not in hc.listeners(edited)[1]["names"]


@pytest.mark.parametrize("line, expected", [
    ("bind :443 ssl", [("bind", 0, 4), (":443", 5, 9), ("ssl", 10, 13)]),
    ("  acl a 'x y' \"z\\\"w\" # c", [("acl", 2, 5), ("a", 6, 7), ("x y", 8, 13), ('z"w', 14, 20)]),
    ("# only a comment", []),
])
def test_words(line, expected):
    assert hc.words(line) == expected


CRT = "/etc/haproxy/mxedge-matrix/tls/matrix.pem"
LINE = "use_backend be_mxedge_matrix_443 if { ssl_fc } { dst_port 443 } { req.hdr(host) -m str matrix.example.test }"
# name: (text, frontend, isdir, the lines expected to differ: [(old, new)], inserted line's index)
JOINS = {
    "after_the_operators_crt_before_its_first_use_backend": (
        OPERATOR, "www", lambda path: False,
        [("\tbind :443 ssl crt /etc/haproxy/certs/sites.pem alpn h2,http/1.1",
          f"\tbind :443 ssl crt /etc/haproxy/certs/sites.pem alpn h2,http/1.1 crt {CRT}")],
        "\tuse_backend site_example if host_example",
    ),
    "crt_directory_already_loads_it": (
        "frontend f\n  bind :443 ssl crt /etc/haproxy/mxedge-matrix/tls/\n  default_backend x\n", "f",
        lambda path: path.endswith("/"), [], None,
    ),
    "no_use_backend_appended_after_the_last_directive": (
        "frontend f\n    bind :443 ssl crt-list /etc/haproxy/list.txt\n    default_backend x\n\nbackend x\n", "f",
        lambda path: False,
        [("    bind :443 ssl crt-list /etc/haproxy/list.txt", f"    bind :443 ssl crt-list /etc/haproxy/list.txt crt {CRT}")],
        None,
    ),
    "other_ports_and_plain_binds_untouched": (
        "frontend f\n    bind :80\n    bind :8443 ssl crt /a.pem\n    bind :443 ssl crt /a.pem # main\n"
        "    use_backend y\n", "f", lambda path: False,
        [("    bind :443 ssl crt /a.pem # main", f"    bind :443 ssl crt /a.pem crt {CRT} # main")],
        "    use_backend y",
    ),
}


@pytest.mark.parametrize("name", JOINS)
def test_join_and_unjoin(name):
    text, frontend, isdir, changed, before = JOINS[name]
    edited = hc.join(text, frontend, LINE, CRT, 443, isdir=isdir)
    old, new = text.splitlines(), edited.splitlines()
    marked = [line for line in new if line.endswith(hc.MARKER)]
    assert len(marked) == 1 and marked[0].strip() == LINE + " " + hc.MARKER
    if before:
        assert new[new.index(marked[0]) + 1] == before
    else:
        assert marked[0] == new[max(i for i, line in enumerate(new) if line.strip() and not line.startswith("backend")
                                    and i < (new.index("backend x") if "backend x" in new else len(new)))]
    unmarked = [line for line in new if line != marked[0]]
    assert [(a, b) for a, b in zip(old, unmarked) if a != b] == changed
    # Idempotent, and exactly reversible.
    assert hc.join(edited, frontend, LINE, CRT, 443, isdir=isdir) == edited
    assert hc.unjoin(edited, CRT) == text


def test_join_replaces_an_older_line():
    edited = hc.join(OPERATOR, "www", LINE, CRT, 443, isdir=lambda path: False)
    again = hc.join(edited, "www", LINE.replace("matrix.example.test", "hs.example.test"), CRT, 443, isdir=lambda p: False)
    assert again.count(hc.MARKER) == 1 and "hs.example.test" in again
    assert hc.unjoin(again, CRT) == OPERATOR


def test_join_unknown_frontend():
    with pytest.raises(hc.HAProxyConfigError, match="no frontend or listen section named 'nope'"):
        hc.join(OPERATOR, "nope", LINE, CRT, 443)


def test_crlf_and_no_final_newline_survive():
    text = "frontend f\r\n  bind :443 ssl crt /a.pem\r\n  default_backend x"
    edited = hc.join(text, "f", LINE, CRT, 443, isdir=lambda path: False)
    assert edited.endswith("x\r\n  " + LINE + " " + hc.MARKER) and hc.unjoin(edited, CRT) == text


def test_command_line(tmp_path):
    """The role runs the file itself on the host (ansible.builtin.script): JSON on stdout."""
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(OPERATOR)
    tool = ROOT / "plugins" / "module_utils" / "haproxy_config.py"

    def run(*args):
        return json.loads(subprocess.run([sys.executable, str(tool), *args], capture_output=True, text=True,
                                         check=True).stdout)

    found = run("listeners", "--own", str(tmp_path / "mine.cfg"), str(cfg))
    assert [item["port"] for item in found["listeners"]] == [80, 443]
    assert [(item["name"], item["port_list"]) for item in found["frontends"]] == [("www", [80, 443])]
    joined = run("join", str(cfg), "www", LINE, CRT, "443")
    assert joined["changed"] and joined["text"].count(hc.MARKER) == 1
    cfg.write_text(joined["text"])
    assert run("unjoin", str(cfg), CRT) == {"changed": True, "text": OPERATOR}
    failed = subprocess.run([sys.executable, str(tool), "join", str(cfg), "nope", LINE, CRT, "443"],
                            capture_output=True, text=True, check=False)
    assert failed.returncode == 1 and json.loads(failed.stdout)["failed"]
