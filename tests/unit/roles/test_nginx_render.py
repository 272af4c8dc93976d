"""Render tests for roles/nginx: its templates, rendered by Ansible for several variable sets.

One ansible-playbook run (localhost, connection local, no nginx needed) derives the shared
facts with the real mxedge.matrix.matrix role for each variable set and renders the nginx
role's templates into a temporary directory, with the role's own defaults and vars. The
tests then read the rendered text. Each rendered tree is also checked with `nginx -t`, the
role's own gate, by an nginx of the version it was rendered for: this machine's (as root) or
Debian 13's in a container (daemon_checks.py).
"""

import http.client
import http.server
import json
import pathlib
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time

import daemon_checks
import pytest
from render import OPERATOR_WELL_KNOWN_ROUTES, SERVICE_VARIABLES, render

ROOT = pathlib.Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles" / "nginx"

BASE = {
    "matrix_tls_certificate": "/etc/ssl/mxedge-test/fullchain.pem",
    "matrix_tls_certificate_key": "/etc/ssl/mxedge-test/privkey.pem",
    # The role owns nginx.conf; the alongside variants below set their mode themselves.
    "matrix_proxy_mode": "dedicated",
}

# The operator's routes on the delegation host (the table renders them like its own).
OPERATOR_ROUTES = OPERATOR_WELL_KNOWN_ROUTES + [
    {"vhost": "client", "id": "no-metrics", "kind": "prefix", "path": "/_synapse/metrics",
     "action": "refuse", "status": 403},
]

# name -> (variables, nginx version to pretend, OpenSSL version to pretend)
VARIANTS = {
    "delegated": (
        {
            "matrix_server_name": "example.test",
            "matrix_homeserver_fqdn": "matrix.example.test",
            "matrix_admin_allowed_networks": ["10.0.0.0/8", "2001:db8::/32"],
            # The operator's own routes (the table renders them like its own).
            "matrix_extra_routes": [
                {"vhost": "well_known", "id": "support", "kind": "exact", "path": "/.well-known/matrix/support",
                 "action": "static", "body": '{"contacts":[]}'},
                {"vhost": "client", "id": "no-metrics", "kind": "prefix", "path": "/_synapse/metrics",
                 "action": "refuse", "status": 403},
            ],
            "mx_ipv6": True,
        },
        "1.22.1",
        "3.0.17",
    ),
    "single_port_socket_palpo": (
        {
            "matrix_server_name": "matrix.example.test",
            "matrix_federation_port": 443,
            "matrix_homeserver_socket": "/run/palpo/palpo.sock",
            "matrix_homeserver_flavour": "palpo",
            "mx_ipv6": False,
        },
        "1.26.3",
        "3.5.1",
    ),
    "same_host_not_on_443": (
        {
            "matrix_server_name": "matrix.example.test",
            "matrix_client_port": 8443,
            "matrix_homeserver_address": "[::1]",
            "mx_ipv6": False,
            "nginx_well_known_vhost_extra": "add_header X-Well-Known yes;",
        },
        "1.22.1",
        "3.0.17",
    ),
    "acme_delegated_not_on_443": (
        {
            "matrix_server_name": "example.test",
            "matrix_homeserver_fqdn": "matrix.example.test",
            "matrix_client_port": 8443,
            "matrix_tls_source": "acme",
            "matrix_acme_challenge_port": 8999,
            "mx_ipv6": True,
        },
        "1.22.1",
        "3.0.17",
    ),
    "self_signed": (
        {
            "matrix_server_name": "example.test",
            "matrix_homeserver_fqdn": "matrix.example.test",
            "matrix_federation_port": 443,
            "matrix_tls_source": "self_signed",
            "mx_ipv6": False,
        },
        "1.22.1",
        "3.0.17",
    ),
    "extras_no_well_known": (
        {
            "matrix_server_name": "example.test",
            "matrix_homeserver_fqdn": "matrix.example.test",
            "matrix_well_known_serve": False,
            "matrix_client_port": 80,
            "matrix_request_id_header": "X-Correlation-ID",
            "mx_ipv6": False,
            "nginx_http_extra": "limit_req_zone $binary_remote_addr zone=mx:10m rate=10r/s;",
            "nginx_client_vhost_extra": "limit_req zone=mx burst=20;\nadd_header X-Client yes;",
            "nginx_federation_vhost_extra": "add_header X-Federation yes;",
        },
        "1.22.1",
        "3.0.17",
    ),
    # MAS and MatrixRTC (MX13, MX14). nginx resolves an upstream's DNS name when it loads its
    # configuration, nginx -t included (and in a container without network): the JWT service
    # is reached by "localhost" (/etc/hosts), the others by address.
    "services": (
        dict(SERVICE_VARIABLES, matrix_rtc_jwt_upstream="http://localhost:8081", mx_ipv6=True),
        "1.22.1",
        "3.0.17",
    ),
    # matrix_proxy_mode=alongside: the operator's nginx.conf (Debian's) includes the role's
    # conf.d/mxedge-matrix.conf; the role's own server block for the delegation host.
    "alongside_own_well_known": (
        {
            "matrix_proxy_mode": "alongside",
            "matrix_server_name": "example.test",
            "matrix_homeserver_fqdn": "matrix.example.test",
            "matrix_extra_routes": OPERATOR_ROUTES,
            "mx_ipv6": True,
            "nginx_http_extra": "limit_req_zone $binary_remote_addr zone=mx:10m rate=10r/s;",
            "nginx_client_vhost_extra": "limit_req zone=mx burst=20;",
            # What preflight found: the operator's sites use port 443 (nginx -T).
            "mx_operator_ports": [80, 443],
        },
        "1.22.1",
        "3.0.17",
    ),
    # ... and the operator's website for example.test serves the well-known documents through
    # the role's snippet (matrix_well_known_site=operator), on Debian 13's nginx.
    "alongside_snippet": (
        {
            "matrix_proxy_mode": "alongside",
            "matrix_well_known_site": "operator",
            "matrix_server_name": "example.test",
            "matrix_homeserver_fqdn": "matrix.example.test",
            "matrix_federation_port": 443,
            "matrix_extra_routes": OPERATOR_ROUTES,
            "mx_ipv6": True,
        },
        "1.26.3",
        "3.5.1",
    ),
    # Synapse workers (MX16), the "readers" layout on two hosts: two sync workers (sticky by user), two federation
    # readers, inbound federation (sticky by source), a client reader that also takes the GET-only endpoints of the
    # streams without a writer (account_data, presence, push_rules); federation on a port of its own.
    "workers_readers": (
        {
            "matrix_server_name": "example.test",
            "matrix_homeserver_fqdn": "matrix.example.test",
            "matrix_worker_hosts": {"hs1": "10.0.0.1", "hs2": "10.0.0.2"},
            "matrix_workers": "{{ 'readers' | mxedge.matrix.synapse_worker_layout(['hs1', 'hs2']) }}",
            "mx_ipv6": True,
        },
        "1.22.1",
        "3.0.17",
    ),
    # ... one worker of every type (every pool one server, every stream with its writer), single port, with MAS
    # (whose login, logout and refresh routes come first: the client reader's login pattern must not take them).
    "workers_one_of_each_mas": (
        dict(SERVICE_VARIABLES, matrix_rtc_jwt_upstream="http://localhost:8081", mx_ipv6=False,
             matrix_federation_port=443, matrix_worker_hosts={"hs1": "10.0.0.1", "hs2": "10.0.0.2"},
             matrix_workers="{{ 'one_of_each' | mxedge.matrix.synapse_worker_layout(['hs1', 'hs2']) }}"),
        "1.22.1",
        "3.0.17",
    ),
    # Two workers in each of four pools on loopback addresses, for the live test below (nginx started on loopback
    # with stand-ins of the main process and the workers): sticky by user (sync), by room (event creation, room
    # messages), by source (inbound federation), none (client reader; GET-only presence, push rules, account data).
    "workers_live": (
        {
            "matrix_server_name": "matrix.example.test",
            "matrix_homeserver_address": "127.0.2.10",
            "matrix_homeserver_port": 38008,
            "matrix_worker_hosts": {"hs1": "127.0.2.11", "hs2": "127.0.2.12"},
            "matrix_workers": [
                {"name": f"{kind}{number}", "type": kind, "host": f"hs{number}", "port": port}
                for kind, port in (("sync", 38101), ("client_reader", 38102), ("event_creator", 38103),
                                   ("federation_inbound", 38104))
                for number in (1, 2)
            ],
            "nginx_synapse_worker_fail_timeout": 1,
            "mx_ipv6": False,
        },
        "1.22.1",
        "3.0.17",
    ),
}
ALONGSIDE = [name for name, variant in VARIANTS.items() if variant[0].get("matrix_proxy_mode") == "alongside"]
DEDICATED = [name for name in VARIANTS if name not in ALONGSIDE]

