"""Render tests for roles/caddy: its Caddyfile template, rendered by Ansible for several variable sets.

One ansible-playbook run (localhost, connection local, no Caddy needed) derives the shared facts
with the real mxedge.matrix.matrix role for each variable set, runs the caddy role's preflight and
renders the Caddyfile with the role's own defaults and vars. The tests then read the rendered text.
When a caddy binary is on PATH, each Caddyfile is also adapted to JSON with `caddy adapt` (which
needs no certificate files) and compared with `caddy fmt`, and the JSON is checked for what must
never be in it (certificate automation, ACME issuers) and for the well-known bytes.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import urllib.parse

import daemon_checks
import pytest
from ansible_collections.mxedge.matrix.plugins.module_utils.matrix_routes import (
    BEHAVIOURS, MAS_COMPAT_ENDPOINTS, MAS_COMPAT_VERSIONS, routes_to)
from render import OPERATOR_SITE_VARIABLES, SERVICE_VARIABLES, render

ROOT = pathlib.Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles" / "caddy"

BASE = {
    "matrix_tls_certificate": "/etc/ssl/mxedge-test/fullchain.pem",
    "matrix_tls_certificate_key": "/etc/ssl/mxedge-test/privkey.pem",
    # The variants below: the role owns the Caddyfile. ALONGSIDE (further down): next to the operator's.
    "matrix_proxy_mode": "dedicated",
}

VARIANTS = {
    "delegated": {
        "matrix_server_name": "example.test",
        "matrix_homeserver_fqdn": "matrix.example.test",
        "matrix_admin_allowed_networks": ["10.0.0.0/8", "2001:db8::/32"],
        "mx_ipv6": True,
    },
    "single_port_socket_palpo": {
        "matrix_server_name": "matrix.example.test",
        "matrix_federation_port": 443,
        "matrix_homeserver_socket": "/run/palpo/palpo.sock",
        "matrix_homeserver_flavour": "palpo",
        "mx_ipv6": False,
    },
    "same_host_not_on_443": {
        "matrix_server_name": "matrix.example.test",
        "matrix_client_port": 8443,
        "matrix_homeserver_address": "[::1]",
        "mx_ipv6": False,
        "caddy_well_known_vhost_extra": "header X-Well-Known yes",
        # Characters a Caddyfile treats specially, in the client well-known JSON.
        "matrix_identity_server_url": "https://id.example.test",
        "matrix_well_known_client_extra": {"x.test": "{http.request.uuid} {host} \\{a} }{ \"q\" é"},
    },
    "acme_delegated_not_on_443": {
        # The well-known site in the access log too (off by default).
        "caddy_access_log_well_known": True,
        "matrix_server_name": "example.test",
        "matrix_homeserver_fqdn": "matrix.example.test",
        "matrix_client_port": 8443,
        "matrix_tls_source": "acme",
        "matrix_acme_challenge_port": 8999,
        "mx_ipv6": True,
    },
    "self_signed": {
        "matrix_server_name": "other.test",
        "matrix_tls_source": "self_signed",
        "mx_ipv6": False,
    },
    "extras_no_well_known": {
        "matrix_server_name": "example.test",
        "matrix_homeserver_fqdn": "matrix.example.test",
        "matrix_well_known_serve": False,
        "matrix_client_port": 8443,
        "matrix_request_id_header": "X-Correlation-ID",
        "mx_ipv6": False,
        "caddy_global_options_extra": "log default {\n\tlevel WARN\n}",
        "caddy_client_vhost_extra": "@blocked path /_matrix/client/v3/blocked\nhandle @blocked {\n\trespond 451\n}",
        "caddy_federation_vhost_extra": "header X-Federation yes",
        "caddy_sites_extra": "http://127.0.0.1:8081 {\n\trespond ok\n}",
        "caddy_protocols": ["h1", "h2", "h3"],
        "caddy_health_check_interval": 0,
        "caddy_upstream_try_duration": 0,
        "caddy_upstream_max_conns": 8192,
        "caddy_access_log": False,
    },
    # MX13, MX14: MAS and MatrixRTC on host names of their own. The JWT service's upstream is a DNS
    # name that does not resolve here: `caddy adapt` and `caddy validate` do not resolve upstream
    # names (Caddy dials them per request).
    "services": dict(SERVICE_VARIABLES, matrix_rtc_jwt_upstream="http://hs.internal:8081", mx_ipv6=True),
    # MX16: Synapse workers on two hosts, routed by endpoint class to pools of their own; the readers
    # layout (two sync workers sticky by user, a room-sticky class, source-sticky inbound federation)
    # on two ports, and one worker of each type in single-port mode (the federation classes on the client site).
    "workers_readers": {
        "matrix_server_name": "example.test",
        "matrix_homeserver_fqdn": "matrix.example.test",
        "matrix_worker_hosts": {"hs1": "10.0.0.1", "hs2": "10.0.0.2"},
        "matrix_workers": "{{ 'readers' | mxedge.matrix.synapse_worker_layout(['hs1', 'hs2']) }}",
        "mx_ipv6": True,
    },
    # Two workers per pool on loopback addresses of their own (the live test below runs them), health checked every second.
    "workers_live": {
        "matrix_server_name": "matrix.example.test",
        "matrix_worker_hosts": {"hs1": "127.0.0.2", "hs2": "127.0.0.3"},
        "matrix_workers": [{"name": f"{kind}{n}", "type": worker_type, "host": f"hs{n}", "port": port}
                           for kind, worker_type, port in (("sync", "sync", 18101), ("creator", "event_creator", 18102),
                                                           ("fedin", "federation_inbound", 18103),
                                                           ("reader", "client_reader", 18104))
                           for n in (1, 2)],
        "caddy_health_check_interval": 1,
        "mx_ipv6": False,
    },
    "workers_one_of_each_single_port": {
        "matrix_server_name": "matrix.example.test",
        "matrix_federation_port": 443,
        "matrix_worker_hosts": {"hs1": "10.0.0.1", "hs2": "10.0.0.2"},
        "matrix_workers": "{{ 'one_of_each' | mxedge.matrix.synapse_worker_layout(['hs1', 'hs2']) }}",
        "caddy_access_log": False,
        "mx_ipv6": False,
    },
}

PLAYBOOK = """
- name: Render the caddy role's Caddyfile for one variable set per host
  hosts: all
  connection: local
  gather_facts: false
  tasks:
    - name: Load the caddy role (defaults, vars, the matrix dependency) and run its preflight
      ansible.builtin.include_role:
        name: mxedge.matrix.caddy
        tasks_from: preflight
        public: true
    - name: Pretend the host's IPv6 of this variant
      ansible.builtin.set_fact:
        _matrix_ipv6: "{{{{ mx_ipv6 }}}}"
    - name: Write the rendered Caddyfile and the derived values, in one file per variant
      ansible.builtin.copy:
        dest: "{out}/{{{{ inventory_hostname }}}}.json"
        mode: "0644"
        content: "{{{{ {{'caddyfile': lookup('ansible.builtin.template', '{role}/templates/Caddyfile.j2'),
          'placement': _matrix_well_known_placement, 'routes': _matrix_routes,
          'server_body': _matrix_well_known_server_body, 'client_body': _matrix_well_known_client_body,
          'max_body': _matrix_max_body_bytes}} | to_json }}}}"
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("caddy-render")
    data_by_name = render(out, PLAYBOOK.format(role=ROLE, out=out), {name: dict(BASE, **v) for name, v in VARIANTS.items()})
    result = {}
    for name in VARIANTS:
        data = data_by_name[name]
        path = out / f"{name}.Caddyfile"
        path.write_text(data["caddyfile"])
        data["path"] = path
        (server,) = next(pool for pool in data["routes"]["upstreams"] if pool["name"] == "homeserver")["servers"]
        data["upstream"] = f"unix/{server['socket']}" if server["socket"] else server["endpoint"]
        result[name] = data
    return result


def _blocks(text):
    """Top-level blocks of a Caddyfile: {address line: body text}. Comments and backtick tokens are skipped."""
    blocks, depth, current, head = {}, 0, None, None
    for line in text.splitlines():
        code = re.sub(r"`[^`]*`", "``", line)
        code = "" if code.lstrip().startswith("#") else code
        if depth == 0 and code.rstrip().endswith("{"):
            head, current = code.rstrip()[:-1].strip(), []
        elif current is not None:
            current.append(line)
        depth += code.count("{") - code.count("}")
        if current is not None and depth == 0:
            blocks[head] = "\n".join(current[:-1])
            current = None
    return blocks


def _unescape(raw):
    """A respond body as Caddy serves it: the replacer's escapes (a backslash before a brace) removed."""
    return re.sub(r"\\([{}])", r"\1", raw)


def _escape(text):
    """A body as the templates write it into a backtick token: braces escaped for Caddy's replacer."""
    return text.replace("{", "\\{").replace("}", "\\}")


def _respond_bodies(block):
    """The well-known bodies of a site as Caddy serves them: the backtick token of their respond."""
    return {kind: _unescape(raw) for kind, raw in
            re.findall(r"handle @mxedge_matrix_well_known_(\w+) \{\n.*?\n\t\trespond `([^`]*)` 200\n", block, re.S)}


def _handles(block):
    """The route handles of a site, in order: [(matcher name, matcher body, handle body)]."""
    return re.findall(r"^\t@(\w+) \{\n(.*?)\n\t\}\n\thandle @\1 \{\n(.*?)\n\t\}$", block, re.S | re.M)


def _site_of(text, vhost):
    """The site block of a route-table vhost (any_host sites have no host in their address)."""
    hosts = [""] if vhost["any_host"] else vhost["hosts"]
    scheme = "https" if vhost["tls"] else "http"
    return _blocks(text)[", ".join(f"{scheme}://{host}:{vhost['port']}" for host in hosts)]


def _snippet(route):
    """The reverse_proxy snippet a forwarding route imports: per pool, stickiness, and the tunnel class apart."""
    policy = route["policy"]
    return ("mxedge_matrix_upstream_" + route["upstream"] + (f"_by_{policy['sticky']}" if policy["sticky"] else "")
            + ("_tunnel" if policy["timeout"] == "tunnel" else ""))


