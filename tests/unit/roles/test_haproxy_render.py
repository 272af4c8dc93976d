"""Render tests for roles/haproxy.

One ansible-playbook run on localhost (connection local; HAProxy itself is not needed)
loads the role for several variable sets: the real mxedge.matrix.matrix dependency derives
the shared facts, the role's preflight runs, and haproxy.cfg.j2 is rendered into a
temporary directory together with the files it reads (Lua helpers, well-known bodies).
The tests read the rendered text. With haproxy and openssl on PATH, every rendered
configuration is also put through `haproxy -c`, the role's own gate.
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
ROLE = ROOT / "roles" / "haproxy"
TLS = {
    "matrix_tls_certificate": "/etc/ssl/mxedge-test/fullchain.pem",
    "matrix_tls_certificate_key": "/etc/ssl/mxedge-test/privkey.pem",
}

VARIANTS = {
    # The e2e hs1: single port 443, delegated from example.test, admin allow-list.
    "delegated_single_port": {
        "matrix_server_name": "example.test",
        "matrix_homeserver_fqdn": "matrix.example.test",
        "matrix_federation_port": 443,
        "matrix_admin_allowed_networks": ["127.0.0.0/8", "2001:db8::/32"],
        "mx_ipv6": True,
    },
    # The e2e hs2: federation on 8448, no well-known.
    "separate_federation_no_well_known": {
        "matrix_server_name": "other.test",
        "matrix_well_known_serve": False,
        "mx_ipv6": False,
        "haproxy_federation_vhost_extra": "http-response set-header X-Federation yes",
    },
    # UNIX socket, Palpo, well-known inside the client vhost on a non-443 port.
    "socket_palpo_same_host": {
        "matrix_server_name": "matrix.example.test",
        "matrix_client_port": 8443,
        "matrix_homeserver_socket": "/run/palpo/palpo.sock",
        "matrix_homeserver_flavour": "palpo",
        "matrix_request_id_header": "X-Correlation-ID",
        "mx_ipv6": False,
        "haproxy_client_vhost_extra": "http-response set-header X-Client yes\n# second line\n",
        "haproxy_well_known_vhost_extra": "http-response set-header X-Well-Known yes",
    },
    # Federation on 443 next to the well-known vhost, clients on 8443.
    "federation_on_443": {
        "matrix_server_name": "example.test",
        "matrix_homeserver_fqdn": "matrix.example.test",
        "matrix_client_port": 8443,
        "matrix_federation_port": 443,
        "matrix_homeserver_address": "[::1]",
        "matrix_max_upload_size_mb": 8,
        "mx_ipv6": True,
        "haproxy_maxconn": 12000,
    },
    # matrix_tls_source=acme, the e2e hs1 layout: port 80 for both names, IPv6.
    "acme_single_port": {
        "matrix_server_name": "example.test",
        "matrix_homeserver_fqdn": "matrix.example.test",
        "matrix_federation_port": 443,
        "matrix_tls_source": "acme",
        "mx_ipv6": True,
    },
    # acme with clients on 8443 (the redirect names the port) and another challenge port.
    "acme_client_8443": {
        "matrix_server_name": "matrix.example.test",
        "matrix_client_port": 8443,
        "matrix_tls_source": "acme",
        "matrix_acme_challenge_port": 8500,
        "mx_ipv6": False,
    },
    # self-signed: the tls role's bundle, nothing on port 80.
    "self_signed": {
        "matrix_server_name": "other.test",
        "matrix_tls_source": "self_signed",
        "mx_ipv6": True,
    },
}
ACME = [name for name, v in VARIANTS.items() if v.get("matrix_tls_source") == "acme"]

PLAYBOOK = """
- name: Render haproxy.cfg and its support files, one variable set per host
  hosts: all
  connection: local
  gather_facts: false
  tasks:
    - name: Load the role (defaults, vars, matrix dependency) and run its preflight
      ansible.builtin.include_role:
        name: mxedge.matrix.haproxy
        tasks_from: preflight
        public: true

    - name: Remember the bundle path the matrix role derived
      ansible.builtin.set_fact:
        mx_derived_bundle: "{{{{ _matrix_tls_bundle_path }}}}"

    - name: Point the role's paths (and the tls role's bundle) into the output tree; pretend the host's IPv6
      ansible.builtin.set_fact:
        _haproxy_config_dir: "{out}/{{{{ inventory_hostname }}}}"
        _matrix_tls_bundle_path: "{{{{ '' if matrix_tls_source == 'files' else '{out}/' ~ inventory_hostname ~ '/tls/bundle.pem' }}}}"
        _matrix_ipv6: "{{{{ mx_ipv6 }}}}"

    - name: Create the output tree
      ansible.builtin.file:
        path: "{{{{ _haproxy_matrix_dir }}}}"
        state: directory
        mode: "0755"

    - name: Render haproxy.cfg
      ansible.builtin.template:
        src: "{role}/templates/haproxy.cfg.j2"
        dest: "{{{{ _haproxy_config_path }}}}"
        mode: "0644"

    - name: Copy the Lua helpers
      ansible.builtin.copy:
        src: "{role}/files/mxedge_matrix.lua"
        dest: "{{{{ _haproxy_lua_path }}}}"
        mode: "0644"

    - name: Write the well-known bodies as the role does
      ansible.builtin.copy:
        content: "{{{{ item.body }}}}"
        dest: "{{{{ item.path }}}}"
        mode: "0644"
      loop:
        - {{path: "{{{{ _haproxy_well_known_server_path }}}}", body: "{{{{ _matrix_well_known_server_body }}}}"}}
        - {{path: "{{{{ _haproxy_well_known_client_path }}}}", body: "{{{{ _matrix_well_known_client_body }}}}"}}
      when: matrix_well_known_serve | bool

    - name: Record the facts the tests compare against
      ansible.builtin.copy:
        dest: "{out}/{{{{ inventory_hostname }}}}.json"
        mode: "0644"
        content: "{{{{ {{'server_body': _matrix_well_known_server_body, 'client_body': _matrix_well_known_client_body,
          'cert_path': _haproxy_crt_path, 'derived_bundle': mx_derived_bundle, 'bundle': _matrix_tls_bundle_path,
          'inputs': _haproxy_tls_inputs}} | to_json }}}}"
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("haproxy-render")
    facts = render(out, PLAYBOOK.format(role=ROLE, out=out), {name: dict(TLS, **v) for name, v in VARIANTS.items()})
    result = {}
    for name in VARIANTS:
        result[name] = {
            "dir": out / name,
            "cfg": (out / name / "haproxy.cfg").read_text(),
            "facts": facts[name],
        }
    return result