PLAYBOOK = """
- name: Render the nginx role's templates for one variable set per host
  hosts: all
  connection: local
  gather_facts: false
  tasks:
    - name: Load the nginx role (defaults, vars, the matrix dependency) and run its preflight
      ansible.builtin.include_role:
        name: mxedge.matrix.nginx
        tasks_from: preflight
        public: true
      vars:
        # No nginx here (this machine's, if any, is not the operator's): alongside, preflight reads no live configuration.
        _nginx_binary: /nonexistent/nginx
    - name: Pretend the host's IPv6, nginx build (as configure.yml derives it) and the operator's ports of this variant
      ansible.builtin.set_fact:
        _matrix_ipv6: "{{{{ mx_ipv6 }}}}"
        __nginx_operator_ports: "{{{{ mx_operator_ports | default([]) }}}}"
        __nginx_http2_directive: "{{{{ mx_nginx_version is version(_nginx_http2_directive_since, '>=') }}}}"
        __nginx_tls_curves: "{{{{ (_nginx_tls_curves_pq if mx_openssl_version is version(_nginx_mlkem_openssl_since, '>=') else [])
          + _nginx_tls_curves }}}}"
    - name: Write what the templates render to and the derived values, in one file per variant
      ansible.builtin.copy:
        dest: "{out}/{{{{ inventory_hostname }}}}.json"
        mode: "0644"
        content: "{{{{ {{'files': __render_files, 'placement': _matrix_well_known_placement,
          'disable_default_site': _nginx_disable_default_site | bool, 'routes': _matrix_routes,
          'client_body': _matrix_well_known_client_body, 'static_dir': _nginx_static_dir,
          'errors_include': _nginx_errors_include, 'alongside': _nginx_alongside | bool}} | to_json }}}}"
      vars:
        __render_files: "{{{{ dict(_nginx_config_files | map(attribute='dest') | zip(query('ansible.builtin.template',
          *(_nginx_config_files | map(attribute='src') | map('regex_replace', '^', '{role}/templates/'))))) }}}}"
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("nginx-render")
    hosts = {
        name: dict(BASE, **variables, mx_nginx_version=nginx_version, mx_openssl_version=openssl_version)
        for name, (variables, nginx_version, openssl_version) in VARIANTS.items()
    }
    data_by_name = render(out, PLAYBOOK.format(role=ROLE, out=out), hosts)
    result = {}
    for name in VARIANTS:
        data = data_by_name[name]
        tree = out / name
        for dest, text in data.pop("files").items():
            (tree / dest).parent.mkdir(parents=True, exist_ok=True)
            (tree / dest).write_text(text)
        for sub in ("conf.d", "sites-enabled", "modules-enabled"):
            (tree / sub).mkdir(exist_ok=True)
        if data["alongside"]:
            snippet = tree / "mxedge-matrix" / "well-known.conf"
            result[name] = {
                "dir": tree,
                "main": "",  # the operator's
                "matrix": (tree / "conf.d" / "mxedge-matrix.conf").read_text(),
                "errors": (tree / "mxedge-matrix" / "errors.inc").read_text(),
                "snippet": snippet.read_text() if snippet.exists() else "",
                "derived": data,
            }
        else:
            result[name] = {
                "dir": tree,
                "main": (tree / "nginx.conf").read_text(),
                "matrix": (tree / "mxedge" / "matrix.conf").read_text(),
                "errors": (tree / "mxedge" / "errors.inc").read_text(),
                "snippet": "",
                "derived": data,
            }
    return result


def _served(variant):
    """The listeners of the table that are server blocks of the role's (not the operator's snippet)."""
    return [vhost for vhost in variant["derived"]["routes"]["vhosts"] if not vhost.get("snippet")]


def _servers(text):
    """The top-level server blocks of matrix.conf, as text."""
    blocks, depth, current = [], 0, None
    for line in text.splitlines():
        code = line.split("#", 1)[0]
        if depth == 0 and re.match(r"^server\s*\{", code):
            current = []
        if current is not None:
            current.append(line)
        depth += code.count("{") - code.count("}")
        if current is not None and depth == 0:
            blocks.append("\n".join(current))
            current = None
    return blocks


def _server(text, port):
    found = [b for b in _servers(text) if re.search(rf"^\s*listen {port} ssl", b, re.M)]
    assert len(found) == 1, (port, found)
    return found[0]


def _blocks_at(lines, indent, head_pattern):
    """[(match, body lines)] of the blocks whose head line (at `indent` spaces) matches `head_pattern`."""
    found = []
    for index, line in enumerate(lines):
        head = re.match(rf"^ {{{indent}}}{head_pattern}$", line)
        if head:
            depth, body = 1, []
            for inner in lines[index + 1:]:
                code = inner.split("#", 1)[0]
                depth += code.count("{") - code.count("}")
                if depth == 0:
                    break
                body.append(inner)
            found.append((head, body))
    return found


def _without_nested(body):
    """A location's own lines: the regex locations nested in it (MX16) left out."""
    own, depth = [], 0
    for line in body:
        if depth == 0 and re.match(r"^ {8}location ~ ", line):
            depth = 1
            continue
        if depth:
            code = line.split("#", 1)[0]
            depth += code.count("{") - code.count("}")
            continue
        own.append(line)
    return own


def _locations(block):
    """{(modifier, path): body text} of the location blocks directly inside a server block (nested ones left out)."""
    return {(head.group(1) or "", head.group(2)): "\n".join(_without_nested(body))
            for head, body in _blocks_at(block.splitlines(), 4, r"location (=|\^~)? ?(\S+) \{")}


def _regex_locations(body):
    """[(regex nginx compiles, body text)] of the regex locations nested in a location's full body, in order."""
    return [(_nginx_unquote(head.group(1)), "\n".join(inner))
            for head, inner in _blocks_at(body.splitlines(), 8, r'location ~ "((?:[^"\\]|\\.)*)" \{')]


def _full_location(block, modifier, path):
    """A location's whole text, nested locations included."""
    (found,) = [body for head, body in _blocks_at(block.splitlines(), 4, r"location (=|\^~)? ?(\S+) \{")
                if (head.group(1) or "", head.group(2)) == (modifier, path)]
    return "\n".join(found)


def _host_route(vhost, route):
    """The later prefix route of the listener whose location holds the regex route `route` (vars/main.yml)."""
    later = vhost["routes"][vhost["routes"].index(route) + 1:]
    path = route["match"]["path"]
    return next(r for r in later if r["match"]["kind"] == "prefix"
                and (path == r["match"]["path"] or path.startswith(r["match"]["path"].rstrip("/") + "/")))


def _upstream_block(variant, route):
    """The upstream block a forwarding route goes to: mxedge_<pool>, _by_<key> for a sticky route to several servers."""
    pool = next(p for p in variant["derived"]["routes"]["upstreams"] if p["name"] == route["upstream"])
    sticky = route["policy"]["sticky"]
    return f"mxedge_{pool['name']}" + (f"_by_{sticky}" if sticky and len(pool["servers"]) > 1 else "")


def _route_body(block, vhost, route):
    """The body of the location rendering `route` of the table's listener `vhost` (nested for a regex route)."""
    if route["match"]["kind"] != "regex":
        return _locations(block)[("=" if route["match"]["kind"] == "exact" else "^~", route["match"]["path"])]
    host = _host_route(vhost, route)
    nested = dict(_regex_locations(_full_location(block, "^~", host["match"]["path"])))
    return nested[route["match"]["pattern"]]


def _location(block, modifier, path):
    return _locations(block)[(modifier, path)]


def _nginx_unquote(text):
    """The value nginx reads from a double-quoted string (backslash escapes)."""
    return re.sub(r'\\(["\'\\])', r"\1", text)


@pytest.mark.parametrize("name", VARIANTS)
def test_every_file_starts_with_the_managed_header(rendered, name):
    for key in ("main", "matrix", "errors", "snippet"):
        if rendered[name][key] or (key == "main" and name in DEDICATED):
            assert rendered[name][key].startswith("#\n# Ansible managed"), key


@pytest.mark.parametrize("name", VARIANTS)
def test_proxy_pass_has_no_uri_part_and_forwarded_headers_are_overwritten(rendered, name):
    text = rendered[name]["matrix"]
    passes = re.findall(r"^\s*proxy_pass\s+([^;]+);", text, re.M)
    challenge = {"http://mxedge_acme"} if name.startswith("acme") else set()
    services = {f"http://mxedge_{pool}" for pool in ("mas", "rtc_jwt", "rtc_sfu")} if "matrix_mas_url" in VARIANTS[name][0] else set()
    # MX16: a block per worker pool and sticky key; a route restricted to some methods forwards to a mapped variable.
    routes = [(vhost, r) for vhost in _served(rendered[name]) for r in vhost["routes"] if r["match"]["kind"] == "regex"]
    workers = {f"http://{_upstream_block(rendered[name], r)}" for vhost, r in routes if not r["match"]["methods"]}
    methods = {f"http://$mxedge_route_{v['name']}_{r['id'].replace('-', '_')}" for v, r in routes if r["match"]["methods"]}
    assert passes and set(passes) == {"http://mxedge_homeserver"} | challenge | services | workers | methods
    assert "$proxy_add_x_forwarded_for" not in text
    for block in _servers(text):
        if "proxy_pass http://" in block:
            assert "proxy_set_header X-Forwarded-For $remote_addr;" in block
            assert "proxy_set_header X-Forwarded-Proto $scheme;" in block
            assert 'proxy_set_header Connection "";' in block
            assert "proxy_http_version 1.1;" in block
            timeout = int(re.search(r"proxy_read_timeout (\d+)s;", block).group(1))
            assert timeout >= 180
            assert "rewrite" not in block  # a rewrite would make nginx re-encode the URI


@pytest.mark.parametrize("name", DEDICATED)
def test_main_config_includes_only_relative_paths(rendered, name):
    includes = re.findall(r"^\s*include\s+([^;]+);", rendered[name]["main"], re.M)
    assert "mxedge/*.conf" in includes and "sites-enabled/*" in includes
    assert all(not path.startswith("/") for path in includes), includes


@pytest.mark.parametrize("name", VARIANTS)
def test_tls_is_mozilla_intermediate(rendered, name):
    if name in ALONGSIDE:
        # The http level is the operator's: every TLS server block of the role's carries the profile.
        blocks = [b for b in _servers(rendered[name]["matrix"]) if re.search(r"^\s*listen \S+ ssl", b, re.M)]
        assert blocks
        for block in blocks:
            assert "ssl_session_cache shared:mxedge_matrix_tls:10m;" in block
            _assert_intermediate(block)
        return
    _assert_intermediate(rendered[name]["main"])


def _assert_intermediate(main):
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in main
    assert "ssl_session_tickets off;" in main
    assert "ssl_prefer_server_ciphers off;" in main
    ciphers = re.search(r"ssl_ciphers ([^;]+);", main).group(1).split(":")
    assert ciphers and all(c.startswith("ECDHE-") and ("GCM" in c or "CHACHA20" in c) for c in ciphers)


def test_delegated_layout(rendered):
    text = rendered["delegated"]["matrix"]
    assert rendered["delegated"]["derived"]["placement"] == "separate"
    client = [b for b in _servers(text) if "server_name matrix.example.test;" in b and "listen 443 ssl" in b][0]
    federation = _server(text, 8448)
    well_known = [b for b in _servers(text) if "server_name example.test;" in b]
    assert len(well_known) == 1 and "listen 443 ssl http2;" in well_known[0]
    assert "proxy_pass" not in well_known[0]
    assert "include mxedge/errors.inc;" in well_known[0]  # CORS on its errors (MX11)
    for kind in ("server", "client"):
        assert 'set $mxedge_cors "*";' in _location(well_known[0], "=", f"/.well-known/matrix/{kind}")
    assert "location = /.well-known/matrix/server" not in client
    assert "listen [::]:443 ssl http2;" in client and "listen [::]:8448 ssl http2;" in federation
    assert "http2 on;" not in text  # nginx 1.22 takes http2 on the listen line
    # client: both client prefixes, health, admin allow-list
    for prefix in ("/_matrix", "/_synapse/client"):
        assert f"location ^~ {prefix} {{" in client
    assert "location = /health {" in client
    admin = _location(client, "^~", "/_synapse/admin")
    assert "allow 10.0.0.0/8;" in admin and "allow 2001:db8::/32;" in admin and "deny all;" in admin
    # A raw URI outside the admin prefix is refused like a source outside the list: nginx checks it first.
    assert re.search(r'if \(\$request_uri !~ "[^"]+"\) \{\s*return 403;', admin)
    # federation: /_matrix only, admin always 403
    assert "location ^~ /_synapse/client" not in federation and "location = /health" not in federation
    assert re.fullmatch(r"\s*(#[^\n]*\n\s*)*return 403;\s*", _location(federation, "^~", "/_synapse/admin"))
    assert "client_max_body_size 52428800;" in client
    assert "ssl_ecdh_curve X25519:prime256v1:secp384r1;" in rendered["delegated"]["main"]


def test_single_port_socket_palpo_layout(rendered):
    text = rendered["single_port_socket_palpo"]["matrix"]
    assert rendered["single_port_socket_palpo"]["derived"]["placement"] == "client"
    assert len(_servers(text)) == 1
    client = _servers(text)[0]
    assert "server unix:/run/palpo/palpo.sock;" in text
    assert "listen 443 ssl;" in client and "http2 on;" in client and "[::]" not in client
    assert "location ^~ /_palpo/client {" in client and "/_synapse" not in client
    assert re.fullmatch(r"\s*(#[^\n]*\n\s*)*return 403;\s*", _location(client, "^~", "/_palpo/admin"))
    assert "alias /etc/nginx/mxedge/static/well-known-server;" in client
    main = rendered["single_port_socket_palpo"]["main"]
    assert "ssl_ecdh_curve X25519MLKEM768:X25519:prime256v1:secp384r1;" in main


