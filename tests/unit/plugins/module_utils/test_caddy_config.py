"""The operator's Caddy as `caddy adapt` reports it (module_utils/caddy_config.py)."""

import json
import shutil
import subprocess

import pytest

from ansible_collections.mxedge.matrix.plugins.module_utils.caddy_config import CaddyConfigError, canonical, listeners

OWN = ["/etc/caddy/mxedge-matrix"]
SRC = "/etc/caddy/Caddyfile"


def _site(hosts, *handlers):
    """A top-level route as Caddy 2.6 adapts a site block (hosts None: a site without host names)."""
    route = {"handle": [{"handler": "subroute", "routes": [{"handle": list(handlers) or [{"handler": "static_response"}]}]}],
             "terminal": True}
    if hosts is not None:
        route["match"] = [{"host": hosts}]
    return route


def _config(servers, **http):
    return {"apps": {"http": dict(http, servers=servers)}}


ROLE_SITE = _site(["matrix.example.test"], {"handler": "vars", "mxedge_matrix": "/etc/caddy/mxedge-matrix/sites.caddy"},
                  {"handler": "static_response"})

# caddy adapt of Caddy 2.6.2 (Debian 12): the operator's two TLS sites, the role's site on the same port.
OPERATOR = _config({
    "srv0": {"listen": ["127.0.0.1:8080"], "routes": [{"handle": [{"handler": "static_response", "body": "ok"}]}]},
    "srv1": {"listen": [":443"], "routes": [
        ROLE_SITE,
        _site(["unrelated.test", "WWW.Unrelated.test."]),
        _site(["example.test"], {"handler": "vars", "root": "/var/www/example.test"}, {"handler": "file_server"}),
    ]},
})


def _l(port, names, where, default=False, bind=""):
    return {"port": port, "names": names, "default": default, "where": where, "bind": bind}


CASES = {
    "nothing": ("", OWN, []),
    "no http app": (json.dumps({"admin": {"listen": "localhost:2019"}}), OWN, []),
    "debian's example Caddyfile (:80, file server)": (
        _config({"srv0": {"listen": [":80"], "routes": [_site(None, {"handler": "file_server"})]}}), OWN,
        [_l(80, ["*"], f"{SRC}, server srv0", default=True)],
    ),
    "operator's sites, the role's left out, redirects on 80": (OPERATOR, OWN, [
        _l(8080, ["*"], f"{SRC}, server srv0", default=True, bind="127.0.0.1"),
        _l(443, ["unrelated.test", "www.unrelated.test"], f"{SRC}, server srv1"),
        _l(443, ["example.test"], f"{SRC}, server srv1"),
        _l(80, ["example.test", "unrelated.test", "www.unrelated.test"], f"{SRC}, server srv1 (automatic HTTPS redirects)"),
    ]),
    "own paths not given: the role's site counts": (OPERATOR, [], [
        _l(8080, ["*"], f"{SRC}, server srv0", default=True, bind="127.0.0.1"),
        _l(443, ["matrix.example.test"], f"{SRC}, server srv1"),
        _l(443, ["unrelated.test", "www.unrelated.test"], f"{SRC}, server srv1"),
        _l(443, ["example.test"], f"{SRC}, server srv1"),
        _l(80, ["example.test", "matrix.example.test", "unrelated.test", "www.unrelated.test"],
           f"{SRC}, server srv1 (automatic HTTPS redirects)"),
    ]),
    "a marker outside own paths is the operator's": (
        _config({"srv0": {"listen": [":443"], "automatic_https": {"disable": True}, "routes": [
            _site(["a.test"], {"handler": "vars", "mxedge_matrix": "/etc/caddy/mxedge-matrix-old/x.caddy"})]}}),
        OWN, [_l(443, ["a.test"], f"{SRC}, server srv0")],
    ),
    "only the role's sites on a server: no listener there": (
        _config({"srv0": {"listen": [":443"], "routes": [ROLE_SITE]}}), OWN, [],
    ),
    "http sites are skipped by automatic HTTPS, http_port, bind, ranges, unix sockets": (
        _config({
            "srv0": {"listen": [":8080"], "automatic_https": {"skip": ["plain.test"]}, "routes": [_site(["plain.test"])]},
            "srv1": {"listen": [":8443"], "routes": [_site(None)]},
            "srv2": {"listen": ["tcp4/0.0.0.0:9443", "tcp6/[::]:9443"], "routes": [_site(["example.test"])]},
            "srv3": {"listen": ["[::1]:7000-7001", "unix//run/caddy.sock"], "automatic_https": {"disable_redirects": True},
                     "routes": [_site(["r.test"])]},
        }, http_port=8081), OWN, [
            _l(8080, ["plain.test"], f"{SRC}, server srv0"),
            _l(8443, ["*"], f"{SRC}, server srv1", default=True),
            _l(9443, ["example.test"], f"{SRC}, server srv2", bind="tcp4/0.0.0.0"),
            _l(9443, ["example.test"], f"{SRC}, server srv2", bind="tcp6/[::]"),
            _l(8081, ["example.test"], f"{SRC}, server srv2 (automatic HTTPS redirects)"),
            _l(7000, ["r.test"], f"{SRC}, server srv3", bind="[::1]"),
            _l(7001, ["r.test"], f"{SRC}, server srv3", bind="[::1]"),
        ],
    ),
    "a server without routes holds its port for every name; a route matching no host answers every name": (
        _config({"srv0": {"listen": [":8000"]},
                 "srv1": {"listen": [":8001"], "routes": [{"match": [{"host": ["a.test"]}, {"path": ["/x"]}]}]}}),
        OWN, [_l(8000, ["*"], f"{SRC}, server srv0", default=True), _l(8001, ["*"], f"{SRC}, server srv1", default=True)],
    ),
}


