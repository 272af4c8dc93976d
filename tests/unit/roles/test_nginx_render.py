"""Render tests for roles/nginx: its templates, rendered by Ansible for several variable sets.

One ansible-playbook run (localhost, connection local, no nginx needed) derives the shared
facts with the real mxedge.matrix.matrix role for each variable set and renders the nginx
role's templates into a temporary directory, with the role's own defaults and vars. The
tests then read the rendered text. Each rendered tree is also checked with `nginx -t`, the
role's own gate, by an nginx of the version it was rendered for: this machine's (as root) or
Debian 13's in a container (daemon_checks.py).
"""

import json
import pathlib
import re
import shutil
import subprocess

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


def _locations(block):
    """{(modifier, path): body text} of the location blocks directly inside a server block."""
    found, lines = {}, block.splitlines()
    for index, line in enumerate(lines):
        head = re.match(r"^ {4}location (=|\^~)? ?(\S+) \{$", line)
        if head:
            depth, body = 1, []
            for inner in lines[index + 1:]:
                code = inner.split("#", 1)[0]
                depth += code.count("{") - code.count("}")
                if depth == 0:
                    break
                body.append(inner)
            found[(head.group(1) or "", head.group(2))] = "\n".join(body)
    return found


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
    services = {f"http://mxedge_{pool}" for pool in ("mas", "rtc_jwt", "rtc_sfu")} if name == "services" else set()
    assert passes and set(passes) == {"http://mxedge_homeserver"} | challenge | services
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
        heads = [key for key in locations if key != ("", "/")]  # the listener's fallback
        assert heads == [("=" if r["match"]["kind"] == "exact" else "^~", r["match"]["path"]) for r in vhost["routes"]]
        for route in vhost["routes"]:
            body = locations[("=" if route["match"]["kind"] == "exact" else "^~", route["match"]["path"])]
            # The block names the behaviours the route implements (MXnn comment line above it).
            assert f"# {' '.join(route['behaviours'])} {route['id']}\n    location " in block
            if route["action"] == "forward":
                assert f"proxy_pass http://mxedge_{route['upstream']};" in body
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
        locations = _locations(_vhost_block(variant, vhost))
        for route in vhost["routes"]:
            body = locations[("=" if route["match"]["kind"] == "exact" else "^~", route["match"]["path"])]
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
        if name != "services":
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
            body = locations[("=" if route["match"]["kind"] == "exact" else "^~", route["match"]["path"])]
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
    assert tunnels == (1 if name == "services" else 0)
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
        locations = _locations(_vhost_block(variant, vhost))
        for route in vhost["routes"]:
            if route["action"] != "forward":
                continue
            body = locations[("=" if route["match"]["kind"] == "exact" else "^~", route["match"]["path"])]
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