def test_same_host_not_on_443_gets_its_own_well_known_block(rendered):
    variant = rendered["same_host_not_on_443"]
    assert variant["derived"]["placement"] == "separate"
    assert "server [::1]:8008;" in variant["matrix"]
    well_known = _server(variant["matrix"], 443)
    assert "server_name matrix.example.test;" in well_known
    assert "add_header X-Well-Known yes;" in well_known
    assert "location = /.well-known/matrix/server" not in _server(variant["matrix"], 8443)
    assert json.loads(variant["derived"]["client_body"]) == {"m.homeserver": {"base_url": "https://matrix.example.test:8443/"}}


def test_operator_extras_land_in_their_blocks(rendered):
    variant = rendered["extras_no_well_known"]
    assert variant["derived"]["placement"] == "none"
    assert variant["derived"]["disable_default_site"] is True  # a Matrix listener on port 80
    text = variant["matrix"]
    client, federation = _server(text, 80), _server(text, 8448)
    assert "limit_req zone=mx burst=20;\n    add_header X-Client yes;" in client
    assert "add_header X-Federation yes;" in federation and "X-Client" not in federation
    assert "well-known" not in text
    assert "proxy_set_header X-Correlation-ID $request_id;" in client
    main = variant["main"]
    assert main.index("limit_req_zone $binary_remote_addr zone=mx:10m rate=10r/s;") < main.index("include mxedge/*.conf;")


def _plain_http_servers(text):
    return [b for b in _servers(text) if re.search(r"^\s*listen (\[::\]:)?80 default_server;", b, re.M)]


@pytest.mark.parametrize("name", [n for n in VARIANTS if VARIANTS[n][0].get("matrix_tls_source", "files") == "files"])
def test_files_variants_use_the_given_paths_and_no_port_80_listener(rendered, name):
    text = rendered[name]["matrix"]
    assert not _plain_http_servers(text)
    assert set(re.findall(r"ssl_certificate (\S+);", text)) == {BASE["matrix_tls_certificate"]}
    assert set(re.findall(r"ssl_certificate_key (\S+);", text)) == {BASE["matrix_tls_certificate_key"]}


@pytest.mark.parametrize("name", ["acme_delegated_not_on_443", "self_signed"])
def test_managed_certificate_paths(rendered, name):
    text = rendered[name]["matrix"]
    assert set(re.findall(r"ssl_certificate (\S+);", text)) == {"/etc/mxedge-matrix/tls/matrix.example.test.crt"}
    assert set(re.findall(r"ssl_certificate_key (\S+);", text)) == {"/etc/mxedge-matrix/tls/matrix.example.test.key"}


def test_self_signed_adds_no_port_80_listener(rendered):
    variant = rendered["self_signed"]
    assert not _plain_http_servers(variant["matrix"])
    assert variant["derived"]["disable_default_site"] is False


def test_acme_port_80_forwards_the_challenge_and_redirects_the_rest(rendered):
    variant = rendered["acme_delegated_not_on_443"]
    (plain,) = _plain_http_servers(variant["matrix"])
    # Every host name: default_server on both families, and Debian's default site goes.
    assert "listen 80 default_server;" in plain and "listen [::]:80 default_server;" in plain
    assert "ssl" not in plain
    assert variant["derived"]["disable_default_site"] is True
    challenge = _location(plain, "^~", "/.well-known/acme-challenge")
    assert "proxy_pass http://mxedge_acme;" in challenge
    assert re.search(r"upstream mxedge_acme \{\s*server 127\.0\.0\.1:8999;", variant["matrix"])
    assert "proxy_set_header Host $mxedge_matrix_host;" in plain
    # Everything else: to HTTPS on the client port, host without port, URI as sent.
    rest = _location(plain, "", "/")
    assert "return 301 https://$host:8443$request_uri;" in rest


# --- the route table, rendered (issue 19) ---


def _vhost_block(variant, vhost):
    """The server block of matrix.conf that renders the table's listener `vhost`."""
    names = " ".join(vhost["hosts"]) or "_"
    found = [b for b in _servers(variant["matrix"])
             if re.search(rf"^\s*listen {vhost['port']}[ ;]", b, re.M) and f"server_name {names};" in b]
    assert len(found) == 1, (vhost["name"], found)
    return found[0]


def _raw_check(body):
    """(regex nginx compiles, status) of a location's raw-URI check, or None."""
    match = re.search(r'if \(\$request_uri !~ "((?:[^"\\]|\\.)*)"\) \{\s*return (\d+);\s*\}', body)
    return (_nginx_unquote(match.group(1)), int(match.group(2))) if match else None


@pytest.mark.parametrize("name", VARIANTS)
def test_every_route_of_the_table_is_a_location_in_order(rendered, name):
    variant = rendered[name]
    for vhost in _served(variant):
        block = _vhost_block(variant, vhost)
        locations = _locations(block)
        # The listener's fallback and the named locations of the pools' fallbacks (MX16) are no routes.
        heads = [key for key in locations if key != ("", "/") and not key[1].startswith("@")]
        assert heads == [("=" if r["match"]["kind"] == "exact" else "^~", r["match"]["path"])
                         for r in vhost["routes"] if r["match"]["kind"] != "regex"]
        for route in vhost["routes"]:
            body = _route_body(block, vhost, route)
            # The block names the behaviours the route implements (MXnn comment line above it).
            if route["match"]["kind"] == "regex":
                assert re.search(rf"# {' '.join(route['behaviours'])} {route['id']}:[^\n]*\n {{8}}location ~ ", block)
            else:
                assert f"# {' '.join(route['behaviours'])} {route['id']}\n    location " in block
            if route["action"] == "forward":
                upstream = _upstream_block(variant, route)
                assert (f"proxy_pass http://{upstream};" in body
                        or (route["match"]["methods"] and re.search(r"proxy_pass http://\$mxedge_route_\w+;", body))), body
                assert f"client_max_body_size {route['policy']['body_limit']};" in body
                for network in route["allow_sources"]:
                    assert f"allow {network};" in body
                assert ("deny all;" in body) == bool(route["allow_sources"])
            elif route["action"] == "static":
                assert f"alias {variant['derived']['static_dir']}/{route['id']};" in body
                assert f"default_type {route['content_type']};" in body
                assert ('set $mxedge_cors "*";' in body) == route["cors"]
            else:
                assert re.fullmatch(rf"\s*(#[^\n]*\n\s*)*return {route['status']};\s*", body), body


@pytest.mark.parametrize("name", VARIANTS)
def test_every_forward_and_static_route_checks_the_raw_uri_against_the_table(rendered, name):
    """MX04, exact routes included (issue 18: `location = /health` had no raw check)."""
    variant = rendered[name]
    for vhost in _served(variant):
        block = _vhost_block(variant, vhost)
        for route in vhost["routes"]:
            body = _route_body(block, vhost, route)
            if route["action"] == "refuse":
                assert _raw_check(body) is None  # refused whatever the raw URI is
                continue
            status = route["refuse"]["status"] if route.get("allow_sources") else 404
            assert _raw_check(body) == (route["match"]["raw_regex"], status), (route["id"], body)


def _normalise(raw):
    """nginx's $uri for a raw request URI: percent-decoded, then slashes merged and dot-segments resolved.

    None when the dot-segments climb above the root: nginx refuses that URI with 400 before any location.
    """
    path = re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), raw.split("?", 1)[0])
    out = []
    for segment in re.sub(r"/+", "/", path).split("/")[1:]:
        if segment == "..":
            if not out:
                return None
            out.pop()
        elif segment != ".":
            out.append(segment)
    return "/" + "/".join(out) + ("/" if path.endswith(("/", "/.", "/..")) and out else "")


def _nginx_location(block, uri):
    """The body of the location nginx picks for the normalised `uri` (exact, else the longest prefix)."""
    locations = _locations(block)
    body = locations.get(("=", uri))
    if body is None:
        prefixes = [key for key in locations if key[0] in ("^~", "") and uri.startswith(key[1])]
        body = locations[max(prefixes, key=lambda key: len(key[1]))]
    return body


def _nginx_answers(block, raw, source, upstream=False):
    """What a server block does with `raw` from `source`, as nginx would: "forward", "static" or a status.

    With `upstream`, a forwarded request answers "forward <upstream block>".
    """
    import ipaddress  # pylint: disable=import-outside-toplevel

    uri = _normalise(raw)
    if uri is None:
        return 404  # nginx's 400 for an unparsable URI, answered as the table's 404 (errors.inc)
    body = _nginx_location(block, uri)
    check = _raw_check(body)
    if check and not re.search(check[0], raw):
        return check[1]
    allowed = re.findall(r"allow (\S+);", body)
    if "deny all;" in body and not any(ipaddress.ip_address(source) in ipaddress.ip_network(n) for n in allowed):
        return 403
    if "proxy_pass" in body:
        return "forward " + re.search(r"proxy_pass http://(\S+);", body).group(1) if upstream else "forward"
    if "alias" in body:
        return "static"
    return int(re.search(r"return (\d+)", body).group(1))


ISSUE_18 = [
    # Normalise to an exact-match route but name the admin API raw (issue 18).
    "/_synapse/admin/v2/users/%2E%2E%2F%2E%2E%2F%2E%2E%2F%2E%2E%2Fhealth",
    "/_synapse/admin/v2/users/%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fhealth",
    "/_synapse/admin/v1/users/%2E%2E/%2E%2E/%2E%2E/%2E%2E/health?x=1",
    # ... or a prefix route.
    "/_synapse/admin/v2/users/%2E%2E%2F%2E%2E%2F%2E%2E%2F%2E%2E%2F_matrix%2Fclient%2Fversions",
    "/_synapse/admin/v2/users/%2E%2E%2F%2E%2E%2F%2E%2E%2F%2E%2E%2F_synapse%2Fclient%2Fx",
    # Case and double-slash variants, and the admin API by its other spellings.
    "/_SYNAPSE/admin/v1/server_version",
    "//_synapse/admin/v1/server_version",
    "/_synapse//admin/v1/server_version",
    "/_matrix/../_synapse/admin/v1/server_version",
    "/_matrix/%2e%2e/_synapse/admin/v1/server_version",
    "/_synapse/%61dmin/v1/server_version",
    "/health/../_synapse/admin/v1/server_version",
    "/.well-known/matrix/%2E%2E/%2E%2E/%2E%2E/_synapse/admin/v1/server_version",
]


@pytest.mark.parametrize("raw", ISSUE_18)
@pytest.mark.parametrize("name", ["delegated", "same_host_not_on_443", "extras_no_well_known", "services"])
def test_no_admin_bypass_through_a_route_the_path_normalises_to(rendered, name, raw):
    variant = rendered[name]
    client = next(v for v in variant["derived"]["routes"]["vhosts"] if v["name"] == "client")
    assert _nginx_answers(_vhost_block(variant, client), raw, "192.0.2.7") in (403, 404), raw