@pytest.mark.parametrize("adapted,own,expected", CASES.values(), ids=list(CASES))
def test_listeners(adapted, own, expected):
    assert listeners(adapted if isinstance(adapted, str) else json.dumps(adapted), own, SRC) == expected
    if not isinstance(adapted, str):
        assert listeners(adapted, own, SRC) == expected  # parsed JSON too


BAD = {
    "not json": ("{admin", "not JSON"),
    "not an object": ("[]", "must be a JSON object"),
    "servers not an object": (json.dumps({"apps": {"http": {"servers": []}}}), "apps.http.servers"),
    "listen not strings": (json.dumps(_config({"srv0": {"listen": [443]}})), "must be a string"),
    "huge range": (json.dumps(_config({"srv0": {"listen": [":1-65535"]}})), "port range"),
}


@pytest.mark.parametrize("text,message", BAD.values(), ids=list(BAD))
def test_bad_input_says_what_is_wrong(text, message):
    with pytest.raises(CaddyConfigError, match=message):
        listeners(text, OWN)


CADDYFILE = """{
\tadmin localhost:2019
\tgrace_period 45s
}

example.test {
\ttls /c.pem /k.pem
\theader X-Operator-Site example.test
\trespond "x"
}

https://unrelated.test:443, www.unrelated.test {
\ttls /c.pem /k.pem
\trespond "y"
}

:8080 {
\tbind 127.0.0.1
\trespond ok
}

import mxedge-matrix/sites.caddy # mxedge.matrix
"""

ROLE_CADDYFILE = """https://matrix.example.test:443 {
\tvars mxedge_matrix /etc/caddy/mxedge-matrix/sites.caddy
\ttls /c.pem /k.pem
\trespond hi
}
"""


@pytest.mark.skipif(not shutil.which("caddy"), reason="needs the caddy binary")
def test_what_caddy_adapt_prints(tmp_path):
    """The parser reads Caddy's own output: the operator's sites, the role's marked site left out."""
    (tmp_path / "mxedge-matrix").mkdir()
    (tmp_path / "mxedge-matrix" / "sites.caddy").write_text(ROLE_CADDYFILE)
    (tmp_path / "Caddyfile").write_text(CADDYFILE)
    proc = subprocess.run(["caddy", "adapt", "--adapter", "caddyfile", "--config", str(tmp_path / "Caddyfile")],
                          capture_output=True, text=True, check=True)
    found = {(item["port"], tuple(item["names"]), item["bind"]) for item in listeners(proc.stdout, OWN, SRC)}
    assert found == {(8080, ("*",), "127.0.0.1"), (443, ("example.test",), ""),
                     (443, ("unrelated.test", "www.unrelated.test"), ""),
                     (80, ("example.test", "unrelated.test", "www.unrelated.test"), "")}
    every = {tuple(item["names"]) for item in listeners(proc.stdout, [], SRC)}
    assert ("matrix.example.test",) in every