def _sections(text):
    """{'global': body, 'defaults': body, 'frontend fe_matrix_443': body, ...}: section bodies without comments."""
    sections, current = {}, None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            current = line.strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line.strip())
    return sections


def _frontends(text, tls=True):
    """{port: lines} of the Matrix TLS frontends, or (tls=False) of the plain-HTTP ones."""
    return {int(key.rsplit("_", 1)[1]): lines for key, lines in _sections(text).items()
            if key.startswith("frontend ") and ("_http_" not in key) == tls}


@pytest.mark.parametrize("name", VARIANTS)
def test_common_behaviour(rendered, name):
    text = rendered[name]["cfg"]
    assert text.startswith("#\n# Ansible managed")
    assert "option forwardfor" not in text
    sections = _sections(text)
    defaults = sections["defaults"]
    for key in ("client", "server"):
        seconds = int(re.search(rf"timeout {key} (\d+)s", "\n".join(defaults)).group(1))
        assert seconds >= 180
    assert "option http-keep-alive" in defaults and "http-reuse safe" in defaults
    assert "ssl-default-bind-options prefer-client-ciphers ssl-min-ver TLSv1.2 no-tls-tickets" in sections["global"]
    backend = sections["backend be_matrix_homeserver"]
    assert "option httpchk" in backend
    assert any(line.startswith("http-check send meth GET uri /health ver HTTP/1.1 hdr Host ") for line in backend)
    for port, lines in _frontends(text).items():
        assert "http-request set-header X-Forwarded-For %[src]" in lines, port
        assert "http-request set-header X-Forwarded-Proto https if { ssl_fc }" in lines, port
        assert "http-request set-var(txn.mx_path) path,lua.mx_normalize_path" in lines, port
        assert lines[-1] == "default_backend be_matrix_not_found", port
        assert all(re.search(r"\bssl crt \S+ alpn h2,http/1.1$", line) for line in lines if line.startswith("bind "))
        # Security rules come before anything an operator extra or a use_backend can do.
        admin = next(i for i, line in enumerate(lines) if line.startswith("http-request return status 403"))
        first_backend = next(i for i, line in enumerate(lines) if line.startswith(("use_backend", "default_backend")))
        assert admin < first_backend
        assert not any(line.startswith("http-request") for line in lines[first_backend:]), port


