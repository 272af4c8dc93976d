"""Render tests for roles/nginx: its templates, rendered by Ansible for several variable sets.

One ansible-playbook run (localhost, connection local, no nginx needed) derives the shared
facts with the real mxedge.matrix.matrix role for each variable set and renders the nginx
role's templates into a temporary directory, with the role's own defaults and vars. The
tests then read the rendered text. When an nginx binary is on PATH and we are root, each
rendered tree is also checked with `nginx -t`, the role's own gate.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess

import pytest
from render import render

ROOT = pathlib.Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles" / "nginx"

BASE = {
    "matrix_tls_certificate": "/etc/ssl/mxedge-test/fullchain.pem",
    "matrix_tls_certificate_key": "/etc/ssl/mxedge-test/privkey.pem",
}

# name -> (variables, nginx version to pretend, OpenSSL version to pretend)
VARIANTS = {
    "delegated": (
        {
            "matrix_server_name": "example.test",
            "matrix_homeserver_fqdn": "matrix.example.test",
            "matrix_admin_allowed_networks": ["10.0.0.0/8", "2001:db8::/32"],
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
}

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
    - name: Pretend the host's IPv6 and nginx build of this variant (the latter as configure.yml derives it)
      ansible.builtin.set_fact:
        _matrix_ipv6: "{{{{ mx_ipv6 }}}}"
        __nginx_http2_directive: "{{{{ mx_nginx_version is version(_nginx_http2_directive_since, '>=') }}}}"
        __nginx_tls_curves: "{{{{ (_nginx_tls_curves_pq if mx_openssl_version is version(_nginx_mlkem_openssl_since, '>=') else [])
          + _nginx_tls_curves }}}}"
    - name: Write what the templates render to and the derived values, in one file per variant
      ansible.builtin.copy:
        dest: "{out}/{{{{ inventory_hostname }}}}.json"
        mode: "0644"
        content: "{{{{ {{'files': __render_files, 'placement': _matrix_well_known_placement,
          'disable_default_site': _nginx_disable_default_site | bool, 'upstream': _nginx_upstream_server,
          'client_body': _matrix_well_known_client_body}} | to_json }}}}"
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
        result[name] = {
            "dir": tree,
            "main": (tree / "nginx.conf").read_text(),
            "matrix": (tree / "mxedge" / "matrix.conf").read_text(),
            "derived": data,
        }
    return result


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


@pytest.mark.parametrize("name", VARIANTS)
def test_every_file_starts_with_the_managed_header(rendered, name):
    for key in ("main", "matrix"):
        assert rendered[name][key].startswith("#\n# Ansible managed"), key


@pytest.mark.parametrize("name", VARIANTS)
def test_proxy_pass_has_no_uri_part_and_forwarded_headers_are_overwritten(rendered, name):
    text = rendered[name]["matrix"]
    passes = re.findall(r"^\s*proxy_pass\s+([^;]+);", text, re.M)
    challenge = {"http://127.0.0.1:8999"} if name.startswith("acme") else set()
    assert passes and set(passes) == {"http://mxedge_homeserver"} | challenge
    assert "$proxy_add_x_forwarded_for" not in text
    for block in _servers(text):
        if "proxy_pass http://mxedge_homeserver" in block:
            assert "proxy_set_header X-Forwarded-For $remote_addr;" in block
            assert "proxy_set_header X-Forwarded-Proto $scheme;" in block
            assert 'proxy_set_header Connection "";' in block
            assert "proxy_http_version 1.1;" in block
            timeout = int(re.search(r"proxy_read_timeout (\d+)s;", block).group(1))
            assert timeout >= 180
            assert "rewrite" not in block  # a rewrite would make nginx re-encode the URI


@pytest.mark.parametrize("name", VARIANTS)
def test_main_config_includes_only_relative_paths(rendered, name):
    includes = re.findall(r"^\s*include\s+([^;]+);", rendered[name]["main"], re.M)
    assert "mxedge/*.conf" in includes and "sites-enabled/*" in includes
    assert all(not path.startswith("/") for path in includes), includes


@pytest.mark.parametrize("name", VARIANTS)
def test_tls_is_mozilla_intermediate(rendered, name):
    main = rendered[name]["main"]
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
    assert 'add_header Access-Control-Allow-Origin "*" always;' in well_known[0]
    assert "location = /.well-known/matrix/server" not in client
    assert "listen [::]:443 ssl http2;" in client and "listen [::]:8448 ssl http2;" in federation
    assert "http2 on;" not in text  # nginx 1.22 takes http2 on the listen line
    # client: both client prefixes, health, admin allow-list
    for prefix in ("/_matrix", "/_synapse/client"):
        assert f"location ^~ {prefix} {{" in client
    assert "location = /health {" in client
    admin = re.search(r"location \^~ /_synapse/admin \{(.*?)\}", client, re.S).group(1)
    assert "allow 10.0.0.0/8;" in admin and "allow 2001:db8::/32;" in admin and "deny all;" in admin
    # federation: /_matrix only, admin always 403
    assert "location ^~ /_synapse/client" not in federation and "location = /health" not in federation
    assert re.search(r"location \^~ /_synapse/admin \{\s*return 403;\s*\}", federation)
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
    assert re.search(r"location \^~ /_palpo/admin \{\s*return 403;\s*\}", client)
    assert "alias /etc/nginx/mxedge/well-known/server;" in client
    main = rendered["single_port_socket_palpo"]["main"]
    assert "ssl_ecdh_curve X25519MLKEM768:X25519:prime256v1:secp384r1;" in main


def test_same_host_not_on_443_gets_its_own_well_known_block(rendered):
    variant = rendered["same_host_not_on_443"]
    assert variant["derived"]["placement"] == "separate"
    assert variant["derived"]["upstream"] == "[::1]:8008"
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
    challenge = re.search(r"location \^~ /\.well-known/acme-challenge/ \{(.*?)\}", plain, re.S).group(1)
    assert "proxy_pass http://127.0.0.1:8999;" in challenge
    assert "proxy_set_header Host $mxedge_matrix_host;" in challenge
    # Everything else: to HTTPS on the client port, host without port, URI as sent.
    rest = re.search(r"location / \{(.*?)\}", plain, re.S).group(1)
    assert "return 301 https://$host:8443$request_uri;" in rest


def _version(text):
    return tuple(int(part) for part in text.split("."))


@pytest.mark.skipif(not shutil.which("nginx") or os.geteuid() != 0, reason="needs nginx and root")
@pytest.mark.parametrize("name", VARIANTS)
def test_nginx_accepts_the_rendered_tree(rendered, name, tmp_path):
    version = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False).stderr
    installed = _version(re.search(r"nginx/([0-9.]+)", version).group(1))
    wanted = _version(VARIANTS[name][1])
    if (installed >= (1, 25, 1)) != (wanted >= (1, 25, 1)):
        pytest.skip(f"variant pretends nginx {VARIANTS[name][1]}, this host has {version.strip()}")
    if "X25519MLKEM768" in rendered[name]["main"]:
        openssl = subprocess.run(["openssl", "version"], capture_output=True, text=True, check=False).stdout
        if not re.search(r"OpenSSL 3\.([5-9]|\d\d)", openssl):
            pytest.skip("variant pretends OpenSSL >= 3.5")
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
    proc = subprocess.run(["nginx", "-t", "-c", str(tree / "nginx.conf")], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