def _server(skip_hosts, hide):
    return {"listen": [":443"], "logs": {"skip_hosts": skip_hosts},
            "routes": [_site(["a.test", "b.test"], {"handler": "file_server", "hide": hide, "index_names": ["x", "a"]})]}


# (left, right, equal): what the role's "running vs Caddyfile" comparison sees.
CANONICAL = {
    "skip_hosts and hide in another order": (_config({"srv0": _server(["b.test", "a.test"], ["/e/C", "/e/m/w"])}),
                                             _config({"srv0": _server(["a.test", "b.test"], ["/e/m/w", "/e/C"])}), True),
    "a host more": (_config({"srv0": _server(["b.test", "a.test"], ["/e/C"])}),
                    _config({"srv0": _server(["a.test"], ["/e/C"])}), False),
    "a route's host matcher order is kept": (_config({"srv0": {"routes": [_site(["a.test", "b.test"])]}}),
                                             _config({"srv0": {"routes": [_site(["b.test", "a.test"])]}}), False),
    "route order is kept": (_config({"srv0": {"routes": [_site(["a.test"]), _site(["b.test"])]}}),
                            _config({"srv0": {"routes": [_site(["b.test"]), _site(["a.test"])]}}), False),
    "other lists keep their order": (
        _config({"srv0": {"routes": [_site(["a.test"], {"handler": "file_server", "index_names": ["x", "a"]})]}}),
        _config({"srv0": {"routes": [_site(["a.test"], {"handler": "file_server", "index_names": ["a", "x"]})]}}), False),
    "text and parsed": (json.dumps(_config({"srv0": _server(["b.test", "a.test"], [])})),
                        _config({"srv0": _server(["a.test", "b.test"], [])}), True),
    "empty running configuration": ("", {}, True),
}


@pytest.mark.parametrize("left,right,equal", CANONICAL.values(), ids=list(CANONICAL))
def test_canonical(left, right, equal):
    assert (canonical(left) == canonical(right)) is equal


@pytest.mark.skipif(not shutil.which("caddy"), reason="needs the caddy binary")
def test_canonical_makes_caddy_adapt_repeatable(tmp_path):
    """Caddy 2.6 prints skip_hosts and hide in random order: adapted 20 times, one canonical form.

    The Caddyfile is the alongside shape: operator sites with and without a log, a file_server,
    and the role's imported files (each imported file is added to the file_server's hide list).
    """
    (tmp_path / "mxedge-matrix").mkdir()
    (tmp_path / "mxedge-matrix" / "sites.caddy").write_text(ROLE_CADDYFILE)
    (tmp_path / "mxedge-matrix" / "well-known.caddy").write_text("respond /.well-known/matrix/server 200\n")
    sites = "".join("site%d.test {\n\timport %s\n\ttls /c.pem /k.pem\n\troot * /srv\n\tfile_server\n}\n"
                    % (n, tmp_path / "mxedge-matrix" / "well-known.caddy") for n in range(6))
    (tmp_path / "Caddyfile").write_text(
        "logged.test {\n\ttls /c.pem /k.pem\n\tlog\n\trespond ok\n}\n" + sites
        + "import mxedge-matrix/sites.caddy\n")
    printed = {subprocess.run(["caddy", "adapt", "--adapter", "caddyfile", "--config", str(tmp_path / "Caddyfile")],
                              capture_output=True, text=True, check=True).stdout for _attempt in range(20)}
    assert len(printed) > 1, "caddy adapt printed one order 20 times: this Caddyfile no longer shows the random order"
    assert len({json.dumps(canonical(text), sort_keys=True) for text in printed}) == 1