def test_the_emulation_forwards_what_it_should(rendered):
    variant = rendered["delegated"]
    vhosts = {v["name"]: v for v in variant["derived"]["routes"]["vhosts"]}
    client = _vhost_block(variant, vhosts["client"])
    assert _nginx_answers(client, "/health", "192.0.2.7") == "forward"
    assert _nginx_answers(client, "/health?probe=1", "192.0.2.7") == "forward"
    assert _nginx_answers(client, "/_matrix/client/v3/directory/room/%23a%2Fb%3Ax", "192.0.2.7") == "forward"
    assert _nginx_answers(client, "/_synapse/admin/v1/server_version", "10.1.2.3") == "forward"
    assert _nginx_answers(client, "/_synapse/admin/v1/server_version", "192.0.2.7") == 403
    assert _nginx_answers(client, "/_synapse/%61dmin/v1/server_version", "192.0.2.7") == 403
    assert _nginx_answers(client, "/_matrixfoo", "192.0.2.7") == 404
    assert _nginx_answers(client, "/elsewhere", "192.0.2.7") == 404
    well_known = _vhost_block(variant, vhosts["well_known"])
    assert _nginx_answers(well_known, "/.well-known/matrix/server", "192.0.2.7") == "static"
    assert _nginx_answers(well_known, "/.well-known/x/%2E%2E/matrix/server", "192.0.2.7") == 404


@pytest.mark.parametrize("name", VARIANTS)
def test_own_errors_are_the_table_json_with_cors(rendered, name):
    """MX11: every error nginx makes is the table's body, application/json, CORS, Retry-After on 5xx."""
    variant = rendered[name]
    errors, table = variant["errors"], variant["derived"]["routes"]
    assert table["errors"] and set(table["errors"]) >= {"403", "404", "413", "502", "503", "504"}
    for status, error in table["errors"].items():
        assert f"error_page {status} @mxedge_error_{status};" in errors
        body = re.search(rf"^location @mxedge_error_{status} \{{\n(.*?)^\}}", errors, re.M | re.S).group(1)
        assert "types { }" in body and "default_type application/json;" in body
        assert 'set $mxedge_cors "*";' in body
        assert (f"set $mxedge_retry_after {error.get('retry_after')};" in body) == ("retry_after" in error)
        returned = re.search(r'return (\d+) "((?:[^"\\]|\\.)*)";', body)
        assert (int(returned.group(1)), _nginx_unquote(returned.group(2))) == (error["status"], error["body"])
        assert json.loads(error["body"]) == {"errcode": error["errcode"], "error": error["error"]}
    # nginx's own 400 (a URI climbing above the root, no Host) comes before any location and
    # without a URI: an internal location answers it with the table's 404.
    internal = re.search(r"^error_page 400 =404 (\S+);\nlocation = (\S+) \{\n(.*?)^\}", errors, re.M | re.S)
    assert internal and internal.group(1) == internal.group(2), errors
    assert "internal;" in internal.group(3) and 'set $mxedge_cors "*";' in internal.group(3)
    returned = re.search(r'return 404 "((?:[^"\\]|\\.)*)";', internal.group(3))
    assert _nginx_unquote(returned.group(1)) == table["errors"]["404"]["body"]
    # The headers: at server level, empty unless set, so add_header of the extras keeps applying.
    assert "add_header Access-Control-Allow-Origin $mxedge_cors always;" in errors
    assert "add_header Retry-After $mxedge_retry_after always;" in errors
    assert 'set $mxedge_cors "";' in errors and 'set $mxedge_retry_after "";' in errors
    for block in _servers(variant["matrix"]):
        assert block.count(f"include {variant['derived']['errors_include']};") == 1
        for body in _locations(block).values():
            assert "add_header" not in body and "error_page" not in body
    # The homeserver's own errors are never replaced.
    assert not re.search(r"^\s*proxy_intercept_errors", variant["matrix"] + errors + variant["main"], re.M)
    # What the role refuses or leaves unrouted goes through those error pages.
    for status in re.findall(r"^\s*return (\d+);", variant["matrix"], re.M):
        assert status in table["errors"], status


@pytest.mark.parametrize("name", VARIANTS)
def test_rendered_configuration_cites_every_behaviour_of_the_contract(rendered, name):
    """Each behaviour of docs/contract.md that applies to this variant is named by a comment (MXnn)."""
    from ansible_collections.mxedge.matrix.plugins.module_utils.matrix_routes import BEHAVIOURS  # pylint: disable=import-outside-toplevel

    variant = rendered[name]
    table = variant["derived"]["routes"]
    names = {v["name"] for v in table["vhosts"]}
    routes = [r for v in table["vhosts"] for r in v["routes"]]
    not_applicable = set()
    if "federation" not in names:
        not_applicable.add("MX02")  # single-port: no federation listener of its own
    if not any(r["action"] == "static" for r in routes):
        not_applicable.add("MX03")  # matrix_well_known_serve: false
    if "http" not in names:
        not_applicable.add("MX12")  # no plain-HTTP listener without ACME
    if "mas" not in names:
        not_applicable.add("MX13")  # matrix_mas_url unset
    if not {"rtc_jwt", "rtc_sfu"} & names:
        not_applicable.add("MX14")  # matrix_rtc_*_url unset
    if not any(r["match"]["kind"] == "regex" for r in routes):
        not_applicable.add("MX16")  # matrix_workers unset
    text = "\n".join(variant[key] for key in ("main", "matrix", "errors", "snippet"))
    cited = {i for line in text.splitlines() if line.strip().startswith("#") for i in re.findall(r"\bMX\d\d\b", line)}
    assert cited <= set(BEHAVIOURS), cited - set(BEHAVIOURS)
    assert set(BEHAVIOURS) - not_applicable - cited == set(), "behaviours without a comment in the rendered configuration"
    assert {i for r in routes for i in r["behaviours"]} <= cited


def _nginx_for(rendered, name):
    """The nginx that checks a variant's files: this machine's (as root), or Debian 13's in a container."""
    pretended = VARIANTS[name][1]
    needs_openssl_35 = "X25519MLKEM768" in rendered[name]["main"] + rendered[name]["matrix"]
    nginx = daemon_checks.nginx_for(pretended, needs_openssl_35)
    if nginx is None:
        found = ", ".join(map(str, daemon_checks.nginxes())) or "none"
        pytest.skip(f"no nginx for a tree rendered for nginx {pretended}"
                    f"{' and OpenSSL >= 3.5' if needs_openssl_35 else ''} (found: {found}); "
                    "scripts/bootstrap.sh ensure_unit_daemons installs them")
    return nginx


def _test_certificate(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=matrix.example.test"],
        capture_output=True, check=True,
    )
    return key, cert


# The operator's website for a host on 443, as an operator writes it into sites-enabled/.
OPERATOR_SITE = """server {{
    listen 443 ssl;
    listen [::]:443 ssl;
    server_name {host};
    ssl_certificate {cert};
    ssl_certificate_key {key};
    add_header X-Operator-Site {host} always;
    root /var/www/html;
{include}}}
"""
OWN_PATHS = ["/etc/nginx/conf.d/mxedge-matrix.conf", "/etc/nginx/mxedge-matrix", "/etc/nginx/mxedge"]


@pytest.mark.parametrize("name", ALONGSIDE)
def test_nginx_accepts_the_role_files_next_to_debians_stock_configuration(rendered, name, tmp_path):
    """Alongside: Debian's own nginx.conf and default site, an operator's TLS website (for the server name's host
    when the snippet goes there, including it), and the role's files: nginx -T accepts the combination and reads
    the role's files through the stock include of conf.d/*.conf; the parser finds the operator's server blocks."""
    from ansible_collections.mxedge.matrix.plugins.module_utils.nginx_config import listeners  # pylint: disable=import-outside-toplevel

    variant = rendered[name]
    nginx = _nginx_for(rendered, name)
    key, cert = _test_certificate(tmp_path)
    own = tmp_path / "mxedge-matrix.conf"
    text = re.sub(r"(ssl_certificate) \S+;", rf"\1 {cert};", variant["matrix"])
    own.write_text(re.sub(r"(ssl_certificate_key) \S+;", rf"\1 {key};", text))
    files = {"/etc/nginx/conf.d/mxedge-matrix.conf": own,
             "/etc/nginx/mxedge-matrix/errors.inc": variant["dir"] / "mxedge-matrix" / "errors.inc"}
    host = "unrelated.test"
    if variant["snippet"]:
        files["/etc/nginx/mxedge-matrix/well-known.conf"] = variant["dir"] / "mxedge-matrix" / "well-known.conf"
        host = "example.test"
    site = tmp_path / "site"
    include = "    include /etc/nginx/mxedge-matrix/well-known.conf;\n" if variant["snippet"] else ""
    site.write_text(OPERATOR_SITE.format(host=host, cert=cert, key=key, include=include))
    files[f"/etc/nginx/sites-enabled/{host}"] = site
    proc = nginx.test_alongside(files, tmp_path)
    assert proc.returncode == 0, f"{nginx}: {proc.stderr}"
    assert "conflicting server name" not in proc.stderr, proc.stderr
    for path in files:
        assert f"\n# configuration file {path}:\n" in "\n" + proc.stdout, path
    operator = listeners(proc.stdout, OWN_PATHS)
    assert [(entry["port"], entry["names"]) for entry in operator] == [(80, ["*"]), (443, [host])]
    # Without the exclusion the role's server blocks are there too, with the table's host names.
    every = listeners(proc.stdout, [])
    role = [entry for entry in every if entry["where"].startswith("/etc/nginx/conf.d/mxedge-matrix.conf:")]
    assert sorted((e["port"], tuple(e["names"])) for e in role) == sorted(
        (v["port"], tuple(v["hosts"] or ["*"])) for v in _served(variant))


@pytest.mark.parametrize("name", DEDICATED)
def test_nginx_accepts_the_rendered_tree(rendered, name, tmp_path):
    # This machine's nginx (as root), or Debian 13's in a container (daemon_checks.py).
    pretended, needs_openssl_35 = VARIANTS[name][1], "X25519MLKEM768" in rendered[name]["main"]
    nginx = daemon_checks.nginx_for(pretended, needs_openssl_35)
    if nginx is None:
        found = ", ".join(map(str, daemon_checks.nginxes())) or "none"
        pytest.skip(f"no nginx for a tree rendered for nginx {pretended}"
                    f"{' and OpenSSL >= 3.5' if needs_openssl_35 else ''} (found: {found}); "
                    "scripts/bootstrap.sh ensure_unit_daemons installs them")
    tree = tmp_path / "nginx"
    shutil.copytree(rendered[name]["dir"], tree)
    (tree / "mime.types").write_text("types { application/json json; }\n")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=matrix.example.test"],
        capture_output=True, check=True,
    )
    conf = tree / "mxedge" / "matrix.conf"
    text = re.sub(r"(ssl_certificate) \S+;", rf"\1 {cert};", conf.read_text())
    conf.write_text(re.sub(r"(ssl_certificate_key) \S+;", rf"\1 {key};", text))
    proc = nginx.test(tree / "nginx.conf", tmp_path)
    assert proc.returncode == 0, f"{nginx}: {proc.stderr}"


# --- MAS and MatrixRTC on host names of their own (MX13, MX14) ---

SERVICES = VARIANTS["services"][0]
MAS_COMPAT = [(version, endpoint) for version in ("api/v1", "r0", "v3", "unstable")
              for endpoint in ("login", "logout", "refresh")]
