"""Render tests for roles/caddy: its Caddyfile template, rendered by Ansible for several variable sets.

One ansible-playbook run (localhost, connection local, no Caddy needed) derives the shared facts
with the real mxedge.matrix.matrix role for each variable set, runs the caddy role's preflight and
renders the Caddyfile with the role's own defaults and vars. The tests then read the rendered text.
When a caddy binary is on PATH, each Caddyfile is also adapted to JSON with `caddy adapt` (which
needs no certificate files) and compared with `caddy fmt`, and the JSON is checked for what must
never be in it (certificate automation, ACME issuers) and for the well-known bytes.
"""

import json
import pathlib
import re
import shutil
import subprocess

import pytest
from render import render

ROOT = pathlib.Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles" / "caddy"

BASE = {
    "matrix_tls_certificate": "/etc/ssl/mxedge-test/fullchain.pem",
    "matrix_tls_certificate_key": "/etc/ssl/mxedge-test/privkey.pem",
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
          'placement': _matrix_well_known_placement, 'upstream': _caddy_upstream,
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


def _respond_bodies(block):
    """The well-known bodies of a site as Caddy serves them: the backtick token, with the
    replacer's escapes (a backslash before a brace) removed."""
    bodies = {}
    for kind, raw in re.findall(r"handle @mxedge_matrix_well_known_(\w+) \{[^`]*respond `([^`]*)` 200", block):
        bodies[kind] = re.sub(r"\\([{}])", r"\1", raw)
    return bodies


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
    upstream = _blocks(text)["(mxedge_matrix_upstream)"]
    assert not re.search(r"^\s*(rewrite|uri|handle_path|header_up X-Forwarded-For)\b", text, re.M)
    assert not re.search(r"^\s*trusted_proxies", text, re.M)  # Caddy then replaces X-Forwarded-* itself
    assert "header_up -Forwarded" in upstream and "header_up X-Real-IP {remote_host}" in upstream
    header = VARIANTS[name].get("matrix_request_id_header", "X-Request-ID")
    assert f"header_up {header} {{http.request.uuid}}" in upstream
    assert "versions 1.1" in upstream
    assert int(re.search(r"read_timeout (\d+)s", upstream).group(1)) >= 180
    assert f"reverse_proxy {rendered[name]['upstream']} {{" in upstream
    site = _blocks(text)["(mxedge_matrix_site)"]
    assert f"max_size {rendered[name]['max_body']}" in site


@pytest.mark.parametrize("name", VARIANTS)
def test_forwarding_routes_also_check_the_raw_uri(rendered, name):
    for head, body in _blocks(rendered[name]["caddyfile"]).items():
        if not head.startswith("https://") or "import mxedge_matrix_upstream" not in body:
            continue
        forward = re.search(r"@mxedge_matrix_forward \{\n(.*?)\n\t\}", body, re.S).group(1)
        assert "path /_matrix /_matrix/*" in forward
        assert "expression `{http.request.uri}.matches(r\"^(?:/_matrix" in forward


def test_delegated_layout(rendered):
    variant = rendered["delegated"]
    assert variant["placement"] == "separate"
    blocks = _blocks(variant["caddyfile"])
    client, federation, well_known = (blocks["https://matrix.example.test:443"], blocks["https://:8448"],
                                      blocks["https://example.test:443"])
    assert "bind tcp4/0.0.0.0 tcp6/[::]" in blocks["(mxedge_matrix_site)"]
    assert "/_synapse/client /_synapse/client/* /health" in client
    assert "@mxedge_matrix_admin_denied not remote_ip 10.0.0.0/8 2001:db8::/32" in client
    assert "/_synapse/client" not in federation and "/health" not in federation
    assert re.search(r"handle @mxedge_matrix_admin \{\s*respond 403\s*\}", federation)
    assert "import mxedge_matrix_upstream" not in well_known
    assert "well_known" not in client and "well_known" not in federation
    assert _respond_bodies(well_known) == {"server": variant["server_body"], "client": variant["client_body"]}
    assert 'header Access-Control-Allow-Origin "*"' in well_known and "header Content-Type application/json" in well_known
    assert "health_uri /health" in blocks["(mxedge_matrix_upstream)"]


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
    assert re.search(r"@mxedge_matrix_admin path /_palpo/admin /_palpo/admin/\*\n\thandle @mxedge_matrix_admin \{\s*respond 403", client)
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
    assert client.index("handle @blocked") < client.index("handle @mxedge_matrix_admin")
    assert "header X-Federation yes" in federation and "X-Federation" not in client
    assert "well-known" not in text.split("# Routes match", 1)[1]
    assert "level WARN" in blocks[""] and "protocols h1 h2 h3" in blocks[""]
    assert blocks["http://127.0.0.1:8081"].strip() == "respond ok"
    upstream = blocks["(mxedge_matrix_upstream)"]
    assert "max_conns_per_host 8192" in upstream and "health_uri" not in upstream and "lb_try_duration" not in upstream
    assert "log {" not in blocks["(mxedge_matrix_site)"]


@pytest.mark.skipif(not shutil.which("caddy"), reason="needs the caddy binary")
@pytest.mark.parametrize("name", VARIANTS)
def test_caddy_adapts_it_without_acme_and_keeps_the_bytes(rendered, name):
    path = rendered[name]["path"]
    fmt = subprocess.run(["caddy", "fmt", str(path)], capture_output=True, text=True, check=False)
    assert fmt.returncode == 0 and fmt.stdout == path.read_text(), "not in caddy fmt's layout"
    proc = subprocess.run(["caddy", "adapt", "--adapter", "caddyfile", "--config", str(path)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert '"level":"warn"' not in proc.stderr, proc.stderr
    config = json.loads(proc.stdout)
    tls = config["apps"]["tls"]
    assert "automation" not in tls and "issuers" not in proc.stdout
    assert "acme" not in proc.stdout.replace('"/.well-known/acme-challenge/*"', "")
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
    challenge = re.search(r"handle /\.well-known/acme-challenge/\* \{(.*?)\n\t\}", body, re.S).group(1)
    # reverse_proxy keeps the Host header as sent.
    assert challenge.strip() == "reverse_proxy 127.0.0.1:8999"
    rest = re.search(r"\thandle \{(.*?)\n\t\}", body, re.S).group(1)
    assert rest.strip() == "redir https://{host}:8443{uri} 301"


@pytest.mark.skipif(not shutil.which("caddy"), reason="needs the caddy binary")
def test_caddy_adapts_the_acme_site_to_a_challenge_proxy_and_a_redirect(rendered):
    proc = subprocess.run(["caddy", "adapt", "--adapter", "caddyfile", "--config", str(rendered["acme_delegated_not_on_443"]["path"])],
                          capture_output=True, text=True, check=True)
    servers = json.loads(proc.stdout)["apps"]["http"]["servers"]
    (plain,) = [server for server in servers.values() if any(addr.endswith(":80") for addr in server["listen"])]
    assert sorted(plain["listen"]) == ["tcp4/0.0.0.0:80", "tcp6/[::]:80"]
    text = json.dumps(plain)
    assert '"dial": "127.0.0.1:8999"' in text
    assert '"Location": ["https://{http.request.host}:8443{http.request.uri}"]' in text
    assert "tls_connection_policies" not in plain