@pytest.mark.parametrize("name", [n for n, v in VARIANTS.items() if v.get("matrix_well_known_serve", True)])
def test_well_known_bodies_are_the_facts_byte_for_byte(rendered, name):
    variant = rendered[name]
    for kind in ("server", "client"):
        path = variant["dir"] / "matrix" / f"well-known-{kind}.json"
        assert path.read_bytes() == variant["facts"][f"{kind}_body"].encode()
        rule = (
            f"http-request return status 200 content-type application/json file {path} "
            'hdr Access-Control-Allow-Origin "*" if mx_vhost_well_known '
            f"{{ var(txn.mx_path) -m str /.well-known/matrix/{kind} }}"
        )
        assert rule in [line.strip() for line in variant["cfg"].splitlines()], rule


def test_delegated_single_port(rendered):
    variant = rendered["delegated_single_port"]
    text = variant["cfg"]
    frontends = _frontends(text)
    assert list(frontends) == [443]
    lines = frontends[443]
    assert f"bind 0.0.0.0:443 ssl crt {variant['facts']['cert_path']} alpn h2,http/1.1" in lines
    assert any(line.startswith("bind [::]:443 v6only ") for line in lines)
    assert "acl mx_vhost_client var(txn.mx_host) -m str matrix.example.test" in lines
    assert "acl mx_vhost_well_known var(txn.mx_host) -m str example.test" in lines
    assert "acl mx_admin_allowed src 127.0.0.0/8 2001:db8::/32" in lines
    assert "acl mx_path_admin var(txn.mx_path) -i -m beg /_synapse/admin" in lines
    assert "acl mx_path_client var(txn.mx_path) -m beg /_matrix /_synapse/client" in lines
    assert "use_backend be_matrix_homeserver if mx_vhost_client mx_path_admin mx_admin_allowed" in lines
    assert "chroot /var/lib/haproxy" in _sections(text)["global"]
    assert "server homeserver 127.0.0.1:8008 check" in text


def test_separate_federation_port(rendered):
    text = rendered["separate_federation_no_well_known"]["cfg"]
    frontends = _frontends(text)
    assert sorted(frontends) == [443, 8448]
    federation = frontends[8448]
    routes = [line for line in federation if line.startswith("use_backend")]
    assert routes == ["use_backend be_matrix_homeserver if mx_vhost_federation mx_path_federation mx_raw_federation"]
    assert "acl mx_vhost_federation always_true" in federation
    assert "http-response set-header X-Federation yes" in federation
    assert not any("X-Federation" in line for line in frontends[443])
    assert "well-known" not in text and "acl mx_admin_allowed always_false" in federation
    assert not any(line.startswith("bind [") for lines in frontends.values() for line in lines)


def test_socket_palpo_same_host(rendered):
    variant = rendered["socket_palpo_same_host"]
    text = variant["cfg"]
    frontends = _frontends(text)
    # Clients on 8443, but other servers look for https://<server_name>/.well-known on 443.
    assert sorted(frontends) == [443, 8443, 8448]
    client = frontends[8443]
    assert "server homeserver unix@/run/palpo/palpo.sock check" in text
    assert not any(line.startswith("chroot") for line in _sections(text)["global"])
    assert "acl mx_path_client var(txn.mx_path) -m beg /_matrix /_palpo/client" in client
    assert "acl mx_path_admin var(txn.mx_path) -i -m beg /_palpo/admin" in client
    assert "acl mx_vhost_well_known var(txn.mx_host) -m str matrix.example.test" in frontends[443]
    assert "http-request set-header X-Correlation-ID %[unique-id]" in client
    # Extras: after the role's http-request rules, before its routing, in the port serving their vhost.
    position = client.index("http-response set-header X-Client yes")
    assert "http-response set-header X-Well-Known yes" in frontends[443]
    assert max(i for i, line in enumerate(client) if line.startswith("http-request")) < position
    assert position < min(i for i, line in enumerate(client) if line.startswith("use_backend"))
    base_url = json.loads(variant["facts"]["client_body"])["m.homeserver"]["base_url"]
    assert base_url == "https://matrix.example.test:8443/"