def _matcher_body(route):
    """The named matcher of a route as rendered: its path or path_regexp (MX16), then its methods."""
    match = route["match"]
    path = match["path"]
    if match["kind"] == "regex":
        lines = [f"path_regexp `{match['pattern']}`"]
    elif match["kind"] == "prefix":
        # A prefix ending in "/" ("/", a whole host) is itself and everything below it.
        lines = [f"path {path} {path.rstrip('/')}/*"]
    else:
        lines = [f"path {path}"]
    if match["methods"]:
        lines.append("method " + " ".join(match["methods"]))
    return "\n\t\t".join(lines)


@pytest.mark.parametrize("name", VARIANTS)
def test_starts_with_the_managed_header(rendered, name):
    assert rendered[name]["caddyfile"].startswith("#\n# Ansible managed")


@pytest.mark.parametrize("name", VARIANTS)
def test_no_acme_and_files_for_tls(rendered, name):
    text = rendered[name]["caddyfile"]
    glob = _blocks(text)[""]
    assert re.search(r"^\tauto_https off$", glob, re.M)
    assert not re.search(r"^\s*(email|acme_ca|acme_dns|on_demand_tls|cert_issuer|local_certs)\b", text, re.M)
    tls = _blocks(text)["(mxedge_matrix_tls)"]
    if VARIANTS[name].get("matrix_tls_source", "files") == "files":
        # Copies the caddy user can read.
        assert "tls /etc/caddy/mxedge-tls/fullchain.pem /etc/caddy/mxedge-tls/privkey.pem {" in tls
    else:
        # mxedge.matrix.tls's files, the key readable by the caddy group.
        fqdn = VARIANTS[name].get("matrix_homeserver_fqdn", VARIANTS[name]["matrix_server_name"])
        assert f"tls /etc/mxedge-matrix/tls/{fqdn}.crt /etc/mxedge-matrix/tls/{fqdn}.key {{" in tls
    assert "protocols tls1.2 tls1.3" in tls
    ciphers = re.search(r"ciphers (.+)", tls).group(1).split()
    assert len(ciphers) == 6 and all(c.startswith("TLS_ECDHE_") and ("GCM" in c or "CHACHA20" in c) for c in ciphers)
    for head, body in _blocks(text).items():
        if head.startswith("https://"):
            assert body.lstrip().startswith("import mxedge_matrix_site"), head


@pytest.mark.parametrize("name", VARIANTS)
def test_upstream_gets_the_uri_untouched_and_fresh_headers(rendered, name):
    text = rendered[name]["caddyfile"]
    upstream = _blocks(text)["(mxedge_matrix_upstream_homeserver)"]
    assert not re.search(r"^\s*(rewrite|uri|handle_path|header_up X-Forwarded-For)\b", text, re.M)
    assert not re.search(r"^\s*trusted_proxies", text, re.M)  # Caddy then replaces X-Forwarded-* itself
    assert "header_up -Forwarded" in upstream and "header_up X-Real-IP {remote_host}" in upstream
    header = VARIANTS[name].get("matrix_request_id_header", "X-Request-ID")
    assert f"header_up {header} {{http.request.uuid}}" in upstream
    assert "versions 1.1" in upstream
    assert int(re.search(r"read_timeout (\d+)s", upstream).group(1)) >= 180
    assert f"reverse_proxy {rendered[name]['upstream']} {{" in upstream
    # MX08: every forwarding route has the table's body limit.
    for vhost in rendered[name]["routes"]["vhosts"]:
        for matcher, _match, handle in _handles(_site_of(text, vhost)):
            if "import mxedge_matrix_upstream_" in handle:
                assert f"max_size {rendered[name]['max_body']}" in handle, matcher


@pytest.mark.parametrize("name", VARIANTS)
def test_every_site_renders_the_route_table_in_order(rendered, name):
    """MX01-MX04, MX06, MX12: one handle per route of the table, in its order, then the fallback."""
    text = rendered[name]["caddyfile"]
    table = rendered[name]["routes"]
    for vhost in table["vhosts"]:
        site = _site_of(text, vhost)
        handles = [h for h in _handles(site) if h[0].startswith("mxedge_matrix_")]
        assert [matcher for matcher, _m, _h in handles] == [
            "mxedge_matrix_" + re.sub(r"[^A-Za-z0-9]", "_", route["id"]) for route in vhost["routes"]]
        for route, (matcher, match, handle) in zip(vhost["routes"], handles):
            assert match.strip() == _matcher_body(route), matcher
            if route["action"] == "refuse":
                assert handle.strip() == f"error {route['status']}", matcher
            elif route["action"] == "static":
                assert handle.rstrip().endswith("` 200"), matcher
            else:
                assert handle.rstrip().endswith(f"import {_snippet(route)}"), matcher
            if route.get("allow_sources"):
                assert f"@{matcher}_denied not remote_ip {' '.join(route['allow_sources'])}" in handle
                assert handle.index(f"error @{matcher}_denied 403") < handle.index(f"error @{matcher}_raw_mismatch")
        fallback = site.rsplit("\thandle {", 1)[1].rsplit("\n\t}", 1)[0]
        if vhost["tls"]:
            assert fallback.strip() == "error 404"
        else:
            assert fallback.strip() == "redir https://{host}" + vhost["fallback"]["port_suffix"] + "{uri} 301"


@pytest.mark.parametrize("name", VARIANTS)
def test_every_route_checks_the_raw_uri_exact_ones_too(rendered, name):
    """MX04: each forwarding and static route refuses (404) a raw URI that only normalises to its path."""
    text = rendered[name]["caddyfile"]
    checked = 0
    for vhost in rendered[name]["routes"]["vhosts"]:
        for route, (matcher, _match, handle) in zip(vhost["routes"], _handles(_site_of(text, vhost))):
            if route["action"] == "refuse":
                continue
            raw = route["match"]["raw_regex"]
            assert f"@{matcher}_raw_mismatch expression `!{{http.request.uri}}.matches(r\"{raw}\")`" in handle
            lines = handle.splitlines()
            mismatch = lines.index(f"\t\terror @{matcher}_raw_mismatch 404")
            assert all("import" not in line and "respond" not in line for line in lines[:mismatch])
            checked += 1
    assert checked >= 2


def test_issue_18_bypass_uris_are_refused_by_the_exact_route(rendered):
    """The raw_regex of the exact /health route (as rendered) refuses what only normalises to /health."""
    text = rendered["delegated"]["caddyfile"]
    client = _site_of(text, rendered["delegated"]["routes"]["vhosts"][0])
    (regex,) = re.findall(r"@mxedge_matrix_health_raw_mismatch expression `!\{http\.request\.uri\}\.matches\(r\"([^\"]+)\"\)`", client)
    for uri in ["/_synapse/admin/v2/users/%2E%2E%2F%2E%2E%2F%2E%2E%2F%2E%2E%2Fhealth", "/_matrix/%2e%2e/health",
                "/_matrix/../health", "//health", "/HEALTH", "/health/", "/healthx", "/%68ealth"]:
        assert not re.search(regex, uri), uri
    for uri in ["/health", "/health?x=1"]:
        assert re.search(regex, uri), uri


@pytest.mark.parametrize("name", VARIANTS)
def test_errors_the_proxy_answers_are_the_tables_matrix_json(rendered, name):
    """MX11: one handle_errors branch per status of the table, with its canonical body, JSON, CORS, Retry-After."""
    text = rendered[name]["caddyfile"]
    blocks = _blocks(text)
    errors = blocks["(mxedge_matrix_errors)"]
    table = rendered[name]["routes"]["errors"]
    branches = re.findall(r"\t\t@mxedge_matrix_error_(\d+) expression `([^`]*)`\n\t\thandle @mxedge_matrix_error_\1 \{\n(.*?)\n\t\t\}",
                          errors, re.S)
    assert [status for status, _e, _b in branches] == sorted(table)
    for status, expression, branch in branches:
        error = table[status]
        assert expression.startswith(f"{{http.error.status_code}} == {status}")
        assert "\t\t\theader Content-Type application/json" in branch
        assert '\t\t\theader Access-Control-Allow-Origin "*"' in branch
        assert ("Retry-After" in branch) == ("retry_after" in error)
        if "retry_after" in error:
            assert f"\t\t\theader Retry-After {error['retry_after']}" in branch
        (raw, code) = re.findall(r"respond `([^`]*)` (\d+)", branch)[0]
        assert (_unescape(raw), int(code)) == (error["body"], error["status"])
        assert json.loads(_unescape(raw)) == {"errcode": error["errcode"], "error": error["error"]}
    # request_body's limit surfaces as a 502 in Caddy 2.6: it is answered as the 413, before the 502 branch.
    assert 'expression `{http.error.status_code} == 413 || {http.error.message}.contains("request body too large")`' in errors
    # Every Matrix site answers its errors through it; nothing else answers an error status itself.
    assert "import mxedge_matrix_errors" in blocks["(mxedge_matrix_site)"]
    for vhost in rendered[name]["routes"]["vhosts"]:
        site = _site_of(text, vhost)
        assert ("import mxedge_matrix_site" if vhost["tls"] else "import mxedge_matrix_errors") in site
        for matcher, _match, handle in _handles(site):
            if matcher.startswith("mxedge_matrix_"):
                assert not re.search(r"^\s*respond\b(?!.*` 200$)", handle, re.M), handle


def test_delegated_layout(rendered):
    variant = rendered["delegated"]
    assert variant["placement"] == "separate"
    blocks = _blocks(variant["caddyfile"])
    client, federation, well_known = (blocks["https://matrix.example.test:443"], blocks["https://:8448"],
                                      blocks["https://example.test:443"])
    assert "bind tcp4/0.0.0.0 tcp6/[::]" in blocks["(mxedge_matrix_site)"]
    assert "path /_synapse/client /_synapse/client/*" in client and "path /health\n" in client
    assert "@mxedge_matrix_admin_synapse_admin_denied not remote_ip 10.0.0.0/8 2001:db8::/32" in client
    assert "/_synapse/client" not in federation and "/health" not in federation
    assert re.search(r"handle @mxedge_matrix_admin_synapse_admin \{\s*error 403\s*\}", federation)
    assert "import mxedge_matrix_upstream" not in well_known
    assert "well_known" not in client and "well_known" not in federation
    assert _respond_bodies(well_known) == {"server": variant["server_body"], "client": variant["client_body"]}
    assert 'header Access-Control-Allow-Origin "*"' in well_known and "header Content-Type application/json" in well_known
    assert "health_uri /health" in blocks["(mxedge_matrix_upstream_homeserver)"]