SERVICE_VHOSTS = [
    # (listener, its host name, upstream block, upstream server, timeout class)
    ("mas", "auth.example.test", "mxedge_mas", "127.0.0.1:8080", "default"),
    ("rtc_jwt", "rtc-jwt.example.test", "mxedge_rtc_jwt", "localhost:8081", "default"),
    ("rtc_sfu", "sfu.example.test", "mxedge_rtc_sfu", "127.0.0.1:7880", "tunnel"),
]


def _table_vhost(variant, name):
    return next(v for v in variant["derived"]["routes"]["vhosts"] if v["name"] == name)


def _role_default(key):
    import yaml  # pylint: disable=import-outside-toplevel

    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    spec = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    assert defaults[key] == spec[key]["default"], key
    return defaults[key]


@pytest.mark.parametrize("version,endpoint", MAS_COMPAT)
def test_mas_compat_routes_go_to_mas_before_the_client_api(rendered, version, endpoint):
    """MX13: login, logout and refresh of every client API version go to MAS, the rest of /_matrix to the homeserver."""
    variant = rendered["services"]
    client = _vhost_block(variant, _table_vhost(variant, "client"))
    path = f"/_matrix/client/{version}/{endpoint}"
    body = _location(client, "^~", path)
    assert "proxy_pass http://mxedge_mas;" in body
    assert "proxy_set_header Upgrade" not in body  # timeout class default: no WebSocket
    assert client.index(f"location ^~ {path} {{") < client.index("location ^~ /_matrix {")
    assert _nginx_answers(client, path, "192.0.2.7", upstream=True) == "forward mxedge_mas"
    assert _nginx_answers(client, path + "/sub?x=1", "192.0.2.7", upstream=True) == "forward mxedge_mas"
    # Only the raw spelling goes to MAS: one that normalises to it from elsewhere is refused (MX04).
    assert _nginx_answers(client, f"/_matrix/client/{version}/%2E%2E/{version.split('/')[-1]}/{endpoint}", "192.0.2.7") == 404
    # The other endpoints of that version still reach the homeserver.
    assert _nginx_answers(client, f"/_matrix/client/{version}/sync", "192.0.2.7", upstream=True) == "forward mxedge_homeserver"


def test_mas_compat_routes_are_twelve_and_only_on_the_client_listener(rendered):
    variant = rendered["services"]
    text = variant["matrix"]
    assert len(re.findall(r"^\s*proxy_pass http://mxedge_mas;", text, re.M)) == len(MAS_COMPAT) + 1  # + the MAS host
    federation = _vhost_block(variant, _table_vhost(variant, "federation"))
    assert "mxedge_mas" not in federation and "/login" not in federation
    for name in VARIANTS:
        if "matrix_mas_url" not in VARIANTS[name][0]:
            assert "mxedge_mas" not in rendered[name]["matrix"] and "mxedge_rtc" not in rendered[name]["matrix"]


@pytest.mark.parametrize("vhost,host,upstream,server,timeout", SERVICE_VHOSTS)
def test_service_listeners_answer_only_their_host_name(rendered, vhost, host, upstream, server, timeout):
    """MX13, MX14: one TLS server block per service, its host name only, the whole host to its upstream."""
    variant = rendered["services"]
    table_vhost = _table_vhost(variant, vhost)
    assert table_vhost["hosts"] == [host] and table_vhost["routes"][0]["policy"]["timeout"] == timeout
    block = _vhost_block(variant, table_vhost)
    assert re.findall(r"^\s*server_name (.+);", block, re.M) == [host]
    assert "listen 443 ssl http2;" in block and "listen [::]:443 ssl http2;" in block
    assert "default_server" not in block
    # One location, "^~ /", and no fallback "location /" next to it (nginx would refuse the duplicate).
    assert list(_locations(block)) == [("^~", "/")]
    body = _location(block, "^~", "/")
    assert f"proxy_pass http://{upstream};" in body
    assert _raw_check(body) == ("^/", 404)
    for raw in ("/", "/anything?x=1", "/a/%2F/b", "/_matrix/client/v3/login"):
        assert _nginx_answers(block, raw, "192.0.2.7", upstream=True) == f"forward {upstream}", raw
    assert re.search(rf"^upstream {upstream} \{{\n    server {re.escape(server)};\n    keepalive \d+;\n\}}",
                     variant["matrix"], re.M)
    # The block may be nginx's default for its port (the first there, e.g. with the client API
    # elsewhere): it checks the host name itself before any location.
    check = re.search(r'^ {4}if \(\$host !~ "((?:[^"\\]|\\.)*)"\) \{\s*return (\d+);\s*\}', block, re.M)
    assert check and int(check.group(2)) == 404 and block.index(check.group(0)) < block.index("    location ")
    pattern = _nginx_unquote(check.group(1))
    assert re.search(pattern, host)
    for other in ("matrix.example.test", "example.test", f"x.{host}", host.replace(".", "x", 1), f"{host}.evil"):
        assert not re.search(pattern, other), other
    # No other server block names the host; the client block comes first on port 443, so nginx's
    # default for an unknown host name on that port is never a service.
    others = [b for b in _servers(variant["matrix"]) if b != block]
    assert not any(re.search(rf"^\s*server_name .*\b{re.escape(host)}\b", b, re.M) for b in others)
    on_443 = [b for b in _servers(variant["matrix"]) if re.search(r"^\s*listen 443 ssl", b, re.M)]
    assert "server_name matrix.example.test;" in on_443[0]


def _server_headers(block):
    """{name: value} of the proxy_set_header lines at server level (outside every location)."""
    outside = re.sub(r"^ {4}location [^\n]*\{\n.*?^ {4}\}\n", "", block, flags=re.M | re.S)
    return dict(re.findall(r"^ {4}proxy_set_header (\S+) (.+);", outside, re.M))


@pytest.mark.parametrize("name", VARIANTS)
def test_websocket_upgrade_only_on_tunnel_routes(rendered, name):
    """MX14: Upgrade and Connection: upgrade pass through on tunnel routes, and only there."""
    variant = rendered[name]
    tunnels = 0
    for vhost in _served(variant):
        block = _vhost_block(variant, vhost)
        locations = _locations(block)
        for route in vhost["routes"]:
            body = _route_body(block, vhost, route)
            headers = dict(re.findall(r"^\s*proxy_set_header (\S+) (.+);", body, re.M))
            if route["action"] == "forward" and route["policy"]["timeout"] == "tunnel":
                tunnels += 1
                # A location with proxy_set_header of its own inherits none of the server's: all repeated.
                assert headers == dict(_server_headers(block), Upgrade="$http_upgrade",
                                       Connection="$mxedge_connection_upgrade"), body
            else:
                assert headers == {}, (route["id"], body)
        for body in (b for key, b in locations.items() if key == ("", "/")):
            assert "proxy_set_header" not in body
        if any(r["action"] == "forward" for r in vhost["routes"]):
            assert _server_headers(block)["Connection"] == '""'  # keep-alive to the upstream, no upgrade
            assert "Upgrade" not in _server_headers(block)
    assert tunnels == (1 if "matrix_rtc_sfu_url" in VARIANTS[name][0] else 0)
    # The map: "upgrade" only when the client asked for one; "" (no header, keep-alive) otherwise.
    upgrade_map = re.search(r"^map \$http_upgrade \$mxedge_connection_upgrade \{\n(.*?)^\}", variant["matrix"], re.M | re.S)
    assert bool(upgrade_map) == bool(tunnels)
    if upgrade_map:
        assert re.findall(r"^\s+(\S+)\s+(\S+);", upgrade_map.group(1), re.M) == [('""', '""'), ("default", "upgrade")]
        assert variant["matrix"].index("\nmap $http_upgrade") < variant["matrix"].index("\nserver {")  # http level


@pytest.mark.parametrize("name", VARIANTS)
def test_tunnel_routes_get_the_tunnel_timeout_and_the_others_keep_theirs(rendered, name):
    """MX14: an idle WebSocket stays open nginx_tunnel_timeout (3600 s by default); other routes nginx_proxy_timeout."""
    tunnel, other = _role_default("nginx_tunnel_timeout"), _role_default("nginx_proxy_timeout")
    assert tunnel >= 3600
    variant = rendered[name]
    for vhost in _served(variant):
        block = _vhost_block(variant, vhost)
        for route in vhost["routes"]:
            if route["action"] != "forward":
                continue
            body = _route_body(block, vhost, route)
            expected = tunnel if route["policy"]["timeout"] == "tunnel" else other
            assert f"proxy_read_timeout {expected}s;" in body and f"proxy_send_timeout {expected}s;" in body, route["id"]


# --- matrix_proxy_mode=alongside: only the role's own files, nothing global ---


def _http_level(text):
    """The directives of a file included inside http { } that are outside every block, as their first words."""
    words, depth = [], 0
    for line in text.splitlines():
        code = line.split("#", 1)[0].strip()
        if depth == 0 and code and not code.startswith("'"):
            words.append(code.split()[0])
        depth += code.count("{") - code.count("}")
    return words


@pytest.mark.parametrize("name", ALONGSIDE)
def test_alongside_writes_no_main_configuration_and_nothing_global(rendered, name):
    variant = rendered[name]
    files = sorted(str(path.relative_to(variant["dir"])) for path in variant["dir"].rglob("*") if path.is_file())
    expected = ["conf.d/mxedge-matrix.conf", "mxedge-matrix/errors.inc"]
    assert files == sorted(expected + (["mxedge-matrix/well-known.conf"] if variant["snippet"] else []))
    # At http level: the role's named upstreams, maps and log format, and the operator's own extra.
    allowed = {"upstream", "map", "log_format", "server", "}"} | ({"limit_req_zone"} if "nginx_http_extra" in VARIANTS[name][0] else set())
    assert set(_http_level(variant["matrix"])) <= allowed, _http_level(variant["matrix"])
    assert re.findall(r"^upstream (\S+)", variant["matrix"], re.M) == [f"mxedge_{p['name']}" for p in variant["derived"]["routes"]["upstreams"]]
    assert set(re.findall(r"^map \S+ (\S+)", variant["matrix"], re.M)) <= {"$mxedge_matrix_host", "$mxedge_connection_upgrade"}
    assert re.findall(r"^log_format (\S+)", variant["matrix"], re.M) == ["mxedge_matrix"]
    assert "include /etc/nginx/mxedge-matrix/errors.inc;" in variant["matrix"]
    assert not re.search(r"^\s*(worker_|events|http\s*\{|server_tokens|server_names_hash)", variant["matrix"], re.M)
    assert variant["derived"]["disable_default_site"] is False


def test_alongside_keeps_http2_off_the_operators_ports_before_nginx_1_25_1(rendered):
    """nginx 1.22: "listen ... http2" is an option of the port, for every site there: not on the operator's 443."""
    text = rendered["alongside_own_well_known"]["matrix"]
    assert not re.search(r"^\s*listen (\[::\]:)?443 ssl http2;", text, re.M)
    assert re.search(r"^\s*listen 443 ssl;", text, re.M)
    assert re.search(r"^\s*listen 8448 ssl http2;", text, re.M) and re.search(r"^\s*listen \[::\]:8448 ssl http2;", text, re.M)
    # nginx 1.26: "http2 on;" is the block's own.
    assert "http2 on;" in rendered["alongside_snippet"]["matrix"]


def test_alongside_own_well_known_is_a_server_block_of_the_role(rendered):
    variant = rendered["alongside_own_well_known"]
    assert not variant["snippet"]
    well_known = _vhost_block(variant, _table_vhost(variant, "well_known"))
    assert "server_name example.test;" in well_known
    assert "alias /etc/nginx/mxedge-matrix/static/well-known-server;" in well_known


