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

import daemon_checks
import pytest
from ansible_collections.mxedge.matrix.plugins.module_utils.matrix_routes import (
    BEHAVIOURS, MAS_COMPAT_ENDPOINTS, MAS_COMPAT_VERSIONS)
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
            path = route["match"]["path"]
            # A prefix ending in "/" ("/", a whole host) is itself and everything below it.
            expected = f"path {path} {path.rstrip('/')}/*" if route["match"]["kind"] == "prefix" else f"path {path}"
            assert match.strip() == expected, matcher
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
@pytest.mark.parametrize("name,with_snippet", [("alongside_snippet", True), ("alongside_own_bound", False)])
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