def test_single_port_socket_palpo_layout(rendered):
    variant = rendered["single_port_socket_palpo"]
    assert variant["placement"] == "client"
    blocks = _blocks(variant["caddyfile"])
    sites = [head for head in blocks if head.startswith("https://")]
    assert sites == ["https://matrix.example.test:443"]
    client = blocks[sites[0]]
    assert variant["upstream"] == "unix//run/palpo/palpo.sock"
    assert "bind tcp4/0.0.0.0\n" in blocks["(mxedge_matrix_site)"]
    assert "/_palpo/client /_palpo/client/*" in client and "/_synapse" not in client
    assert re.search(r"@mxedge_matrix_admin_palpo_admin \{\n\t\tpath /_palpo/admin /_palpo/admin/\*\n\t\}\n"
                     r"\thandle @mxedge_matrix_admin_palpo_admin \{\s*error 403", client)
    assert _respond_bodies(client) == {"server": variant["server_body"], "client": variant["client_body"]}


def test_same_host_not_on_443_gets_its_own_well_known_site(rendered):
    variant = rendered["same_host_not_on_443"]
    assert variant["placement"] == "separate"
    assert variant["upstream"] == "[::1]:8008"
    blocks = _blocks(variant["caddyfile"])
    well_known = blocks["https://matrix.example.test:443"]
    assert "header X-Well-Known yes" in well_known
    assert "well_known" not in blocks["https://matrix.example.test:8443"]
    assert _respond_bodies(well_known) == {"server": variant["server_body"], "client": variant["client_body"]}


def test_operator_extras_land_in_their_blocks_first(rendered):
    variant = rendered["extras_no_well_known"]
    assert variant["placement"] == "none"
    text = variant["caddyfile"]
    blocks = _blocks(text)
    client, federation = blocks["https://matrix.example.test:8443"], blocks["https://:8448"]
    # operator handles come before the role's, so they win (Caddy keeps their written order)
    assert client.index("handle @blocked") < client.index("handle @mxedge_matrix_admin_synapse_admin")
    assert "header X-Federation yes" in federation and "X-Federation" not in client
    assert "well-known" not in text.split("# MX04 Routes match", 1)[1]
    assert "level WARN" in blocks[""] and "protocols h1 h2 h3" in blocks[""]
    assert blocks["http://127.0.0.1:8081"].strip() == "respond ok"
    upstream = blocks["(mxedge_matrix_upstream_homeserver)"]
    assert "max_conns_per_host 8192" in upstream and "health_uri" not in upstream and "lb_try_duration" not in upstream
    assert "log {" not in blocks["(mxedge_matrix_site)"]


# MX13, MX14: the services variant's sites, and what reverse_proxy dials for each pool.
SERVICE_SITES = [  # (vhost, host name, pool)
    ("mas", "auth.example.test", "mas"),
    ("rtc_jwt", "rtc-jwt.example.test", "rtc_jwt"),
    ("rtc_sfu", "sfu.example.test", "rtc_sfu"),
]
SERVICE_DIALS = {"mas": "127.0.0.1:8080", "rtc_jwt": "hs.internal:8081", "rtc_sfu": "127.0.0.1:7880"}


def _comment_before(text, head):
    """The comment lines right above a top-level block (Caddyfile comments are dropped by _blocks)."""
    lines = text.split(f"\n{head} {{\n", 1)[0].splitlines()
    comment = []
    while lines and lines[-1].startswith("#"):
        comment.insert(0, lines.pop())
    return "\n".join(comment)


def _forward_routes(variant):
    return [(vhost, route) for vhost in variant["routes"]["vhosts"] for route in vhost["routes"] if route["action"] == "forward"]


@pytest.mark.parametrize("version,endpoint", [(v, e) for v in MAS_COMPAT_VERSIONS for e in MAS_COMPAT_ENDPOINTS])
def test_mas_compat_routes_go_to_mas_before_the_client_api(rendered, version, endpoint):
    """MX13: login, logout and refresh of every client API version go to MAS, tried before the /_matrix route."""
    variant = rendered["services"]
    client_vhost = next(v for v in variant["routes"]["vhosts"] if v["name"] == "client")
    handles = _handles(_site_of(variant["caddyfile"], client_vhost))
    order = [matcher for matcher, _m, _h in handles]
    matcher = "mxedge_matrix_mas_" + re.sub(r"[^A-Za-z0-9]", "_", f"{version}-{endpoint}")
    path = f"/_matrix/client/{version}/{endpoint}"
    (match, handle), = [(m, h) for name, m, h in handles if name == matcher]
    assert match.strip() == f"path {path} {path}/*"
    assert handle.rstrip().endswith("import mxedge_matrix_upstream_mas")
    assert order.index(matcher) < order.index("mxedge_matrix_api_matrix")
    assert f"# MX13 MX04 route mas-{version.replace('/', '-')}-{endpoint}: prefix {path}, forwarded to mas" in variant["caddyfile"]


def test_mas_compat_routes_are_the_only_client_routes_to_mas(rendered):
    variant = rendered["services"]
    to_mas = [route["id"] for vhost, route in _forward_routes(variant) if vhost["name"] == "client" and route["upstream"] == "mas"]
    assert len(to_mas) == len(MAS_COMPAT_VERSIONS) * len(MAS_COMPAT_ENDPOINTS) == 12


@pytest.mark.parametrize("vhost_name,host,pool", SERVICE_SITES)
def test_service_sites_answer_only_their_host_and_forward_it_whole(rendered, vhost_name, host, pool):
    """MX13, MX14: a site of its own on the service's host name, everything to its pool, URI unmodified."""
    variant = rendered["services"]
    text = variant["caddyfile"]
    vhost = next(v for v in variant["routes"]["vhosts"] if v["name"] == vhost_name)
    assert (vhost["hosts"], vhost["port"], vhost["any_host"]) == ([host], 443, False)
    # The site address names the host alone; no other site names it.
    heads = [head for head in _blocks(text) if re.search(rf"//{re.escape(host)}:", head)]
    assert heads == [f"https://{host}:443"]
    site = _blocks(text)[heads[0]]
    assert site.lstrip().startswith("import mxedge_matrix_site")
    ((matcher, match, handle),) = [h for h in _handles(site) if h[0].startswith("mxedge_matrix_")]
    assert match.strip() == "path / /*"
    assert f'@{matcher}_raw_mismatch expression `!{{http.request.uri}}.matches(r"^/")`' in handle
    (route,) = vhost["routes"]
    assert handle.rstrip().endswith(f"import {_snippet(route)}")
    upstream = _blocks(text)[f"({_snippet(route)})"]
    assert upstream.strip().startswith(f"reverse_proxy {SERVICE_DIALS[pool]} {{")
    assert "health_uri" not in upstream  # the service pools have no health path
    assert not re.search(r"^\s*(rewrite|uri|handle_path)\b", site, re.M)


@pytest.mark.parametrize("name", VARIANTS)
def test_websocket_handling_only_on_tunnel_routes(rendered, name):
    """MX14: only routes of the tunnel class import a tunnel snippet, whose upstream timeouts are caddy_tunnel_timeout."""
    text = rendered[name]["caddyfile"]
    blocks = _blocks(text)
    tunnel_timeout = VARIANTS[name].get("caddy_tunnel_timeout", 3600)
    upstream_timeout = VARIANTS[name].get("caddy_upstream_timeout", 600)
    for vhost, route in _forward_routes(rendered[name]):
        tunnel = route["policy"]["timeout"] == "tunnel"
        head = f"({_snippet(route)})"
        upstream, comment = blocks[head], _comment_before(text, head)
        timeout = tunnel_timeout if tunnel else upstream_timeout
        assert re.findall(r"^\t\t\t(read|write)_timeout (\d+)s$", upstream, re.M) == [("read", str(timeout)), ("write", str(timeout))]
        assert ("MX14 WebSocket" in comment) == tunnel, (vhost["name"], route["id"])
        assert head.endswith("_tunnel)") == tunnel
    tunnel_snippets = [head for head in blocks if head.startswith("(mxedge_matrix_upstream_") and head.endswith("_tunnel)")]
    assert len(tunnel_snippets) == (1 if name == "services" else 0)
    # Caddy 2.6 has no stream_timeout / stream_close_delay (Caddy 2.7): they would not parse.
    assert not re.search(r"^\s*stream_(timeout|close_delay)\b", text, re.M)


def test_the_tunnel_route_is_the_sfu_with_the_default_tunnel_timeout(rendered):
    variant = rendered["services"]
    tunnel = [(vhost["name"], route["id"]) for vhost, route in _forward_routes(variant) if route["policy"]["timeout"] == "tunnel"]
    assert tunnel == [("rtc_sfu", "rtc-sfu")]
    upstream = _blocks(variant["caddyfile"])["(mxedge_matrix_upstream_rtc_sfu_tunnel)"]
    assert "read_timeout 3600s" in upstream and "write_timeout 3600s" in upstream
    assert "(mxedge_matrix_upstream_rtc_sfu)" not in _blocks(variant["caddyfile"])