def _snippet_locations(text):
    """{(modifier, path): body} of the top-level locations of the snippet."""
    return _locations("\n".join("    " + line for line in text.splitlines()))


def test_alongside_snippet_holds_the_well_known_routes_and_nothing_else(rendered):
    """matrix_well_known_site=operator: no server block of the role's for the server name's host; the table's routes
    of that listener are exact or ^~ locations of a snippet included by the operator's block (MX03, MX04, MX11)."""
    variant = rendered["alongside_snippet"]
    vhost = _table_vhost(variant, "well_known")
    assert vhost["snippet"] is True
    assert not any(re.search(r"^\s*server_name .*\bexample\.test\b", b, re.M) and "matrix.example.test" not in b
                   for b in _servers(variant["matrix"]))
    snippet = variant["snippet"]
    assert not re.search(r"^\s*(server|listen|server_name|add_header [^\n]*\$|set )\b", snippet, re.M)
    locations = _snippet_locations(snippet)
    heads = [key for key in locations if not key[1].startswith("@")]
    assert heads == [("=" if r["match"]["kind"] == "exact" else "^~", r["match"]["path"]) for r in vhost["routes"]]
    for route in vhost["routes"]:
        body = locations[("=" if route["match"]["kind"] == "exact" else "^~", route["match"]["path"])]
        assert f"# {' '.join(route['behaviours'])} {route['id']}\nlocation " in snippet
        if route["action"] == "static":
            assert _raw_check(body) == (route["match"]["raw_regex"], 404)
            assert "error_page 404 @mxedge_matrix_snippet_404;" in body
            assert f"alias /etc/nginx/mxedge-matrix/static/{route['id']};" in body
            assert f"default_type {route['content_type']};" in body
            assert ('add_header Access-Control-Allow-Origin "*" always;' in body) == route["cors"]
        else:
            assert f"error_page {route['status']} @mxedge_matrix_snippet_{route['status']};" in body
            assert re.search(rf"^\s*return {route['status']};", body, re.M)
    # The named error locations answer the table's JSON with CORS (MX11).
    for status in ("403", "404"):
        named = re.search(rf"^location @mxedge_matrix_snippet_{status} \{{\n(.*?)^\}}", snippet, re.M | re.S).group(1)
        returned = re.search(r'return (\d+) "((?:[^"\\]|\\.)*)";', named)
        assert (returned.group(1), _nginx_unquote(returned.group(2))) == (status, variant["derived"]["routes"]["errors"][status]["body"])
        assert "default_type application/json;" in named and 'add_header Access-Control-Allow-Origin "*" always;' in named


# --- Synapse workers (MX16): regex routes nested in the homeserver's prefix location, pools, stickiness, fallback ---

WORKER_VARIANTS = [name for name, variant in VARIANTS.items() if variant[0].get("matrix_workers")]


def _table_routes(variant, kind=None):
    """[(listener, route)] of the served listeners, optionally of one match kind."""
    return [(vhost, route) for vhost in _served(variant) for route in vhost["routes"]
            if kind is None or route["match"]["kind"] == kind]


def _upstream_blocks(text):
    """{block name: body text} of the http-level upstream blocks."""
    return dict(re.findall(r"^upstream (\S+) \{\n(.*?)^\}", text, re.M | re.S))


def _maps(text):
    """{variable: ([(regex nginx compiles, value)], default)} of the http-level maps with regex entries."""
    found = {}
    for variable, body in re.findall(r"^map \S+ (\$\S+) \{\n(.*?)^\}", text, re.M | re.S):
        entries = [(_nginx_unquote(regex), value) for regex, value in re.findall(r'^\s+"~((?:[^"\\]|\\.)*)"\s+(\S+);', body, re.M)]
        default = re.search(r"^\s+default\s+(\S+);", body, re.M)
        found[variable] = (entries, default.group(1) if default else None)
    return found


def _pcre(regex):
    """A PCRE regex of the table as Python's re reads it (the same syntax here)."""
    return re.compile(regex)


def _nginx_worker_answer(variant, vhost, raw, method="GET"):
    """Which upstream block nginx forwards `method raw` to on the table's listener `vhost` (a status when it answers
    itself): exact, else the longest prefix location; in it, the nested regex locations in order (MX16)."""
    block = _vhost_block(variant, vhost)
    uri = _normalise(raw)
    if uri is None:
        return 404
    locations = _locations(block)
    body = locations.get(("=", uri))
    key = ("=", uri)
    if body is None:
        prefixes = [k for k in locations if k[0] in ("^~", "") and uri.startswith(k[1])]
        key = max(prefixes, key=lambda k: len(k[1]))
        body = locations[key]
        for regex, inner in _regex_locations(_full_location(block, *key)) if key[0] == "^~" else []:
            if _pcre(regex).search(uri):
                body = inner
                break
    check = _raw_check(body)
    if check and not re.search(check[0], raw):
        return check[1]
    target = re.search(r"proxy_pass http://(\S+);", body)
    if not target:
        return int(re.search(r"return (\d+)", body).group(1))
    if target.group(1).startswith("$"):
        entries, default = _maps(variant["matrix"])[target.group(1)]
        return next((value for regex, value in entries if _pcre(regex).search(f"{method}:{uri}")), default)
    return target.group(1)


@pytest.mark.parametrize("name", WORKER_VARIANTS)
def test_worker_routes_are_regex_locations_nested_in_order_in_the_homeservers_prefix(rendered, name):
    """MX16: nginx checks the regex locations nested in the prefix location it picked, in the order written, before
    that location's own directives; an earlier ^~ route with a longer path (MAS, the admin API) still wins."""
    variant = rendered[name]
    for vhost in _served(variant):
        regex_routes = [r for r in vhost["routes"] if r["match"]["kind"] == "regex"]
        if not regex_routes:
            continue
        block = _vhost_block(variant, vhost)
        host = _host_route(vhost, regex_routes[0])
        assert host["upstream"] == "homeserver" and host["match"]["path"] == "/_matrix"
        assert all(_host_route(vhost, r) is host for r in regex_routes)
        nested = _regex_locations(_full_location(block, "^~", "/_matrix"))
        assert [regex for regex, _body in nested] == [r["match"]["pattern"] for r in regex_routes]
        # No regex location at server level: the operator's or nginx's order there cannot take a Matrix path.
        assert not re.search(r"^ {4}location ~", block, re.M)


WORKER_REQUESTS = [
    # (variant, listener, method, raw URI, upstream block nginx forwards to)
    ("workers_readers", "client", "GET", "/_matrix/client/v3/sync?since=s1&timeout=30000", "mxedge_workers_sync_by_user"),
    ("workers_readers", "client", "GET", "/_matrix/client/r0/sync", "mxedge_workers_sync_by_user"),
    ("workers_readers", "client", "GET", "/_matrix/client/v3/rooms/!r:example.test/messages?dir=b", "mxedge_workers_room_messages"),
    ("workers_readers", "client", "GET", "/_matrix/client/v3/joined_rooms", "mxedge_workers_client_reader"),
    ("workers_readers", "client", "GET", "/_matrix/client/v3/presence/@a:example.test/status", "mxedge_workers_presence"),
    # GET-only without a presence writer: other methods go on to the next route, the homeserver's /_matrix.
    ("workers_readers", "client", "PUT", "/_matrix/client/v3/presence/@a:example.test/status", "mxedge_homeserver"),
    ("workers_readers", "client", "GET", "/_matrix/client/v3/pushrules/global/", "mxedge_workers_push_rules"),
    ("workers_readers", "client", "PUT", "/_matrix/client/v3/pushrules/global/room/x", "mxedge_homeserver"),
    ("workers_readers", "client", "GET", "/_matrix/client/v3/user/@a:example.test/account_data/m.x", "mxedge_workers_account_data"),
    ("workers_readers", "client", "PUT", "/_matrix/client/v3/user/@a:example.test/account_data/m.x", "mxedge_homeserver"),
    ("workers_readers", "client", "POST", "/_matrix/client/v3/keys/upload", "mxedge_workers_device_lists"),
    ("workers_readers", "client", "GET", "/_matrix/client/v3/login", "mxedge_workers_client_reader"),
    # Not a worker endpoint (no event creator here): the main process.
    ("workers_readers", "client", "PUT", "/_matrix/client/v3/rooms/!r:example.test/send/m.room.message/t1", "mxedge_homeserver"),
    ("workers_readers", "client", "GET", "/_matrix/client/v3/sync/extra", "mxedge_homeserver"),
    # MX04: a raw URI that only normalises to a worker route is refused.
    ("workers_readers", "client", "GET", "/_matrix/client/v3/x/%2E%2E/sync", 404),
    ("workers_readers", "client", "GET", "/_synapse/admin/v1/%2E%2E/%2E%2E/_matrix/client/v3/sync", 404),
    ("workers_readers", "federation", "PUT", "/_matrix/federation/v1/send/t1", "mxedge_workers_federation_inbound"),
    ("workers_readers", "federation", "GET", "/_matrix/federation/v1/event/$e", "mxedge_workers_federation_reader"),
    ("workers_readers", "federation", "GET", "/_matrix/key/v2/query/example.test", "mxedge_workers_federation_reader"),
    ("workers_readers", "federation", "GET", "/_matrix/client/v3/sync", "mxedge_homeserver"),  # client endpoints stay off it
    # one_of_each, single port, MAS: MAS's login wins over the client reader's; the writers take their streams.
    ("workers_one_of_each_mas", "client", "GET", "/_matrix/client/v3/login", "mxedge_mas"),
    ("workers_one_of_each_mas", "client", "POST", "/_matrix/client/r0/logout/all", "mxedge_mas"),
    ("workers_one_of_each_mas", "client", "PUT", "/_matrix/client/v3/rooms/!r:example.test/typing/@a:example.test", "mxedge_workers_typing"),
    ("workers_one_of_each_mas", "client", "PUT", "/_matrix/client/v3/rooms/!r:example.test/send/m.room.message/t1", "mxedge_workers_event_creation"),
    ("workers_one_of_each_mas", "client", "PUT", "/_matrix/client/v3/presence/@a:example.test/status", "mxedge_workers_presence"),
    ("workers_one_of_each_mas", "client", "GET", "/_matrix/media/v3/download/example.test/abc", "mxedge_workers_media"),
    ("workers_one_of_each_mas", "client", "GET", "/_matrix/client/v1/media/download/example.test/abc", "mxedge_workers_media"),
    ("workers_one_of_each_mas", "client", "PUT", "/_matrix/federation/v1/send/t1", "mxedge_workers_federation_inbound"),
    ("workers_one_of_each_mas", "client", "GET", "/_matrix/federation/v1/media/download/abc", "mxedge_workers_media"),
    ("workers_one_of_each_mas", "client", "GET", "/_synapse/client/x", "mxedge_homeserver"),
]