def test_federation_on_443_shares_the_port_with_the_well_known_vhost(rendered):
    text = rendered["federation_on_443"]["cfg"]
    frontends = _frontends(text)
    assert sorted(frontends) == [443, 8443]
    assert "acl mx_vhost_federation always_true" in frontends[443]
    assert "acl mx_vhost_well_known var(txn.mx_host) -m str example.test" in frontends[443]
    assert not any(line.startswith("acl mx_vhost_well_known") for line in frontends[8443])
    assert "server homeserver [::1]:8008 check" in text
    assert "acl mx_body_too_large req.hdr_val(content-length) gt 8388608" in frontends[8443]
    assert "maxconn 12000" in _sections(text)["global"] and "maxconn 12000" in _sections(text)["defaults"]


def test_crt_follows_the_tls_source(rendered):
    for name, variables in VARIANTS.items():
        facts = rendered[name]["facts"]
        source = variables.get("matrix_tls_source", "files")
        if source == "files":
            assert facts["cert_path"].endswith("/certs/matrix.pem"), name
            assert facts["inputs"] == [TLS["matrix_tls_certificate"], TLS["matrix_tls_certificate_key"]]
            assert facts["derived_bundle"] == "", name
        else:
            fqdn = variables.get("matrix_homeserver_fqdn", variables["matrix_server_name"])
            # the tls role's bundle, used in place: no copy of the role's own
            assert facts["derived_bundle"] == f"/etc/mxedge-matrix/tls/{fqdn}.pem", name
            assert facts["cert_path"] == facts["bundle"] and facts["inputs"] == [facts["bundle"]], name
        binds = [line for lines in _frontends(rendered[name]["cfg"]).values() for line in lines if line.startswith("bind ")]
        assert binds and all(f" ssl crt {facts['cert_path']} " in line for line in binds), name


@pytest.mark.parametrize("name", VARIANTS)
def test_port_80_frontend_only_with_acme(rendered, name):
    text = rendered[name]["cfg"]
    plain = _frontends(text, tls=False)
    sections = _sections(text)
    if name not in ACME:
        assert plain == {} and "backend be_matrix_acme" not in sections
        assert "acme" not in text.lower()
        return
    variables = VARIANTS[name]
    assert list(plain) == [80]
    lines = plain[80]
    binds = [line for line in lines if line.startswith("bind ")]
    assert binds == (["bind 0.0.0.0:80", "bind [::]:80 v6only"] if variables["mx_ipv6"] else ["bind 0.0.0.0:80"])
    assert "acl mx_acme_challenge path -m beg /.well-known/acme-challenge/" in lines
    suffix = "" if variables.get("matrix_client_port", 443) == 443 else f":{variables['matrix_client_port']}"
    assert (f"http-request redirect code 301 location https://%[var(txn.mx_host)]{suffix}%[capture.req.uri] "
            "unless mx_acme_challenge") in lines
    assert lines[-1] == "default_backend be_matrix_acme"
    port = variables.get("matrix_acme_challenge_port", 8402)
    assert sections["backend be_matrix_acme"] == [f"server acme 127.0.0.1:{port}"]