@pytest.mark.skipif(not shutil.which("caddy"), reason="needs the caddy binary")
def test_caddy_adapts_the_service_sites_to_host_routes_with_their_timeouts(rendered):
    """MX13, MX14 as Caddy reads them: one route per service host, its reverse_proxy's dial and transport timeouts."""
    proc = subprocess.run(["caddy", "adapt", "--adapter", "caddyfile", "--config", str(rendered["services"]["path"])],
                          capture_output=True, text=True, check=True)
    daemon_checks.record(f"Caddy {daemon_checks.host_version('caddy')} (this machine): caddy adapt")
    (server,) = [s for s in json.loads(proc.stdout)["apps"]["http"]["servers"].values() if "tcp4/0.0.0.0:443" in s["listen"]]
    for _vhost, host, pool in SERVICE_SITES:
        (route,) = [r for r in server["routes"] if r.get("match") == [{"host": [host]}]]
        text = json.dumps(route)
        proxies = re.findall(r'"handler": "reverse_proxy".*?"upstreams": \[\{"dial": "([^"]+)"\}\]', text)
        assert proxies == [SERVICE_DIALS[pool]], host
        seconds = 3600 if pool == "rtc_sfu" else 600
        assert f'"read_timeout": {seconds * 10**9}' in text and f'"write_timeout": {seconds * 10**9}' in text, host


# MX16: Synapse workers. What lb_policy each stickiness key (or, without one, the pool's balance) becomes.
WORKER_VARIANTS = [name for name in VARIANTS if name.startswith("workers_")]
ROOM_HEADER = "X-Mxedge-Matrix-Room"
LB_POLICIES = {
    "user": "header Authorization",
    "room": f"header {ROOM_HEADER}",
    "source": "ip_hash",
    "first": "first",
    "roundrobin": "round_robin",
}


def _pools(variant):
    return {pool["name"]: pool for pool in variant["routes"]["upstreams"]}


def _worker_routes(variant):
    return [(vhost, route) for vhost, route in _forward_routes(variant) if _pools(variant)[route["upstream"]]["fallback"]]


@pytest.mark.parametrize("name", WORKER_VARIANTS)
def test_worker_routes_set_their_fallback_and_stickiness(rendered, name):
    """MX16: each worker route names its pool's fallback, carries the room for room stickiness, then imports its pool."""
    variant = rendered[name]
    text = variant["caddyfile"]
    room_regex = variant["routes"]["sticky"]["room"]["regex"]
    routes = _worker_routes(variant)
    assert {route["policy"]["sticky"] for _vhost, route in routes} >= {"user", "room", "source"}
    for vhost, route in routes:
        handles = {matcher: handle for matcher, _match, handle in _handles(_site_of(text, vhost))}
        matcher = "mxedge_matrix_" + re.sub(r"[^A-Za-z0-9]", "_", route["id"])
        handle = handles[matcher]
        pool = _pools(variant)[route["upstream"]]
        assert f"\t\tvars mxedge_matrix_fallback {pool['fallback']}\n" in handle, matcher
        assert handle.rstrip().endswith(f"import {_snippet(route)}"), matcher
        assert "MX16" in route["behaviours"] and f"# {' '.join(route['behaviours'])} route {route['id']}: regex " in text
        if route["policy"]["sticky"] == "room":
            block = re.search(r"\n\t\troute \{\n(.*?)\n\t\t\}\n", handle, re.S).group(1).splitlines()
            assert [line.strip() for line in block] == [
                f"@{matcher}_room path_regexp mxedge_matrix_room `{room_regex}`",
                f"request_header {ROOM_HEADER} {{path}}",  # whatever the client sent is overwritten
                f"request_header @{matcher}_room {ROOM_HEADER} {{re.mxedge_matrix_room.1}}",
            ]
        else:
            assert ROOM_HEADER not in handle, matcher
    # The homeserver's own routes name no fallback.
    for vhost, route in _forward_routes(variant):
        if route["upstream"] == "homeserver":
            handle = {m: h for m, _x, h in _handles(_site_of(text, vhost))}["mxedge_matrix_" + re.sub(r"[^A-Za-z0-9]", "_", route["id"])]
            assert "mxedge_matrix_fallback" not in handle, route["id"]


@pytest.mark.parametrize("name", WORKER_VARIANTS)
def test_worker_pools_balance_check_health_and_keep_the_forwarding(rendered, name):
    """MX16, MX05, MX07, MX08: one snippet per worker pool and stickiness: its workers, lb_policy by the sticky key
    (else by balance), active and passive health checks, retries instead of waiting, and the homeserver's forwarding."""
    variant = rendered[name]
    blocks = _blocks(variant["caddyfile"])
    timeout = VARIANTS[name].get("caddy_upstream_timeout", 600)
    checked = 0
    for _vhost, route in _worker_routes(variant):
        pool = _pools(variant)[route["upstream"]]
        upstream = blocks[f"({_snippet(route)})"]
        endpoints = " ".join(server["endpoint"] for server in pool["servers"])
        assert upstream.strip().startswith(f"reverse_proxy {endpoints} {{"), route["id"]
        policy = LB_POLICIES[route["policy"]["sticky"] or pool["balance"]]
        assert re.findall(r"^\t\tlb_policy (.+)$", upstream, re.M) == [policy], route["id"]
        assert ("header_up -" + ROOM_HEADER in upstream) == (route["policy"]["sticky"] == "room")
        interval = VARIANTS[name].get("caddy_health_check_interval", 5)
        for line in ("header_up -Forwarded", "header_up X-Real-IP {remote_host}", "header_up X-Request-ID {http.request.uuid}",
                     "versions 1.1", f"read_timeout {timeout}s", f"health_uri {pool['health_path']}", f"health_interval {interval}s",
                     "fail_duration 10s", "max_fails 1"):
            assert f"\t{line}\n" in upstream, (route["id"], line)
        retries = re.findall(r"lb_retries (\d+)", upstream)
        assert retries == ([str(len(pool["servers"]) - 1)] if len(pool["servers"]) > 1 else []), route["id"]
        # A pool with a fallback does not make requests wait for a worker.
        assert not re.search(r"^\t\tlb_try_duration", upstream, re.M), route["id"]
        checked += 1
    assert checked >= 8


def _unlogged(name, vhost):
    """caddy_access_log_well_known: the well-known site has no access log unless the operator asks for it."""
    settings = VARIANTS[name]
    return (vhost["name"] == "well_known" and settings.get("caddy_access_log", True)
            and not settings.get("caddy_access_log_well_known", False))


@pytest.mark.parametrize("name", VARIANTS)
def test_the_well_known_site_is_logged_only_when_asked(rendered, name):
    """caddy_access_log_well_known: the unlogged site snippet is the logged one without its log block, and exists
    only when a TLS well-known site imports it."""
    variant = rendered[name]
    blocks = _blocks(variant["caddyfile"])
    unlogged = [vhost for vhost in variant["routes"]["vhosts"] if vhost["tls"] and _unlogged(name, vhost)]
    assert ("(mxedge_matrix_site_unlogged)" in blocks) == bool(unlogged)
    if unlogged:
        def code(block):
            return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        logged = code(blocks["(mxedge_matrix_site)"])
        assert "\tlog {" in logged
        assert code(blocks["(mxedge_matrix_site_unlogged)"]) == logged[:logged.index("\tlog {")]