@pytest.mark.parametrize("name,listener,method,raw,expected", WORKER_REQUESTS)
def test_worker_requests_reach_the_table_s_route(rendered, name, listener, method, raw, expected):
    """MX16, MX04: nginx's pick (emulated from the rendered text) is the table's first matching route's upstream."""
    from ansible_collections.mxedge.matrix.plugins.module_utils.matrix_routes import routes_to  # pylint: disable=import-outside-toplevel

    variant = rendered[name]
    vhost = _table_vhost(variant, listener)
    assert _nginx_worker_answer(variant, vhost, raw, method) == expected
    route = routes_to(variant["derived"]["routes"], listener, _normalise(raw))
    if isinstance(expected, str) and route["action"] == "forward" and method in (route["match"]["methods"] or [method]):
        assert expected == _upstream_block(variant, route)  # the table's own answer (methods aside: routes_to has none)


@pytest.mark.parametrize("name", WORKER_VARIANTS)
def test_worker_pools_are_upstream_blocks_per_sticky_key(rendered, name):
    """MX16: one block per pool and sticky key (nginx hashes per block); passive health; a zone shares it."""
    variant = rendered[name]
    table = variant["derived"]["routes"]
    blocks = _upstream_blocks(variant["matrix"])
    fail_timeout = VARIANTS[name][0].get("nginx_synapse_worker_fail_timeout", _role_default("nginx_synapse_worker_fail_timeout"))
    for pool in (p for p in table["upstreams"] if p["fallback"]):
        assert pool["fallback"] == "homeserver" and pool["health_path"] == "/health"
        keys = {r["policy"]["sticky"] for _v, r in _table_routes(variant) if r.get("upstream") == pool["name"]}
        names = {_upstream_block(variant, r) for _v, r in _table_routes(variant) if r.get("upstream") == pool["name"]}
        assert names <= set(blocks) and len(names) == (len(keys) if len(pool["servers"]) > 1 else 1)
        for block_name in names:
            body = blocks[block_name]
            servers = re.findall(r"^\s+server (\S+) max_fails=1 fail_timeout=(\d+)s;", body, re.M)
            assert servers == [(s["endpoint"], str(fail_timeout)) for s in pool["servers"]]
            assert "backup" not in body and f"zone {block_name} 64k;" in body
            sticky = block_name.rpartition("_by_")[2] if "_by_" in block_name else None
            hashed = re.findall(r"^\s+hash (\S+) consistent;", body, re.M)
            assert hashed == ([{"user": "$mxedge_sticky_user", "room": "$mxedge_sticky_room", "source": "$remote_addr"}[sticky]]
                              if sticky else [])
            assert pool["balance"] == ("roundrobin" if len(pool["servers"]) > 1 else "first")
            # The balancing directive comes before keepalive (nginx requires it).
            assert body.index("keepalive") > max(body.find("hash"), body.find("zone"))
    # The homeserver's pool is as before: no hash, no zone.
    assert "hash" not in blocks["mxedge_homeserver"] and "zone" not in blocks["mxedge_homeserver"]


@pytest.mark.parametrize("name", WORKER_VARIANTS)
def test_sticky_keys_hash_what_the_table_says(rendered, name):
    """MX16: user = the Authorization header, else the access_token query parameter; room = the table's regex's first
    group on the normalised path, else the whole path; source = the client address."""
    variant = rendered[name]
    table = variant["derived"]["routes"]
    text = variant["matrix"]
    used = {r["policy"]["sticky"] for _v, r in _table_routes(variant, "regex")
            if len(next(p for p in table["upstreams"] if p["name"] == r["upstream"])["servers"]) > 1}
    user = re.search(r"^map \$http_authorization \$mxedge_sticky_user \{\n(.*?)^\}", text, re.M | re.S)
    assert bool(user) == ("user" in used)
    if user:
        assert table["sticky"]["user"] == {"header": "Authorization", "query": "access_token"}
        assert re.findall(r"^\s+(\S+)\s+(\S+);", user.group(1), re.M) == [('""', "$arg_access_token"),
                                                                          ("default", "$http_authorization")]
    room = _maps(text).get("$mxedge_sticky_room")
    assert bool(room) == ("room" in used)
    if room:
        assert room == ([(table["sticky"]["room"]["regex"], "$1")], "$uri")


def test_room_stickiness_map_is_rendered_for_a_pool_of_several_servers(rendered):
    """The readers layout has no room-sticky pool of two workers; the live variant has (event creators, room messages)."""
    variant = rendered["workers_live"]
    entries, default = _maps(variant["matrix"])["$mxedge_sticky_room"]
    assert default == "$uri" and len(entries) == 1
    pattern = _pcre(entries[0][0])
    assert pattern.search("/_matrix/client/v3/rooms/!abc:example.test/send/m.room.message/1").group(1) == "!abc:example.test"
    assert pattern.search("/_matrix/client/v3/join/#room:example.test").group(1) == "#room:example.test"


@pytest.mark.parametrize("name", WORKER_VARIANTS)
def test_worker_routes_fall_back_to_the_main_process_only_on_nginx_s_own_errors(rendered, name):
    """MX16: error_page 502 504 to a named location proxying to the homeserver; the other errors stay the table's (MX11);
    no proxy_intercept_errors (a worker's own 502 passes through); the fallback only when no worker got the request."""
    variant = rendered[name]
    errors = variant["derived"]["routes"]["errors"]
    for vhost, route in _table_routes(variant, "regex"):
        block = _vhost_block(variant, vhost)
        body = _route_body(block, vhost, route)
        fallback = f"@mxedge_fallback_homeserver_{route['policy']['timeout']}"
        assert f"error_page 502 504 = {fallback};" in body and "recursive_error_pages on;" in body
        for status in (s for s in errors if s not in ("502", "504")):
            assert f"error_page {status} @mxedge_error_{status};" in body
        assert "error_page 400 =404 /.mxedge-internal/unparsed;" in body
        named = _locations(block)[("", fallback)]
        assert "proxy_pass http://mxedge_homeserver;" in named
        assert re.findall(r"if \(\$mxedge_worker_failed = (\d+)\) \{\s*return (\d+);", named) == [("504", "504"), ("502", "502")]
        assert f"proxy_read_timeout {_role_default('nginx_proxy_timeout')}s;" in named
    assert not re.search(r"^\s*proxy_intercept_errors", variant["matrix"] + variant["errors"], re.M)
    failed = re.search(r'^map "\$upstream_connect_time\|\$upstream_status" \$mxedge_worker_failed \{\n(.*?)^\}',
                       variant["matrix"], re.M | re.S)
    entries = [(_nginx_unquote(k), v) for k, v in re.findall(r'^\s+"~((?:[^"\\]|\\.)*)"\s+(\S+);', failed.group(1), re.M)]

    def decide(connect_times, statuses):
        key = f"{connect_times}|{statuses}"
        return next((v for k, v in entries if re.search(k, key)), "default")

    assert decide("-, -", "502, 502") == '""'  # both workers refused: the main process answers
    assert decide("-", "502") == '""'  # no live worker (all marked down)
    assert decide("0.001, -", "504, 502") == '""'  # the last worker tried was never reached
    assert decide("0.001", "504") == "504"  # a worker took it and timed out: never resent
    assert decide("0.000", "502") == "default"  # a worker took it and failed: 502


def test_method_restricted_routes_are_rendered_only_with_a_writer_missing(rendered):
    """MX16: the readers layout has GET-only classes (no account_data, presence, push_rules writer); one_of_each none."""
    readers = {r["id"] for _v, r in _table_routes(rendered["workers_readers"], "regex") if r["match"]["methods"]}
    assert readers == {"workers-account-data", "workers-presence", "workers-push-rules"}
    assert not [r for _v, r in _table_routes(rendered["workers_one_of_each_mas"], "regex") if r["match"]["methods"]]


def test_capabilities_declare_what_the_template_renders():
    import yaml  # pylint: disable=import-outside-toplevel

    capabilities = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["_nginx_capabilities"]
    assert capabilities["regex"] is True and capabilities["fallback"] is True and capabilities["methods"] is True
    assert capabilities["sticky"] == ["user", "room", "source"]
    assert set(capabilities["balance"]) == {"first", "roundrobin"} and capabilities["pool_servers"] == 0


# --- live: nginx on loopback, stand-ins for the main process and two workers per pool (MX16) ---