@pytest.mark.skipif(not (shutil.which("haproxy") and shutil.which("openssl")), reason="needs haproxy and openssl")
@pytest.mark.parametrize("name", VARIANTS)
def test_haproxy_accepts_the_rendered_configuration(rendered, name, tmp_path):
    variant = rendered[name]
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=matrix.example.test"],
        capture_output=True, check=True,
    )
    pem = pathlib.Path(variant["facts"]["cert_path"])
    pem.parent.mkdir(parents=True, exist_ok=True)
    pem.write_text(cert.read_text() + key.read_text())
    # A check only parses (certificates and Lua included); it binds and connects nothing.
    proc = subprocess.run(["haproxy", "-c", "-f", str(variant["dir"] / "haproxy.cfg")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# A stand-in for the ACME client's HTTP-01 server: answers every GET with the Host and path it received.
ECHO_SERVER = """
import http.server, sys
class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("host=%s path=%s" % (self.headers.get("Host"), self.path)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
"""

# HAProxy and the stand-in in network and PID namespaces of their own (the
# machine's ports are not touched; everything dies with the namespace), then curl.
LIVE_SCRIPT = r"""
set -u
ip link set lo up
python3 "$SCRATCH/echo.py" "$ACME_PORT" &
haproxy -db -f "$SCRATCH/haproxy.cfg" >"$SCRATCH/haproxy.log" 2>&1 &
i=0
while ! curl -s -o /dev/null --max-time 1 http://127.0.0.1/ && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
ask() {
    curl -s --path-as-is -o "$SCRATCH/body" -w '%{http_code} %header{location}' --max-time 5 -H "Host: $1" "http://127.0.0.1$2"
    echo " $(head -c 200 "$SCRATCH/body" | tr -c '[:print:]' ' ')"
}
ask "$HOST1:80" '/_matrix/client/versions?a=%2Fb&c=d%20e'
ask "Unknown.Example" '/some/where/'
ask "$HOST1" '/.well-known/acme-challenge/t0ken-1'
ask "$HOST2:80" '/.well-known/acme-challenge/t0ken-2'
ask "$HOST2" '/_matrix/media/v3/download/x%2Fy%3Fz//w/../v?q=%3F'
cat "$SCRATCH/haproxy.log" >&2
"""


@pytest.mark.skipif(not all(shutil.which(tool) for tool in ("haproxy", "openssl", "curl", "unshare", "ip")),
                    reason="needs haproxy, openssl, curl, unshare and ip")
@pytest.mark.parametrize("name", ACME)
def test_haproxy_port_80_passes_the_challenge_and_redirects(rendered, name, tmp_path):
    if subprocess.run(["unshare", "--net", "--pid", "--fork", "true"], capture_output=True, check=False).returncode:
        pytest.skip("unshare --net --pid is not permitted here")
    variant = rendered[name]
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=matrix.example.test"],
        capture_output=True, check=True,
    )
    pem = pathlib.Path(variant["facts"]["cert_path"])
    pem.parent.mkdir(parents=True, exist_ok=True)
    pem.write_text(cert.read_text() + key.read_text())
    # Its own admin socket, so that a HAProxy of the machine keeps its own.
    (tmp_path / "haproxy.cfg").write_text(variant["cfg"].replace("/run/haproxy/admin.sock", str(tmp_path / "admin.sock")))
    (tmp_path / "echo.py").write_text(ECHO_SERVER)
    variables = VARIANTS[name]
    fqdn = variables.get("matrix_homeserver_fqdn", variables["matrix_server_name"])
    port = variables.get("matrix_acme_challenge_port", 8402)
    env = dict(os.environ, SCRATCH=str(tmp_path), ACME_PORT=str(port), HOST1=fqdn, HOST2=variables["matrix_server_name"])
    proc = subprocess.run(["unshare", "--net", "--pid", "--fork", "--kill-child", "sh", "-c", LIVE_SCRIPT],
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    answers = proc.stdout.splitlines()
    assert len(answers) == 5, proc.stdout + proc.stderr
    suffix = "" if variables.get("matrix_client_port", 443) == 443 else f":{variables['matrix_client_port']}"
    # everything else: 301 to https://<Host without port><client port suffix><request URI as sent>
    assert answers[0].split(" ")[:2] == ["301", f"https://{fqdn}{suffix}/_matrix/client/versions?a=%2Fb&c=d%20e"], proc.stderr
    assert answers[1].split(" ")[:2] == ["301", f"https://unknown.example{suffix}/some/where/"]
    # the challenge: to the ACME client, Host as received
    assert answers[2] == f"200  host={fqdn} path=/.well-known/acme-challenge/t0ken-1"
    assert answers[3] == f"200  host={variables['matrix_server_name']}:80 path=/.well-known/acme-challenge/t0ken-2"
    # the request URI byte for byte: encoded slash and question mark, double slash, dot segment, query
    assert answers[4].split(" ")[:2] == [
        "301", f"https://{variables['matrix_server_name']}{suffix}/_matrix/media/v3/download/x%2Fy%3Fz//w/../v?q=%3F"]