@pytest.mark.parametrize("name", VARIANTS)
def test_only_sites_with_worker_routes_fall_back(rendered, name):
    """MX16, MX11: the sites with worker routes use the errors snippet whose first branch sends a worker route's
    request to its pool's fallback when the pool is down; every other error is the table's Matrix JSON as before."""
    variant = rendered[name]
    text = variant["caddyfile"]
    blocks = _blocks(text)
    workers = {vhost["name"] for vhost, _route in _worker_routes(variant)}
    assert bool(workers) == (name in WORKER_VARIANTS)
    for vhost in variant["routes"]["vhosts"]:
        site = _site_of(text, vhost)
        imports = re.findall(r"^\timport (mxedge_matrix_(?:site|errors)\w*)$", site, re.M)
        suffix = "_workers" if vhost["name"] in workers else ("_unlogged" if vhost["tls"] and _unlogged(name, vhost) else "")
        assert imports == [("mxedge_matrix_site" if vhost["tls"] else "mxedge_matrix_errors") + suffix], vhost["name"]
    if not workers:
        assert "(mxedge_matrix_errors_workers)" not in blocks and "mxedge_matrix_fallback" not in text
        return
    plain, fallback = blocks["(mxedge_matrix_errors)"], blocks["(mxedge_matrix_errors_workers)"]
    head, rest = fallback.split("\t\t@mxedge_matrix_error_", 1)
    assert rest == plain.split("\t\t@mxedge_matrix_error_", 1)[1]
    code = [line.strip() for line in head.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert code == [
        "handle_errors {",
        '@mxedge_matrix_fallback_homeserver expression `{http.vars.mxedge_matrix_fallback} == "homeserver" && '
        '({http.error.status_code} == 503 && {http.error.message} == "no upstreams available" || '
        '{http.error.status_code} == 502 && {http.error.message}.startsWith("dial"))`',
        "handle @mxedge_matrix_fallback_homeserver {",
        "import mxedge_matrix_upstream_homeserver",
        "}",
    ]
    assert "(mxedge_matrix_upstream_homeserver)" in blocks
    assert blocks["(mxedge_matrix_site_workers)"] == re.sub(
        r"^\timport mxedge_matrix_errors$", "\timport mxedge_matrix_errors_workers", blocks["(mxedge_matrix_site)"], flags=re.M)


def _adapted_proxies(config):
    """Every reverse_proxy handler of an adapted configuration, wherever it is nested (routes, handle_errors)."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("handler") == "reverse_proxy":
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(config)
    return found


@pytest.mark.skipif(not shutil.which("caddy"), reason="needs the caddy binary")
@pytest.mark.parametrize("name", WORKER_VARIANTS)
def test_caddy_adapts_the_worker_pools(rendered, name):
    """MX16 as Caddy reads it: each pool's reverse_proxy dials its workers with the sticky policy and both health
    checks, and the sites' error routes proxy to the homeserver."""
    variant = rendered[name]
    proc = subprocess.run(["caddy", "adapt", "--adapter", "caddyfile", "--config", str(variant["path"])],
                          capture_output=True, text=True, check=True)
    daemon_checks.record(f"Caddy {daemon_checks.host_version('caddy')} (this machine): caddy adapt")
    config = json.loads(proc.stdout)
    proxies = _adapted_proxies(config["apps"]["http"]["servers"])
    policies = {"user": {"policy": "header", "field": "Authorization"}, "room": {"policy": "header", "field": ROOM_HEADER},
                "source": {"policy": "ip_hash"}, "first": {"policy": "first"}, "roundrobin": {"policy": "round_robin"}}
    for _vhost, route in _worker_routes(variant):
        pool = _pools(variant)[route["upstream"]]
        dials = [server["endpoint"] for server in pool["servers"]]
        mine = [p for p in proxies if [u["dial"] for u in p["upstreams"]] == dials
                and p["load_balancing"]["selection_policy"] == policies[route["policy"]["sticky"] or pool["balance"]]]
        assert mine, route["id"]
        for proxy in mine:
            assert proxy["health_checks"]["active"]["uri"] == "/health"
            assert proxy["health_checks"]["passive"] == {"fail_duration": 10 * 10**9, "max_fails": 1}
            assert proxy["load_balancing"].get("retries", 0) == len(dials) - 1
    (homeserver,) = [s["endpoint"] for s in _pools(variant)["homeserver"]["servers"]]
    for server in config["apps"]["http"]["servers"].values():
        errors = _adapted_proxies(server.get("errors", {}))
        assert [[u["dial"] for u in p["upstreams"]] for p in errors] in ([], [[homeserver]]), errors


@pytest.mark.skipif(not shutil.which("caddy") or not shutil.which("openssl"), reason="needs caddy and openssl")
@pytest.mark.parametrize("name", WORKER_VARIANTS)
def test_caddy_validates_the_worker_sites(rendered, name, tmp_path):
    """MX10, MX16: caddy validate (provisions every module: the regex matchers, the expressions, the health checks)."""
    text = _live_caddyfile(rendered[name]["caddyfile"], tmp_path)
    (tmp_path / "Caddyfile").write_text(text)
    proc = subprocess.run(["caddy", "validate", "--adapter", "caddyfile", "--config", str(tmp_path / "Caddyfile")],
                          capture_output=True, text=True, check=False)
    daemon_checks.record(f"Caddy {daemon_checks.host_version('caddy')} (this machine): caddy validate")
    assert proc.returncode == 0, proc.stderr


# MX16 live: a stand-in for every upstream (the main process and each worker), each answering its own name and
# recording what reached it, one JSON line per request.
STAND_IN = """
import http.server, json, sys
name, address, port, record = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
class StandIn(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def answer(self):
        size = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(size)
        if self.path != "/health":
            with open(record, "a") as out:
                out.write(json.dumps({"name": name, "method": self.command, "target": self.path,
                                      "headers": {k.lower(): v for k, v in self.headers.items()}}) + "\\n")
        body = name.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_PUT = do_POST = do_DELETE = answer
class Server(http.server.ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True
Server((address, port), StandIn).serve_forever()
"""

# Runs in network and PID namespaces of its own (the machine's ports are untouched, everything dies with it): the
# stand-ins, Caddy on the rendered Caddyfile, then the plan's steps. Each "ask" is one curl; results go to results.json.
LIVE_DRIVER = """
import json, os, subprocess, sys, time
scratch = sys.argv[1]
spec = json.load(open(os.path.join(scratch, "plan.json")))
record = os.path.join(scratch, "requests.log")
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
procs = {}
def start(name):
    address, port = spec["upstreams"][name]
    procs[name] = subprocess.Popen([sys.executable, os.path.join(scratch, "standin.py"), name, address, str(port), record])
def stop(name):
    procs.pop(name).kill()
def ask(step):
    argv = ["curl", "-sk", "--max-time", "10", "-o", "-", "-w", "\\\\n%{http_code}", "-X", step.get("method", "GET"),
            "--resolve", "matrix.example.test:%d:127.0.0.1" % step["port"], "--path-as-is"]
    if step.get("source"):
        argv += ["--interface", step["source"]]
    for header in step.get("headers", []):
        argv += ["-H", header]
    proc = subprocess.run(argv + ["https://matrix.example.test:%d%s" % (step["port"], step["path"])],
                          capture_output=True, text=True)
    body, _, status = proc.stdout.rpartition("\\n")
    return {"tag": step.get("tag"), "status": int(status or 0), "body": body}
def mark(text):
    with open(record, "a") as out:
        out.write(json.dumps({"mark": text}) + "\\n")
for name in spec["upstreams"]:
    start(name)
with open(os.path.join(scratch, "caddy.log"), "w") as log:
    caddy = subprocess.Popen(["caddy", "run", "--adapter", "caddyfile", "--config", os.path.join(scratch, "Caddyfile")],
                             stdout=log, stderr=log, env=dict(os.environ, XDG_CONFIG_HOME=scratch, XDG_DATA_HOME=scratch))
results = []
for _ in range(100):
    if ask({"port": 443, "path": "/health"})["status"] == 200:
        break
    time.sleep(0.1)
time.sleep(1.5)  # the first active health checks
for step in spec["steps"]:
    if "stop" in step:
        mark("stop " + step["stop"])
        stop(step["stop"])
    elif "start" in step:
        mark("start " + step["start"])
        start(step["start"])
    elif "sleep" in step:
        time.sleep(step["sleep"])
    elif "until" in step:
        begin = time.time()
        while True:
            got = ask(step)
            if got["body"] in step["until"] or time.time() - begin > step["timeout"]:
                break
            time.sleep(0.2)
        got["seconds"] = time.time() - begin
        results.append(got)
    else:
        results.append(ask(step))
json.dump(results, open(os.path.join(scratch, "results.json"), "w"))
caddy.terminate()
caddy.wait()
"""

SYNC = "/_matrix/client/v3/sync?timeout=0"
# (tag, listener, method, normalised path, path as sent): one request of each kind, while every worker is up.
LIVE_CLASSES = [
    ("sync", "client", "GET", "/_matrix/client/v3/sync", SYNC),
    ("send", "client", "PUT", "/_matrix/client/v3/rooms/!a:example.test/send/m.room.message/t1",
     "/_matrix/client/v3/rooms/!a:example.test/send/m.room.message/t1"),
    ("messages", "client", "GET", "/_matrix/client/v3/rooms/!a:example.test/messages",
     "/_matrix/client/v3/rooms/%21a%3Aexample.test/messages?dir=b"),
    ("versions", "client", "GET", "/_matrix/client/versions", "/_matrix/client/versions"),
    ("profile", "client", "GET", "/_matrix/client/v3/profile/@a:example.test", "/_matrix/client/v3/profile/@a:example.test"),
    ("fed_send", "federation", "PUT", "/_matrix/federation/v1/send/txn1", "/_matrix/federation/v1/send/txn1"),
    ("fed_version", "federation", "GET", "/_matrix/federation/v1/version", "/_matrix/federation/v1/version"),
]
ROOMS = [f"!room{n}:example.test" for n in range(16)]
SOURCES = [f"127.0.1.{n}" for n in range(1, 17)]


def _live_steps():
    """The plan: every class once, then stickiness by user, room and source, then each pool down and back."""
    steps = []
    for tag, listener, method, _path, sent in LIVE_CLASSES:
        steps.append({"tag": tag, "method": method, "path": sent, "port": 443 if listener == "client" else 8448,
                      "headers": ["Authorization: Bearer class-token", "X-Forwarded-For: 192.0.2.66"]})
    sync = {"path": SYNC, "port": 443}
    steps += [dict(sync, tag="same_user", headers=["Authorization: Bearer token-a"]) for _n in range(8)]
    steps += [dict(sync, tag="users", headers=[f"Authorization: Bearer token-{n}"]) for n in range(16)]
    messages = "/_matrix/client/v3/rooms/{}/messages"
    steps += [{"tag": "same_room", "path": messages.format("!same:example.test"), "port": 443,
               "headers": [f"Authorization: Bearer token-{n}"]} for n in range(8)]
    steps += [{"tag": "same_room_sends", "method": "PUT", "port": 443,
               "path": f"/_matrix/client/v3/rooms/!same:example.test/send/m.room.message/t{n}"} for n in range(8)]
    # A client's own room header is overwritten: the room of the path decides.
    steps += [{"tag": "rooms", "path": messages.format(room), "port": 443, "headers": [f"{ROOM_HEADER}: forced"]}
              for room in ROOMS]
    fed_send = {"method": "PUT", "path": "/_matrix/federation/v1/send/txn2", "port": 8448}
    steps += [dict(fed_send, tag="same_source", source="127.0.0.9") for _n in range(8)]
    steps += [dict(fed_send, tag="sources", source=source) for source in SOURCES]
    steps.append({"tag": "raw_mismatch", "path": "/_matrix/client/v3/%73ync", "port": 443})
    # Every worker of a pool down: the main process answers, at once (refused connections) and once the health
    # checks have marked them down; a worker back: the pool answers again.
    steps += [{"stop": "sync1"}, {"stop": "sync2"}, {"stop": "fedin1"}, {"stop": "fedin2"}]
    steps += [dict(sync, tag="sync_down_refused"), dict(fed_send, tag="fed_send_down_refused")]
    steps.append({"sleep": 2.5})
    steps += [dict(sync, tag="sync_down_checked"), dict(fed_send, tag="fed_send_down_checked")]
    steps += [{"start": "sync2"}, {"start": "fedin1"}]
    steps += [dict(sync, tag="sync_back", until=["sync2"], timeout=30), dict(fed_send, tag="fed_send_back", until=["fedin1"], timeout=30)]
    return steps


@pytest.fixture(scope="module")
def live(rendered, tmp_path_factory):
    """The live plan's results and the stand-ins' records, from one run of Caddy on the workers_live variant."""
    if not all(shutil.which(tool) for tool in ("caddy", "openssl", "curl", "unshare", "ip")):
        pytest.skip("needs caddy, openssl, curl, unshare and ip")
    if subprocess.run(["unshare", "--net", "--pid", "--fork", "true"], capture_output=True, check=False).returncode:
        pytest.skip("unshare --net --pid is not permitted here")
    variant = rendered["workers_live"]
    scratch = tmp_path_factory.mktemp("caddy-live-workers")
    text = _live_caddyfile(variant["caddyfile"], scratch)
    (scratch / "Caddyfile").write_text(text.replace("admin localhost:2019", "admin 127.0.0.1:2019"))
    (scratch / "standin.py").write_text(STAND_IN)
    (scratch / "driver.py").write_text(LIVE_DRIVER)
    upstreams = {server["name"]: [server["address"], server["port"]]
                 for pool in variant["routes"]["upstreams"] for server in pool["servers"]}
    (scratch / "plan.json").write_text(json.dumps({"upstreams": upstreams, "steps": _live_steps()}))
    proc = subprocess.run(["unshare", "--net", "--pid", "--fork", "--kill-child", sys.executable, str(scratch / "driver.py"),
                           str(scratch)], capture_output=True, text=True, timeout=240, check=False)
    daemon_checks.record(f"Caddy {daemon_checks.host_version('caddy')} (this machine): caddy run with worker stand-ins "
                         "(unshare --net --pid)")
    log = proc.stdout + proc.stderr + (scratch / "caddy.log").read_text()[-4000:]
    assert proc.returncode == 0 and (scratch / "results.json").exists(), log
    results = {}
    for result in json.loads((scratch / "results.json").read_text()):
        results.setdefault(result["tag"], []).append(result)
    records = [json.loads(line) for line in (scratch / "requests.log").read_text().splitlines()]
    return {"results": results, "records": records, "table": variant["routes"], "log": log}


def _servers_of(table, listener, path):
    """The names of the upstreams that may answer a path: its worker pool's, or the main process's."""
    route = routes_to(table, listener, path)
    pool = next(p for p in table["upstreams"] if p["name"] == route["upstream"])
    return {server["name"] for server in pool["servers"]}


@pytest.mark.parametrize("tag,listener,method,path,sent", LIVE_CLASSES, ids=[c[0] for c in LIVE_CLASSES])
def test_live_each_class_reaches_its_pool(live, tag, listener, method, path, sent):
    """MX16, MX04, MX05: a request of each class is answered by a worker of its pool (the rest by the main process),
    with the URI as sent, X-Forwarded-For overwritten, a request ID, and no room header of the proxy's."""
    (result,) = live["results"][tag]
    assert result["status"] == 200 and result["body"] in _servers_of(live["table"], listener, path), (result, live["log"])
    (record,) = [r for r in live["records"] if r.get("name") == result["body"] and r.get("target") == sent
                 and r["method"] == method and r["headers"].get("authorization") == "Bearer class-token"]
    assert record["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert len(record["headers"]["x-request-id"]) == 36
    assert ROOM_HEADER.lower() not in record["headers"]


def test_live_the_classes_cover_workers_and_main(live):
    answered = {result["body"] for tag, *_rest in LIVE_CLASSES for result in live["results"][tag]}
    assert "main" in answered and len(answered - {"main"}) >= 4, answered


@pytest.mark.parametrize("same,spread,pool", [
    ("same_user", "users", {"sync1", "sync2"}),
    ("same_room", "rooms", {"reader1", "reader2"}),
    ("same_source", "sources", {"fedin1", "fedin2"}),
])
def test_live_sticky_keys_pin_one_worker_and_spread_the_rest(live, same, spread, pool):
    """MX16: one access token, one room (whatever room header the client sent), one source address: one worker;
    different ones: both workers of the pool."""
    pinned = {result["body"] for result in live["results"][same]}
    assert len(pinned) == 1 and pinned <= pool, live["results"][same]
    assert {result["body"] for result in live["results"][spread]} == pool, live["results"][spread]


def test_live_events_of_one_room_go_to_one_creator(live):
    assert len({result["body"] for result in live["results"]["same_room_sends"]}) == 1
    assert {result["body"] for result in live["results"]["same_room_sends"]} <= {"creator1", "creator2"}


def test_live_raw_uri_outside_the_worker_route_is_refused(live):
    """MX04, MX11: a URI that only normalises to /sync is not forwarded: the table's 404 Matrix error."""
    (result,) = live["results"]["raw_mismatch"]
    assert result["status"] == 404 and json.loads(result["body"])["errcode"] == "M_UNRECOGNIZED"


@pytest.mark.parametrize("tag,answer", [
    ("sync_down_refused", "main"),
    ("fed_send_down_refused", "main"),
    ("sync_down_checked", "main"),
    ("fed_send_down_checked", "main"),
    ("sync_back", "sync2"),
    ("fed_send_back", "fedin1"),
])
def test_live_a_pool_down_falls_back_to_the_main_process_and_back(live, tag, answer):
    """MX16: with every worker of the pool stopped, the main process answers (a PUT too: no worker saw it); once
    one worker is back, the pool answers again."""
    (result,) = live["results"][tag]
    assert (result["status"], result["body"]) == (200, answer), (result, live["log"])


def test_live_main_gets_no_routed_class_while_the_pools_are_up(live):
    """MX16: until the first worker stopped, the main process received only what no worker route matches."""
    table = live["table"]
    first_stop = next(i for i, record in enumerate(live["records"]) if record.get("mark", "").startswith("stop "))
    main = [record for record in live["records"][:first_stop] if record.get("name") == "main"]
    assert main, "the main process answered nothing"
    for record in main:
        path = urllib.parse.unquote(record["target"].split("?", 1)[0])
        listener = "federation" if path.startswith("/_matrix/federation/") or path.startswith("/_matrix/key/") else "client"
        assert routes_to(table, listener, path)["upstream"] == "homeserver", record


def _live_caddyfile(text, tmp_path):
    """A rendered Caddyfile with a throw-away certificate and key, and its access log, under tmp_path."""
    cert, key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-subj", "/CN=matrix.example.test", "-days", "2", "-keyout", str(key), "-out", str(cert)],
                       capture_output=True, check=True)
    text = re.sub(r"^(\ttls )\S+ \S+ \{$", rf"\g<1>{cert} {key} {{", text, flags=re.M)
    return text.replace("/var/log/caddy/", f"{tmp_path}/")


# Behaviours every Caddyfile implements whatever the table holds: forwarded headers (MX05), limits and
# timeouts (MX08), TLS/HTTP2/IPv6 (MX09), the checker before going live (MX10), Matrix errors (MX11).
ALWAYS = {"MX05", "MX08", "MX09", "MX10", "MX11"}


def _cited(text):
    return set(re.findall(r"\bMX\d\d\b", "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))))


@pytest.mark.parametrize("name", VARIANTS)
def test_rendered_configuration_cites_every_behaviour_it_implements(rendered, name):
    """Each behaviour of the contract this Caddyfile implements is named in a comment (docs/contract.md IDs)."""
    table = rendered[name]["routes"]
    expected = set(ALWAYS)
    for vhost in table["vhosts"]:
        for route in vhost["routes"]:
            expected |= set(route["behaviours"])
        if "redirect" in vhost["fallback"]:
            expected.add("MX12")
    cited = _cited(rendered[name]["caddyfile"])
    assert expected <= cited, f"missing behaviour comments: {sorted(expected - cited)}"
    assert cited <= set(BEHAVIOURS), f"unknown behaviour IDs: {sorted(cited - set(BEHAVIOURS))}"


def test_the_variants_together_cite_every_behaviour_of_the_contract(rendered):
    """Caddy implements all of MX01-MX14: across the variable sets, every ID is cited."""
    cited = set().union(*(_cited(rendered[name]["caddyfile"]) for name in VARIANTS))
    assert cited == set(BEHAVIOURS), sorted(set(BEHAVIOURS) ^ cited)


def test_no_matrix_path_is_hard_coded_in_the_role():
    """Routing comes from the route table: templates, vars and tasks name no Matrix path."""
    for path in sorted((ROLE / "templates").glob("*")) + sorted((ROLE / "vars").glob("*")) + sorted((ROLE / "tasks").glob("*")):
        found = re.findall(r"/_matrix|/_synapse|/_palpo|/health|/\.well-known/matrix|acme-challenge", path.read_text())
        assert not found, (path.name, found)


@pytest.mark.skipif(not shutil.which("caddy"), reason="needs the caddy binary")
@pytest.mark.parametrize("name", VARIANTS)
def test_caddy_adapts_it_without_acme_and_keeps_the_bytes(rendered, name):
    path = rendered[name]["path"]
    fmt = subprocess.run(["caddy", "fmt", str(path)], capture_output=True, text=True, check=False)
    assert fmt.returncode == 0 and fmt.stdout == path.read_text(), "not in caddy fmt's layout"
    proc = subprocess.run(["caddy", "adapt", "--adapter", "caddyfile", "--config", str(path)],
                          capture_output=True, text=True, check=False)
    daemon_checks.record(f"Caddy {daemon_checks.host_version('caddy')} (this machine): caddy fmt + caddy adapt")
    assert proc.returncode == 0, proc.stderr
    assert '"level":"warn"' not in proc.stderr, proc.stderr
    config = json.loads(proc.stdout)
    tls = config["apps"]["tls"]
    assert "automation" not in tls and "issuers" not in proc.stdout
    # the HTTP-01 challenge path may be matched (a path matcher or an expression), nothing else ACME
    assert "acme" not in proc.stdout.replace("acme-challenge", "")
    for server in config["apps"]["http"]["servers"].values():
        if server.get("tls_connection_policies"):
            assert server["automatic_https"] == {"disable": True}
    bodies = re.findall(r'"body":("(?:[^"\\]|\\.)*")', proc.stdout)
    served = {re.sub(r"\\([{}])", r"\1", json.loads(body)) for body in bodies}
    if rendered[name]["placement"] != "none":
        assert {rendered[name]["server_body"], rendered[name]["client_body"]} <= served


def _plain_http_sites(text):
    return {head: body for head, body in _blocks(text).items() if head.startswith("http://:")}


@pytest.mark.parametrize("name", [n for n in VARIANTS if VARIANTS[n].get("matrix_tls_source") != "acme"])
def test_no_port_80_site_without_acme(rendered, name):
    assert not _plain_http_sites(rendered[name]["caddyfile"])


def test_acme_port_80_forwards_the_challenge_and_redirects_the_rest(rendered):
    (head, body), = _plain_http_sites(rendered["acme_delegated_not_on_443"]["caddyfile"]).items()
    assert head == "http://:80"
    assert "bind tcp4/0.0.0.0 tcp6/[::]" in body
    (challenge,) = [h for h in _handles(body) if h[0] == "mxedge_matrix_acme_challenge"]
    assert challenge[1].strip() == "path /.well-known/acme-challenge /.well-known/acme-challenge/*"
    assert challenge[2].rstrip().endswith("import mxedge_matrix_upstream_acme")
    # reverse_proxy keeps the Host header as sent.
    upstream = _blocks(rendered["acme_delegated_not_on_443"]["caddyfile"])["(mxedge_matrix_upstream_acme)"]
    assert upstream.strip().startswith("reverse_proxy 127.0.0.1:8999 {") and "health_uri" not in upstream
    rest = re.search(r"\thandle \{(.*?)\n\t\}", body.split("# MX12 fallback", 1)[1], re.S).group(1)
    assert rest.strip() == "redir https://{host}:8443{uri} 301"


@pytest.mark.skipif(not shutil.which("caddy"), reason="needs the caddy binary")
def test_caddy_adapts_the_acme_site_to_a_challenge_proxy_and_a_redirect(rendered):
    proc = subprocess.run(["caddy", "adapt", "--adapter", "caddyfile", "--config", str(rendered["acme_delegated_not_on_443"]["path"])],
                          capture_output=True, text=True, check=True)
    daemon_checks.record(f"Caddy {daemon_checks.host_version('caddy')} (this machine): caddy adapt")
    servers = json.loads(proc.stdout)["apps"]["http"]["servers"]
    (plain,) = [server for server in servers.values() if any(addr.endswith(":80") for addr in server["listen"])]
    assert sorted(plain["listen"]) == ["tcp4/0.0.0.0:80", "tcp6/[::]:80"]
    text = json.dumps(plain)
    assert '"dial": "127.0.0.1:8999"' in text
    assert '"Location": ["https://{http.request.host}:8443{http.request.uri}"]' in text
    assert "tls_connection_policies" not in plain


# matrix_proxy_mode=alongside (docs/caddy.md, "Alongside the operator's Caddy"): the role's sites go into
# /etc/caddy/mxedge-matrix/sites.caddy (the same template, without global options), the well-known documents
# into /etc/caddy/mxedge-matrix/well-known.caddy, which the operator's site for the server name's host imports.
# mx_operator_listeners stands for what preflight reads from the operator's Caddy with caddy adapt.
ALONGSIDE = {
    # The molecule hs1 layout: single port 443, the operator's example.test site includes the snippet,
    # extra well-known routes of the operator's (a static document and a refusal).
    "alongside_snippet": {
        **OPERATOR_SITE_VARIABLES,
        "mx_ipv6": True,
    },
    # MX16 alongside: the hs1 layout with Synapse workers; their routes go into the role's sites only.
    "alongside_workers": {
        **OPERATOR_SITE_VARIABLES,
        "matrix_worker_hosts": {"hs1": "10.0.0.1", "hs2": "10.0.0.2"},
        "matrix_workers": "{{ 'readers' | mxedge.matrix.synapse_worker_layout(['hs1', 'hs2']) }}",
        "mx_ipv6": True,
    },
    # The role's own well-known site; the client site on 8443, where the operator's Caddy listens on IPv4 only.
    "alongside_own_bound": {
        "matrix_server_name": "own.test",
        "matrix_homeserver_fqdn": "matrix.own.test",
        "matrix_client_port": 8443,
        "mx_ipv6": True,
    },
}

# What the alongside variants' preflight reads with `caddy adapt` (a stand-in `caddy` first on PATH adapts this
# instead of the machine's /etc/caddy/Caddyfile): the operator's base-domain site, and a site bound to IPv4 on 8443.
OPERATOR_LIVE = """{
\tadmin localhost:2019
}

example.test {
\ttls /c.pem /k.pem
\trespond "x"
}

other.test:8443 {
\tbind tcp4/0.0.0.0
\ttls {out}/operator-fullchain.pem {out}/operator-privkey.pem
\trespond "y"
}
"""
# A certificate chain as PEM (the preflight compares the chains' text, Caddy does not load it here).
CHAIN = "-----BEGIN CERTIFICATE-----\nTUlJQmVYYW1wbGU=\n-----END CERTIFICATE-----\n" * 2

PLAYBOOK_ALONGSIDE = """
- name: Render the caddy role's alongside files for one variable set per host
  hosts: all
  connection: local
  gather_facts: false
  tasks:
    - name: Load the caddy role (defaults, vars, the matrix dependency) and run its preflight
      ansible.builtin.include_role:
        name: mxedge.matrix.caddy
        tasks_from: preflight
        public: true
    - name: Pretend the host's IPv6 of this variant
      ansible.builtin.set_fact:
        _matrix_ipv6: "{{{{ mx_ipv6 }}}}"
    - name: Write the rendered files and the derived values, in one file per variant
      ansible.builtin.copy:
        dest: "{out}/{{{{ inventory_hostname }}}}.json"
        mode: "0644"
        content: "{{{{ {{'sites': lookup('ansible.builtin.template', '{role}/templates/Caddyfile.j2'),
          'well_known': lookup('ansible.builtin.template', '{role}/templates/well-known.caddy.j2'),
          'routes': _matrix_routes, 'server_body': _matrix_well_known_server_body,
          'client_body': _matrix_well_known_client_body, 'import_line': _caddy_import_line,
          'well_known_line': _caddy_well_known_line, 'site_regexp': _caddy_site_regexp,
          'marked_regexp': _caddy_marked_regexp, 'listeners': _caddy_operator_listeners}} | to_json }}}}"
"""

# Debian 12's /etc/caddy/Caddyfile (caddy 2.6.2-5), comments left out: the stock main configuration.
DEBIAN_CADDYFILE = """:80 {
\troot * /usr/share/caddy
\tfile_server
}
"""

# An operator's Caddyfile on top of Debian's: global options of their own, the base-domain website.
OPERATOR_SITES = """
example.test, www.example.test {
\ttls /etc/caddy/certs/fullchain.pem /etc/caddy/certs/privkey.pem
\theader X-Operator-Site example.test
\trespond "<h1>example.test</h1>" 200
}
"""
OPERATOR_GLOBALS = """{
\tgrace_period 45s
\tservers {
\t\ttimeouts {
\t\t\tidle 4m
\t\t}
\t}
}
"""


@pytest.fixture(scope="module")
def alongside(tmp_path_factory):
    """The alongside variants, their preflight reading OPERATOR_LIVE as the operator's Caddy (a stand-in `caddy`)."""
    caddy = shutil.which("caddy")
    if not caddy or not os.path.exists("/etc/caddy/Caddyfile") or caddy != "/usr/bin/caddy":
        pytest.skip("needs Debian's caddy (/usr/bin/caddy, /etc/caddy/Caddyfile): the alongside preflight reads the operator's")
    out = tmp_path_factory.mktemp("caddy-alongside")
    (out / "bin").mkdir()
    (out / "operator.Caddyfile").write_text(OPERATOR_LIVE.replace("{out}", str(out)))
    # alongside_own_bound: the operator's Caddy already loads the Matrix certificate (same chain, another file).
    (out / "operator-fullchain.pem").write_text("# the operator's copy\n" + CHAIN)
    (out / "matrix-fullchain.pem").write_text(CHAIN)
    variants = {name: {**BASE, "matrix_proxy_mode": "alongside", **v} for name, v in ALONGSIDE.items()}
    variants["alongside_own_bound"]["matrix_tls_certificate"] = str(out / "matrix-fullchain.pem")
    stand_in = out / "bin" / "caddy"
    stand_in.write_text(f"#!/bin/sh\nexec {caddy} adapt --adapter caddyfile --config {out / 'operator.Caddyfile'}\n")
    stand_in.chmod(0o755)
    path = os.environ["PATH"]
    os.environ["PATH"] = f"{out / 'bin'}:{path}"
    try:
        result = render(out, PLAYBOOK_ALONGSIDE.format(role=ROLE, out=out), variants)
        result["out"] = out
        return result
    finally:
        os.environ["PATH"] = path


@pytest.mark.parametrize("name", list(ALONGSIDE))
def test_alongside_sites_leave_the_global_options_to_the_operator(alongside, name):
    text = alongside[name]["sites"]
    blocks = _blocks(text)
    assert "" not in blocks, "a global options block"
    assert not re.search(r"^\s*(admin|auto_https|grace_period|servers|order|email|http_port|https_port)\b", text, re.M)
    assert not re.search(r"^\t(protocols|timeouts)\b", text, re.M)
    assert "bind tcp4/0.0.0.0 tcp6/[::]" not in text  # the dedicated mode's own listeners
    for vhost in alongside[name]["routes"]["vhosts"]:
        if vhost["snippet"]:
            continue
        site = _site_of(text, vhost)
        assert "\tvars mxedge_matrix /etc/caddy/mxedge-matrix/sites.caddy\n" in site, vhost["name"]


def test_alongside_preflight_reads_the_operators_sites(alongside):
    found = {(item["port"], tuple(item["names"]), item["bind"]) for item in alongside["alongside_own_bound"]["listeners"]}
    assert found == {(443, ("example.test",), ""), (8443, ("other.test",), "tcp4/0.0.0.0"),
                     (80, ("example.test",), ""), (80, ("other.test",), "")}


def test_alongside_sites_join_the_operators_listeners(alongside):
    blocks = _blocks(alongside["alongside_own_bound"]["sites"])
    assert "\tbind tcp4/0.0.0.0\n" in blocks["https://matrix.own.test:8443"]
    for head in ("https://:8448", "https://own.test:443"):
        assert "bind" not in blocks[head], head  # Caddy's default, every address, as the operator's sites on 443


def test_alongside_well_known_is_a_snippet_not_a_site(alongside):
    variant = alongside["alongside_snippet"]
    (snippet,) = [vhost for vhost in variant["routes"]["vhosts"] if vhost["snippet"]]
    assert (snippet["name"], snippet["hosts"], snippet["port"]) == ("well_known", ["example.test"], 443)
    assert "https://example.test:443" not in _blocks(variant["sites"])
    text = variant["well_known"]
    blocks = _blocks(text)
    # One matcher and one handle per route of the vhost, in order; no fallback (the operator's site answers the rest).
    heads = [head for head in blocks if head.startswith("handle @")]
    assert heads == ["handle @mxedge_matrix_" + re.sub(r"[^A-Za-z0-9]", "_", route["id"]) for route in snippet["routes"]]
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert not re.search(r"^handle \{", code, re.M) and not re.search(r"^\s*(error|handle_errors)\b", code, re.M)
    bodies = {kind: _unescape(raw) for kind, raw in re.findall(
        r"^handle @mxedge_matrix_well_known_(\w+) \{\n.*?\n\trespond `([^`]*)` 200\n", text, re.S | re.M)}
    assert bodies == {"server": variant["server_body"], "client": variant["client_body"]}
    assert "respond `\\{\"contacts\":[]\\}` 200" in blocks["handle @mxedge_matrix_support"]
    refused = blocks["handle @mxedge_matrix_no_policy"]
    error = variant["routes"]["errors"]["403"]
    assert f"respond `{_escape(error['body'])}` 403" in refused and "header Content-Type application/json" in refused
    # MX04 the raw URI: a mismatch is answered with the table's 404 right there.
    handle = blocks["handle @mxedge_matrix_well_known_server"]
    assert re.search(r'@mxedge_matrix_well_known_server_raw_mismatch expression `!\{http\.request\.uri\}\.matches', handle)
    assert f"respond `{_escape(variant['routes']['errors']['404']['body'])}` 404" in handle
    assert variant["well_known_line"] == ("\timport /etc/caddy/mxedge-matrix/well-known.caddy # mxedge.matrix: "
                                          "the Matrix well-known documents (tasks_from=remove takes this line out)")


def test_alongside_worker_routes_are_in_the_matrix_sites_only(alongside):
    """MX15, MX16: the worker routes and their fallback are in the role's sites file; the operator's website gets only
    the well-known snippet, which has neither."""
    variant = alongside["alongside_workers"]
    blocks = _blocks(variant["sites"])
    client = next(vhost for vhost in variant["routes"]["vhosts"] if vhost["name"] == "client")
    workers = [route["id"] for route in client["routes"] if route["id"].startswith("workers-")]
    assert len(workers) >= 5
    site = _site_of(variant["sites"], client)
    assert site.lstrip().startswith("import mxedge_matrix_site_workers")
    handles = [matcher for matcher, _match, _handle in _handles(site)]
    for route_id in workers:
        assert "mxedge_matrix_" + re.sub(r"[^A-Za-z0-9]", "_", route_id) in handles
    assert "(mxedge_matrix_errors_workers)" in blocks
    assert not re.search(r"^\s*(path_regexp|import mxedge_matrix_upstream|vars mxedge_matrix_fallback)", variant["well_known"], re.M)


def test_alongside_loads_the_operators_file_of_the_same_certificate(alongside):
    """Caddy 2.6 caches a certificate once: the Matrix sites load the operator's file of the same chain, else copies."""
    out = alongside["out"]
    tls = _blocks(alongside["alongside_own_bound"]["sites"])["(mxedge_matrix_tls)"]
    assert f"tls {out}/operator-fullchain.pem {out}/operator-privkey.pem {{" in tls
    tls = _blocks(alongside["alongside_snippet"]["sites"])["(mxedge_matrix_tls)"]
    assert "tls /etc/caddy/mxedge-matrix/tls/fullchain.pem /etc/caddy/mxedge-matrix/tls/privkey.pem {" in tls


def test_alongside_without_snippet_the_well_known_file_is_empty(alongside):
    text = alongside["alongside_own_bound"]["well_known"]
    assert all(line.startswith("#") for line in text.splitlines() if line.strip())


SITE_LINES = {
    "example.test {": True,
    "\texample.test {": True,
    "https://example.test {": True,
    "example.test:443 {": True,
    "https://example.test:443, www.example.test {": True,
    "www.example.test, example.test {": True,
    "www.example.test example.test:443 {": True,
    "www.example.test {": False,
    "http://example.test {": False,
    "example.test:8443 {": False,
    "example.test.org {": False,
    "# example.test {": False,
    "example.test": False,
}


@pytest.mark.parametrize("line,found", SITE_LINES.items(), ids=list(SITE_LINES))
def test_the_operators_site_line_for_the_snippet(alongside, line, found):
    assert bool(re.match(alongside["alongside_snippet"]["site_regexp"], line)) == found


def test_the_role_marks_every_line_it_adds(alongside):
    variant = alongside["alongside_snippet"]
    for line in (variant["import_line"], variant["well_known_line"]):
        assert re.match(variant["marked_regexp"], line), line
    assert not re.match(variant["marked_regexp"], "import /etc/caddy/mxedge-matrix/sites.caddy")
    assert not re.match(variant["marked_regexp"], "#\timport /etc/caddy/mxedge-matrix/well-known.caddy # mxedge.matrix")


def _tree(tmp_path, variant, with_snippet):
    """/etc/caddy as the role leaves it alongside Debian's stock Caddyfile and an operator's site, under tmp_path."""
    etc = tmp_path / "etc-caddy"
    (etc / "mxedge-matrix").mkdir(parents=True)
    (etc / "certs").mkdir()
    site = OPERATOR_SITES
    if with_snippet:
        site = site.replace("{\n", "{\n" + variant["well_known_line"] + "\n", 1)
    caddyfile = OPERATOR_GLOBALS + "\n" + DEBIAN_CADDYFILE + site + variant["import_line"] + "\n"
    files = {etc / "Caddyfile": caddyfile, etc / "mxedge-matrix" / "sites.caddy": variant["sites"],
             etc / "mxedge-matrix" / "well-known.caddy": variant["well_known"]}
    for path, text in files.items():
        path.write_text(text.replace("/etc/caddy/", f"{etc}/"))
    return etc


@pytest.mark.skipif(not shutil.which("caddy"), reason="needs the caddy binary")
@pytest.mark.parametrize("name,with_snippet", [("alongside_snippet", True), ("alongside_own_bound", False),
                                               ("alongside_workers", True)])
def test_caddy_adapts_the_operators_caddyfile_with_the_role_files(alongside, tmp_path, name, with_snippet):
    """Debian's stock Caddyfile, an operator's site and global options, the role's import line and files: Caddy adapts
    it, the operator's settings and sites stay, the role's sites are marked, and the snippet answers in the operator's site."""
    from ansible_collections.mxedge.matrix.plugins.module_utils.caddy_config import listeners
    variant = alongside[name]
    etc = _tree(tmp_path, variant, with_snippet)
    proc = subprocess.run(["caddy", "adapt", "--adapter", "caddyfile", "--config", str(etc / "Caddyfile")],
                          capture_output=True, text=True, check=False)
    daemon_checks.record(f"Caddy {daemon_checks.host_version('caddy')} (this machine): caddy adapt (alongside)")
    assert proc.returncode == 0, proc.stderr
    assert '"level":"warn"' not in proc.stderr, proc.stderr
    config = json.loads(proc.stdout)
    http = config["apps"]["http"]
    assert http["grace_period"] == 45 * 10**9 and "automation" not in config["apps"].get("tls", {})
    assert all(server.get("idle_timeout") == 240 * 10**9 for server in http["servers"].values())
    own = [str(etc / "mxedge-matrix")]
    operator = {(item["port"], tuple(item["names"])) for item in listeners(proc.stdout, own)}
    assert operator == {(80, ("*",)), (443, ("example.test", "www.example.test")),
                        (80, ("example.test", "www.example.test"))}
    every = {(item["port"], tuple(item["names"])) for item in listeners(proc.stdout, [])}
    client = variant["routes"]["vhosts"][0]
    assert (client["port"], tuple(client["hosts"])) in every
    # One server per port: the role's sites joined the operator's servers.
    ports = [item for server in http["servers"].values() for item in server["listen"]]
    assert len(ports) == len(set(ports))
    (site,) = [route for route in http["servers"][next(n for n, s in http["servers"].items() if ":443" in s["listen"])]["routes"]
               if route.get("match") == [{"host": ["example.test", "www.example.test"]}]]
    text = json.dumps(site)
    served = {re.sub(r"\\([{}])", r"\1", json.loads(body)) for body in re.findall(r'"body": ("(?:[^"\\]|\\.)*")', text)}
    assert ({variant["server_body"], variant["client_body"]} <= served) == with_snippet
    assert "<h1>example.test</h1>" in served


@pytest.mark.skipif(not shutil.which("caddy") or not shutil.which("openssl"), reason="needs caddy and openssl")
def test_caddy_validates_the_alongside_tree(alongside, tmp_path):
    """caddy validate (provisions every module, loads the certificates) of the whole tree, the snippet included."""
    variant = alongside["alongside_snippet"]
    etc = _tree(tmp_path, variant, True)
    cert, key = etc / "certs" / "fullchain.pem", etc / "certs" / "privkey.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-subj", "/CN=example.test", "-days", "2", "-keyout", str(key), "-out", str(cert)],
                   capture_output=True, check=True)
    (etc / "mxedge-matrix" / "tls").mkdir()
    for path in ("/etc/ssl/mxedge-test/fullchain.pem", "/etc/ssl/mxedge-test/privkey.pem"):
        assert path not in variant["sites"]  # matrix_tls_source=files: the role's copies, in its own directory
    (etc / "mxedge-matrix" / "tls" / "fullchain.pem").write_bytes(cert.read_bytes())
    (etc / "mxedge-matrix" / "tls" / "privkey.pem").write_bytes(key.read_bytes())
    proc = subprocess.run(["caddy", "validate", "--adapter", "caddyfile", "--config", str(etc / "Caddyfile")],
                          capture_output=True, text=True, check=False)
    daemon_checks.record(f"Caddy {daemon_checks.host_version('caddy')} (this machine): caddy validate (alongside)")
    assert proc.returncode == 0, proc.stderr