LIVE_HOST = "127.0.2.1"  # nginx listens here; the stand-ins on the variant's 127.0.2.10-12
CLOSE_MARK = "close-without-answer"


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every request with {"server": <name>} and records it (HTTP/1.0: one request per connection, so a stopped
    stand-in has no connection nginx could reuse). A target with CLOSE_MARK in it is recorded and the connection closed
    without an answer: a worker that took the request and then failed."""

    protocol_version = "HTTP/1.0"

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.records.append({"server": self.server.name, "method": self.command, "target": self.path,
                                    "headers": dict(self.headers.items())})
        if CLOSE_MARK in self.path:
            self.close_connection = True
            return
        body = json.dumps({"server": self.server.name}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = _answer

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        pass


class _Standin:
    """One upstream (the main process or a worker) that the test starts and stops."""

    def __init__(self, name, address, port, records):
        self.name, self.address, self.port, self.records = name, address, port, records
        self.server = None

    def start(self):
        self.server = http.server.ThreadingHTTPServer((self.address, self.port), _Recorder)
        self.server.name, self.server.records, self.server.daemon_threads = self.name, self.records, True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.server = None


def _free_port(address):
    with socket.socket() as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


class _Live:
    """nginx started on loopback from the workers_live tree, and the stand-ins of its upstreams."""

    def __init__(self, variant, tree, tmp):
        self.variant, self.records, self.standins, self.proc = variant, [], {}, None
        self.dirty = False  # a test made nginx hold workers down (fail_timeout)
        table = variant["derived"]["routes"]
        self.ports = {vhost["name"]: _free_port(LIVE_HOST) for vhost in _served(variant)}
        for pool in table["upstreams"]:
            for server in pool["servers"]:
                self.standins.setdefault(server["name"], _Standin(server["name"], server["address"], server["port"], self.records))
        self.pools = {pool["name"]: {server["name"] for server in pool["servers"]} for pool in table["upstreams"]}
        key, cert = _test_certificate(tmp)
        (tree / "mime.types").write_text("types { application/json json; }\n")
        main = (tree / "nginx.conf").read_text()
        main = re.sub(r"^user [^;]+;\n", "", main, flags=re.M)
        main = re.sub(r"^worker_processes [^;]+;", "worker_processes 2;", main, flags=re.M)
        main = re.sub(r"^pid [^;]+;", f"pid {tmp}/nginx.pid;", main, flags=re.M)
        main = re.sub(r"^(\s*)(error_log|access_log) [^;]+;", rf"\1\2 {tmp}/\2.log;", main, flags=re.M)
        (tree / "nginx.conf").write_text(main)
        conf = tree / "mxedge" / "matrix.conf"
        text = re.sub(r"(ssl_certificate) \S+;", rf"\1 {cert};", conf.read_text())
        text = re.sub(r"(ssl_certificate_key) \S+;", rf"\1 {key};", text)
        text = re.sub(r"access_log \S+ mxedge_matrix;", f"access_log {tmp}/matrix-access.log mxedge_matrix;", text)
        for vhost in _served(variant):
            text = re.sub(rf"^(\s*)listen {vhost['port']} ssl", rf"\1listen {LIVE_HOST}:{self.ports[vhost['name']]} ssl", text, flags=re.M)
        conf.write_text(text)
        self.conf = tree / "nginx.conf"

    def start(self):
        for standin in self.standins.values():
            standin.start()
        self.proc = subprocess.Popen(["nginx", "-c", str(self.conf), "-g", "daemon off;"],  # pylint: disable=consider-using-with
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("nginx did not start: " + self.proc.stderr.read())
            try:
                socket.create_connection((LIVE_HOST, self.ports["client"]), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("nginx did not listen within 20 s")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        for standin in self.standins.values():
            if standin.server:
                standin.stop()

    def request(self, listener, method, raw, headers=None, source=None):
        """(status, the stand-in that answered or None, its record) of one request through nginx."""
        mark = len(self.records)
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        conn = http.client.HTTPSConnection(LIVE_HOST, self.ports[listener], context=context, timeout=30,
                                           source_address=(source, 0) if source else None)
        try:
            conn.request(method, raw, body=b"{}" if method in ("PUT", "POST") else None,
                         headers=dict({"Host": "matrix.example.test"}, **(headers or {})))
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        answered = json.loads(body).get("server") if response.status == 200 else None
        new = self.records[mark:]
        if CLOSE_MARK not in raw:
            assert len(new) == (1 if answered else 0), new
        return response.status, answered, new[0] if new else None

    def records_since(self, mark):
        return self.records[mark:]


@pytest.fixture(scope="module")
def live(rendered, tmp_path_factory):
    nginx = daemon_checks.nginx_for(VARIANTS["workers_live"][1], False)
    if nginx is None or nginx.image:
        pytest.skip("the live test starts this machine's nginx (as root); scripts/bootstrap.sh ensure_unit_daemons installs it")
    tmp = tmp_path_factory.mktemp("nginx-live")
    tree = tmp / "nginx"
    shutil.copytree(rendered["workers_live"]["dir"], tree)
    running = _Live(rendered["workers_live"], tree, tmp)
    daemon_checks.record(f"nginx {nginx.version} ({nginx.where}): started on loopback")
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture
def healthy(live):
    """Every stand-in up, and nginx no longer holding a failure of one against it (fail_timeout), whatever ran before."""
    restarted, live.dirty = live.dirty, False
    for standin in live.standins.values():
        if not standin.server:
            standin.start()
            restarted = True
    if restarted:
        # nginx compares whole seconds: a worker failed at 10.9 s is still held down at 11.9 s with fail_timeout 1.
        time.sleep(VARIANTS["workers_live"][0]["nginx_synapse_worker_fail_timeout"] + 1.5)
    return live


LIVE_REQUESTS = [
    # (listener, method, raw URI, pool whose servers answer: a worker pool, or homeserver for the main process)
    ("client", "GET", "/_matrix/client/v3/sync?timeout=0&since=s1_2", "workers_sync"),
    ("client", "GET", "/_matrix/client/r0/initialSync", "workers_sync"),
    ("client", "PUT", "/_matrix/client/v3/rooms/!a:matrix.example.test/send/m.room.message/t1", "workers_event_creation"),
    ("client", "POST", "/_matrix/client/v3/join/%23room:matrix.example.test", "workers_event_creation"),
    ("client", "GET", "/_matrix/client/v3/rooms/!a:matrix.example.test/messages?dir=b&from=t%2F1", "workers_room_messages"),
    ("client", "GET", "/_matrix/client/v3/publicRooms", "workers_client_reader"),
    ("client", "POST", "/_matrix/client/v3/keys/upload", "workers_device_lists"),
    ("client", "GET", "/_matrix/client/v3/presence/@a:matrix.example.test/status", "workers_presence"),
    ("client", "GET", "/_matrix/client/v3/pushrules/", "workers_push_rules"),
    ("client", "GET", "/_matrix/client/v3/user/@a:matrix.example.test/account_data/m.direct", "workers_account_data"),
    # GET-only classes: their other methods, and what no class takes, reach the main process.
    ("client", "PUT", "/_matrix/client/v3/presence/@a:matrix.example.test/status", "homeserver"),
    ("client", "PUT", "/_matrix/client/v3/user/@a:matrix.example.test/account_data/m.direct", "homeserver"),
    ("client", "POST", "/_matrix/client/v3/logout", "homeserver"),
    ("client", "GET", "/_matrix/client/v3/sync/x", "homeserver"),
    ("client", "GET", "/_synapse/client/password_reset", "homeserver"),
    ("client", "GET", "/health", "homeserver"),
    ("federation", "PUT", "/_matrix/federation/v1/send/txn1", "workers_federation_inbound"),
    ("federation", "GET", "/_matrix/federation/v1/version", "homeserver"),  # no federation reader here
]


@pytest.mark.parametrize("listener,method,raw,pool", LIVE_REQUESTS)
def test_live_each_class_reaches_its_pool_and_the_main_process_none_of_them(healthy, listener, method, raw, pool):
    """MX16 live: the class's pool answers (the main process only what no worker class takes), with the raw URI (MX04),
    forwarded headers overwritten and the request ID set (MX05)."""
    status, answered, record = healthy.request(listener, method, raw, {"X-Forwarded-For": "203.0.113.9"})
    assert status == 200 and answered in healthy.pools[pool], (answered, pool)
    assert record["target"] == raw and record["method"] == method
    assert record["headers"]["X-Forwarded-For"].startswith("127.") and record["headers"]["X-Forwarded-Proto"] == "https"
    assert re.fullmatch(r"[0-9a-f]{32}", record["headers"]["X-Request-ID"])


STICKY_CASES = [
    # (sticky key, listener, method, URI template, what varies: header, source or path)
    ("user", "client", "GET", "/_matrix/client/v3/sync?timeout=0", "authorization"),
    ("user", "client", "GET", "/_matrix/client/v3/sync?timeout=0&access_token={key}", "query"),
    ("room", "client", "PUT", "/_matrix/client/v3/rooms/!{key}:matrix.example.test/send/m.room.message/t{n}", "path"),
    ("room", "client", "GET", "/_matrix/client/v3/rooms/!{key}:matrix.example.test/messages?from=p{n}", "path"),
    ("source", "federation", "PUT", "/_matrix/federation/v1/send/t{n}", "source"),
]


@pytest.mark.parametrize("sticky,listener,method,template,varies", STICKY_CASES)
def test_live_the_same_key_reaches_the_same_worker_and_keys_spread(healthy, sticky, listener, method, template, varies):
    """MX16 live: user (Authorization, else access_token), room, source: one worker per key, both workers over 16 keys."""
    chosen = {}
    for index in range(16):
        key = f"k{index}x"
        answered = set()
        for number in range(3):
            headers = {"Authorization": f"Bearer {key}"} if varies == "authorization" else {}
            source = f"127.0.3.{index + 1}" if varies == "source" else None
            status, server, _record = healthy.request(listener, method, template.format(key=key, n=number), headers, source)
            assert status == 200
            answered.add(server)
        assert len(answered) == 1, (sticky, key, answered)
        chosen[key] = answered.pop()
    pool = next(name for name, servers in healthy.pools.items() if set(chosen.values()) <= servers and name != "homeserver")
    assert len(healthy.pools[pool]) == 2 and set(chosen.values()) == healthy.pools[pool], chosen


FALLBACK_CASES = [
    # (pool, listener, method, raw URI)
    ("workers_sync", "client", "GET", "/_matrix/client/v3/sync?timeout=0"),
    ("workers_event_creation", "client", "PUT", "/_matrix/client/v3/rooms/!f:matrix.example.test/send/m.room.message/t1"),
    ("workers_presence", "client", "GET", "/_matrix/client/v3/presence/@a:matrix.example.test/status"),
    ("workers_federation_inbound", "federation", "PUT", "/_matrix/federation/v1/send/tf"),
]


@pytest.mark.parametrize("pool,listener,method,raw", FALLBACK_CASES)
def test_live_the_main_process_answers_while_every_worker_of_the_pool_is_down(healthy, pool, listener, method, raw):
    """MX16 live: every worker of the pool stopped: the main process answers (the URI as sent); one restarted: after
    nginx_synapse_worker_fail_timeout the pool answers again, and the main process no more."""
    workers = sorted(healthy.pools[pool])
    for name in workers:
        healthy.standins[name].stop()
    for attempt in range(3):  # the first finds the workers refusing; then nginx holds them down
        status, answered, record = healthy.request(listener, method, raw)
        assert (status, answered) == (200, "main"), attempt
        assert record["target"] == raw
    healthy.standins[workers[-1]].start()
    deadline = time.monotonic() + 10
    while True:
        status, answered, _record = healthy.request(listener, method, raw)
        assert status == 200
        if answered == workers[-1]:
            break
        assert answered == "main" and time.monotonic() < deadline, answered
        time.sleep(0.2)
    for attempt in range(3):
        assert healthy.request(listener, method, raw)[:2] == (200, workers[-1]), attempt


def test_live_a_pool_answers_the_table_s_502_when_the_main_process_is_down_too(healthy):
    """MX11 after MX16: nothing answers: the table's JSON 502 with CORS and Retry-After, from nginx."""
    stopped = sorted(healthy.pools["workers_sync"]) + ["main"]
    for name in stopped:
        healthy.standins[name].stop()
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    conn = http.client.HTTPSConnection(LIVE_HOST, healthy.ports["client"], context=context, timeout=30)
    try:
        conn.request("GET", "/_matrix/client/v3/sync", headers={"Host": "matrix.example.test"})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    assert response.status == 502
    assert json.loads(body) == json.loads(healthy.variant["derived"]["routes"]["errors"]["502"]["body"])
    assert response.getheader("Access-Control-Allow-Origin") == "*" and response.getheader("Retry-After") == "5"


@pytest.mark.parametrize("raw", ISSUE_18)
@pytest.mark.parametrize("name", WORKER_VARIANTS)
def test_no_admin_bypass_through_a_worker_route(rendered, name, raw):
    """MX04, MX06 with the worker routes nested in /_matrix: nothing that names the admin API raw is forwarded."""
    variant = rendered[name]
    assert _nginx_worker_answer(variant, _table_vhost(variant, "client"), raw) in (403, 404), raw


RECEIVED_CASES = [
    # (pool, listener, method, raw URI, how many of the pool's workers get it: nginx passes an idempotent request to
    # the next worker after an error, never a non-idempotent one that a worker received)
    ("workers_sync", "client", "GET", f"/_matrix/client/v3/sync?{CLOSE_MARK}", 2),
    ("workers_event_creation", "client", "PUT", f"/_matrix/client/v3/rooms/!c:matrix.example.test/send/m.room.message/{CLOSE_MARK}", 2),
    # POST is what nginx holds non-idempotent (with LOCK and PATCH; PUT is idempotent in HTTP).
    ("workers_event_creation", "client", "POST", f"/_matrix/client/v3/join/!c:matrix.example.test?{CLOSE_MARK}", 1),
]


@pytest.mark.parametrize("pool,listener,method,raw,received", RECEIVED_CASES)
def test_live_a_request_a_worker_received_is_never_resent_to_the_main_process(healthy, pool, listener, method, raw, received):
    """MX16 live: the fallback is for a pool that is down, not for a worker that took the request and failed: the
    table's 502 (MX11), and the main process never runs it a second time."""
    healthy.dirty = True  # the failures hold the workers down for fail_timeout
    mark = len(healthy.records)
    status, answered, _record = healthy.request(listener, method, raw)
    assert (status, answered) == (502, None)
    got = [entry["server"] for entry in healthy.records_since(mark)]
    assert "main" not in got and len(got) == received and set(got) <= healthy.pools[pool], got
