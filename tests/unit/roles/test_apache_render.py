"""Render tests for roles/apache: its templates, rendered by Ansible for several variable sets.

One ansible-playbook run (localhost, connection local, no Apache needed) runs the role's
preflight entry point for each variable set (so the real mxedge.matrix.matrix role derives
the shared facts and the apache preflight asserts run) and renders the three templates with
the role's own defaults and vars into one JSON file per variant. The tests read the text.

When Apache is installed and we are root, each rendered set is also put into a scratch copy
of /etc/apache2 the way the role builds its candidate (a2enmod, a2enconf, a2ensite with
APACHE_CONFDIR) and checked with `apache2ctl configtest` and the role's trial start.
"""

import os
import pathlib
import re
import shutil
import subprocess

import pytest
import yaml
from render import render

ROOT = pathlib.Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles" / "apache"

CERT = "/etc/ssl/mxedge-test/fullchain.pem"
KEY = "/etc/ssl/mxedge-test/privkey.pem"
BASE = {"matrix_tls_certificate": CERT, "matrix_tls_certificate_key": KEY}

VARIANTS = {
    # delegated from example.test, federation on 8448, admin allow-list, IPv6
    "delegated": {
        "matrix_server_name": "example.test",
        "matrix_homeserver_fqdn": "matrix.example.test",
        "matrix_admin_allowed_networks": ["10.0.0.0/8", "2001:db8::/32"],
        "mx_ipv6": True,
    },
    # single port, UNIX socket, Palpo, well-known in the client vhost, no IPv6
    "single_port_socket_palpo": {
        "matrix_server_name": "matrix.example.test",
        "matrix_federation_port": 443,
        "matrix_homeserver_socket": "/run/palpo/palpo.sock",
        "matrix_homeserver_flavour": "palpo",
        "mx_ipv6": False,
    },
    # server_name == fqdn but clients on 8443: the documents need a vhost of their own on 443
    "same_host_not_on_443": {
        "matrix_server_name": "matrix.example.test",
        "matrix_client_port": 8443,
        "matrix_homeserver_address": "[::1]",
        "apache_well_known_vhost_extra": "Header always set X-Well-Known yes",
        "mx_ipv6": True,
    },
    # federation on 443, clients elsewhere: the documents go into the federation vhost
    "federation_on_443": {
        "matrix_server_name": "matrix.example.test",
        "matrix_client_port": 8443,
        "matrix_federation_port": 443,
        "mx_ipv6": False,
    },
    # no delegation, extras, another request ID header, more Listen lines, smaller MPM
    "extras_no_well_known": {
        "matrix_server_name": "example.test",
        "matrix_homeserver_fqdn": "matrix.example.test",
        "matrix_well_known_serve": False,
        "matrix_request_id_header": "X-Correlation-ID",
        "matrix_max_upload_size_mb": 10,
        "apache_listen_extra": ["80", "[::1]:8081 http"],
        "apache_mpm_threads_per_child": 32,
        "apache_mpm_server_limit": 16,
        "apache_mpm_max_request_workers": 512,
        "apache_client_vhost_extra": (
            "Header always set X-Client yes\n"
            'ProxyPass "/_matrix/client/unstable/org.matrix.msc3575" '
            '"http://127.0.0.1:8009/_matrix/client/unstable/org.matrix.msc3575" nocanon'
        ),
        "apache_federation_vhost_extra": "Header always set X-Federation yes",
        "mx_ipv6": False,
    },
    # matrix_tls_source=acme, delegated: the port-80 virtual host for both names, IPv6
    "acme_delegated": {
        "matrix_server_name": "example.test",
        "matrix_homeserver_fqdn": "matrix.example.test",
        "matrix_tls_source": "acme",
        "mx_ipv6": True,
    },
    # acme with clients on 8443 (the redirect names the port), another challenge port, Listen extras on port 80
    "acme_client_8443": {
        "matrix_server_name": "matrix.example.test",
        "matrix_client_port": 8443,
        "matrix_tls_source": "acme",
        "matrix_acme_challenge_port": 8500,
        "apache_listen_extra": ["80", "192.0.2.1:80 http", "8080"],
        "mx_ipv6": False,
    },
    # self-signed: the tls role's paths, nothing on port 80 from the role
    "self_signed": {
        "matrix_server_name": "example.test",
        "matrix_homeserver_fqdn": "matrix.example.test",
        "matrix_tls_source": "self_signed",
        "mx_ipv6": True,
    },
}
ACME = [name for name, v in VARIANTS.items() if v.get("matrix_tls_source") == "acme"]

PLAYBOOK = """
- name: Render the apache role's templates for one variable set per host
  hosts: all
  connection: local
  gather_facts: false
  tasks:
    - name: Load the apache role (defaults, vars, the matrix dependency) and run its preflight
      ansible.builtin.include_role:
        name: mxedge.matrix.apache
        tasks_from: preflight
        public: true
    - name: Pretend the host's IPv6 of this variant
      ansible.builtin.set_fact:
        _matrix_ipv6: "{{{{ mx_ipv6 }}}}"
    - name: Write what the templates render to and the derived values, in one file per variant
      ansible.builtin.copy:
        dest: "{out}/{{{{ inventory_hostname }}}}.json"
        mode: "0644"
        content: "{{{{ {{'files': __files, 'placement': _matrix_well_known_placement, 'ports': _matrix_tls_ports,
          'upstream': _apache_upstream, 'body_limit': _matrix_max_body_bytes | int,
          'cert': _matrix_tls_certificate_path, 'key': _matrix_tls_key_path, 'modules': _apache_wanted_modules}} | to_json }}}}"
      vars:
        __files: "{{{{ dict(_apache_config_files | map(attribute='dest') | zip(query('ansible.builtin.template',
          *(_apache_config_files | map(attribute='src') | map('regex_replace', '^', '{role}/templates/'))))) }}}}"
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("apache-render")
    data_by_name = render(out, PLAYBOOK.format(role=ROLE, out=out), {name: dict(BASE, **v) for name, v in VARIANTS.items()})
    result = {}
    for name in VARIANTS:
        data = data_by_name[name]
        files = data.pop("files")
        result[name] = {
            "files": files,
            "ports_conf": files["ports.conf"],
            "server": files["conf-available/mxedge-matrix.conf"],
            "site": files["sites-available/mxedge-matrix.conf"],
            "derived": data,
        }
    return result


def _vhosts(site, tls=True):
    """{(port, ServerName): body} of the <VirtualHost> sections: the TLS ones, or (tls=False) the plain-HTTP ones."""
    found = {}
    for port, body in re.findall(r"^<VirtualHost \*:(\d+)>\n(.*?)^</VirtualHost>", site, re.M | re.S):
        if ("SSLEngine on" in body) != tls:
            continue
        name = re.search(r"^\s*ServerName (\S+)$", body, re.M).group(1)
        found[(int(port), name)] = body
    return found


def _proxy_passes(body):
    return re.findall(r'^\s*ProxyPass "([^"]+)" "([^"]+)"(.*)$', body, re.M)


@pytest.mark.parametrize("name", VARIANTS)
def test_every_file_starts_with_the_managed_header(rendered, name):
    for dest, text in rendered[name]["files"].items():
        assert text.startswith("#\n# Ansible managed"), dest


@pytest.mark.parametrize("name", VARIANTS)
def test_vhosts_pass_the_uri_untouched_and_set_forwarded_headers(rendered, name):
    header = VARIANTS[name].get("matrix_request_id_header", "X-Request-ID")
    limit = rendered[name]["derived"]["body_limit"]
    cert, key_path = rendered[name]["derived"]["cert"], rendered[name]["derived"]["key"]
    for key, body in _vhosts(rendered[name]["site"]).items():
        # TLS on every vhost: Mozilla intermediate, HTTP/2
        assert f'SSLCertificateFile "{cert}"' in body and f'SSLCertificateKeyFile "{key_path}"' in body, key
        assert "SSLProtocol -all +TLSv1.2 +TLSv1.3" in body and "SSLSessionTickets off" in body, key
        assert "SSLHonorCipherOrder off" in body and "Protocols h2 http/1.1" in body, key
        ciphers = re.search(r"SSLCipherSuite (\S+)", body).group(1).split(":")
        assert all(c.startswith("ECDHE-") and ("GCM" in c or "CHACHA20" in c) for c in ciphers), key
        passes = _proxy_passes(body)
        if not passes:
            continue
        for prefix, target, params in passes:
            if "127.0.0.1:8009" in target:
                continue  # the operator's own ProxyPass (extras variant)
            assert target.endswith(prefix), (key, prefix, target)
            assert params.split()[0] == "nocanon" and "retry=0" in params, (key, prefix)
        for line in (
            "AllowEncodedSlashes NoDecode",
            "MergeSlashes Off",
            "ProxyPreserveHost On",
            "RequestHeader unset X-Forwarded-For early",
            "RequestHeader unset X-Forwarded-Host early",
            'RequestHeader set X-Forwarded-Proto "expr=%{REQUEST_SCHEME}"',
            f'RequestHeader set {header} "%{{UNIQUE_ID}}e"',
            f"LimitRequestBody {limit}",
            f'<If "%{{HTTP:Content-Length}} -gt {limit}">',
        ):
            assert line in body, (key, line)
        assert "ProxyAddHeaders Off" not in body and "RemoteIP" not in body
        assert int(re.search(r"ProxyTimeout (\d+)", body).group(1)) >= 180


@pytest.mark.parametrize("name", VARIANTS)
def test_routing_table(rendered, name):
    variables = VARIANTS[name]
    palpo = variables.get("matrix_homeserver_flavour") == "palpo"
    admin = "/_palpo/admin" if palpo else "/_synapse/admin"
    client_prefixes = ["/_matrix", "/_palpo/client" if palpo else "/_synapse/client", "/health"]
    fqdn = variables.get("matrix_homeserver_fqdn", variables["matrix_server_name"])
    client_port = variables.get("matrix_client_port", 443)
    federation_port = variables.get("matrix_federation_port", 8448)
    vhosts = _vhosts(rendered[name]["site"])
    client = vhosts[(client_port, fqdn)]
    own = [p for p, t, _opts in _proxy_passes(client) if "8009" not in t]
    assert own == [admin] + client_prefixes
    assert client.index(f'<Location "{admin}">') < client.index(f'ProxyPass "{admin}"')
    if federation_port != client_port:
        federation = vhosts[(federation_port, fqdn)]
        assert [p for p, _target, _opts in _proxy_passes(federation)] == [admin, "/_matrix"]
        # admin refused on the federation port whatever the allow-list
        assert re.search(rf'<Location "{admin}">\s*Require all denied\s*</Location>', federation)
    else:
        assert len([k for k in vhosts if k[1] == fqdn]) == 1
    networks = variables.get("matrix_admin_allowed_networks", [])
    rule = f"Require ip {' '.join(networks)}" if networks else "Require all denied"
    assert re.search(rf'<Location "{admin}">\s*{re.escape(rule)}\s*</Location>', client)
    # nothing but the routed prefixes (and the documents) reaches anything
    for body in vhosts.values():
        assert re.search(r'^\s*RedirectMatch 404 "\^/(\(\?!.*\))?"$', body, re.M)


def test_well_known_placement(rendered):
    expected = {
        "delegated": ("separate", (443, "example.test")),
        "single_port_socket_palpo": ("client", (443, "matrix.example.test")),
        "same_host_not_on_443": ("separate", (443, "matrix.example.test")),
        "federation_on_443": ("federation", (443, "matrix.example.test")),
        "extras_no_well_known": ("none", None),
        "acme_delegated": ("separate", (443, "example.test")),
        "acme_client_8443": ("separate", (443, "matrix.example.test")),
        "self_signed": ("separate", (443, "example.test")),
    }
    for name, (placement, key) in expected.items():
        assert rendered[name]["derived"]["placement"] == placement, name
        vhosts = _vhosts(rendered[name]["site"])
        serving = [k for k, body in vhosts.items() if '<Location "/.well-known/matrix/">' in body]
        assert serving == ([key] if key else []), name
        for k, body in vhosts.items():
            if k == key:
                assert "ForceType application/json" in body
                assert 'Header always set Access-Control-Allow-Origin "*"' in body
                assert 'RedirectMatch 404 "^/(?!\\.well-known/matrix/(?:server|client)$)"' in body
            else:
                assert 'RedirectMatch 404 "^/"' in body, (name, k)
    # a vhost of its own answers nothing else
    separate = _vhosts(rendered["delegated"]["site"])[(443, "example.test")]
    assert "ProxyPass" not in separate


def test_upstreams(rendered):
    assert rendered["delegated"]["derived"]["upstream"] == "http://127.0.0.1:8008"
    assert rendered["same_host_not_on_443"]["derived"]["upstream"] == "http://[::1]:8008"
    socket = _vhosts(rendered["single_port_socket_palpo"]["site"])[(443, "matrix.example.test")]
    assert 'ProxyPass "/_matrix" "unix:/run/palpo/palpo.sock|http://localhost/_matrix" nocanon' in socket


def test_listen_directives(rendered):
    def listens(name):
        return re.findall(r"^Listen (.+)$", rendered[name]["ports_conf"], re.M)

    assert listens("delegated") == [
        "0.0.0.0:443 https", "[::]:443 https", "0.0.0.0:8448 https", "[::]:8448 https", "80"]
    assert listens("single_port_socket_palpo") == ["0.0.0.0:443 https", "80"]
    assert listens("same_host_not_on_443") == [
        "0.0.0.0:443 https", "[::]:443 https", "0.0.0.0:8443 https", "[::]:8443 https",
        "0.0.0.0:8448 https", "[::]:8448 https", "80"]
    assert listens("extras_no_well_known") == ["0.0.0.0:443 https", "0.0.0.0:8448 https", "80", "[::1]:8081 http"]
    # acme: the role's own port 80 (IPv4, IPv6 when the host has it); apache_listen_extra's port-80 entries left out
    assert listens("acme_delegated") == [
        "0.0.0.0:443 https", "[::]:443 https", "0.0.0.0:8448 https", "[::]:8448 https", "0.0.0.0:80 http", "[::]:80 http"]
    assert listens("acme_client_8443") == [
        "0.0.0.0:443 https", "0.0.0.0:8443 https", "0.0.0.0:8448 https", "0.0.0.0:80 http", "8080"]
    # self_signed adds nothing: Debian's port 80 line stays the operator's
    assert listens("self_signed") == [
        "0.0.0.0:443 https", "[::]:443 https", "0.0.0.0:8448 https", "[::]:8448 https", "80"]


def test_tls_paths_follow_the_tls_source(rendered):
    assert rendered["delegated"]["derived"]["cert"] == CERT
    assert rendered["delegated"]["derived"]["key"] == KEY
    for name in ("acme_delegated", "acme_client_8443", "self_signed"):
        derived = rendered[name]["derived"]
        fqdn = VARIANTS[name].get("matrix_homeserver_fqdn", VARIANTS[name]["matrix_server_name"])
        assert derived["cert"] == f"/etc/mxedge-matrix/tls/{fqdn}.crt", name
        assert derived["key"] == f"/etc/mxedge-matrix/tls/{fqdn}.key", name


@pytest.mark.parametrize("name", VARIANTS)
def test_port_80_virtual_host_only_with_acme(rendered, name):
    plain = _vhosts(rendered[name]["site"], tls=False)
    modules = rendered[name]["derived"]["modules"]
    if name not in ACME:
        assert plain == {}
        assert "rewrite" not in modules
        assert "acme" not in rendered[name]["site"].lower()
        return
    assert "rewrite" in modules
    variables = VARIANTS[name]
    fqdn = variables.get("matrix_homeserver_fqdn", variables["matrix_server_name"])
    assert list(plain) == [(80, fqdn)]
    body = plain[(80, fqdn)]
    aliases = re.findall(r"^\s*ServerAlias (\S+)$", body, re.M)
    assert aliases == ([variables["matrix_server_name"]] if variables["matrix_server_name"] != fqdn else [])
    port = variables.get("matrix_acme_challenge_port", 8402)
    assert _proxy_passes(body) == [
        ("/.well-known/acme-challenge/", f"http://127.0.0.1:{port}/.well-known/acme-challenge/",
         " nocanon retry=0 connectiontimeout=10")]
    assert "ProxyPreserveHost On" in body and "UseCanonicalName Off" in body
    suffix = "" if variables.get("matrix_client_port", 443) == 443 else f":{variables['matrix_client_port']}"
    rules = re.findall(r'^\s*RewriteRule "\^" "([^"]+)" \[([^\]]+)\]$', body, re.M)
    assert rules == [(f"https://%{{SERVER_NAME}}{suffix}%1", "R=301,L,NE"),
                     (f"https://%{{SERVER_NAME}}{suffix}%{{REQUEST_URI}}", "R=301,L")]
    assert body.count('RewriteCond %{REQUEST_URI} "!^/\\.well\\-known/acme\\-challenge/"') == 2
    # the first plain-HTTP virtual host of the file, before the TLS ones
    site = rendered[name]["site"]
    assert site.index("<VirtualHost *:80>") < site.index("<VirtualHost *:443>")


def test_mpm_sizing(rendered):
    def value(name, directive):
        return int(re.search(rf"^\s*{directive}\s+(\d+)$", rendered[name]["server"], re.M).group(1))

    assert value("delegated", "MaxRequestWorkers") == 8192 >= 5000
    threads = value("delegated", "ServerLimit") * value("delegated", "ThreadsPerChild")
    assert threads >= value("delegated", "MaxRequestWorkers")
    assert value("delegated", "ThreadLimit") == value("delegated", "ThreadsPerChild") == 64
    assert value("delegated", "ListenBacklog") == 4096
    assert value("extras_no_well_known", "MaxRequestWorkers") == 512
    assert value("extras_no_well_known", "ThreadLimit") == 32
    # Apache wants MaxSpareThreads >= MinSpareThreads + ThreadsPerChild
    spare = value("delegated", "MinSpareThreads") + value("delegated", "ThreadsPerChild")
    assert value("delegated", "MaxSpareThreads") >= spare


def test_operator_extras_land_in_their_vhosts_before_the_routing(rendered):
    vhosts = _vhosts(rendered["extras_no_well_known"]["site"])
    client, federation = vhosts[(443, "matrix.example.test")], vhosts[(8448, "matrix.example.test")]
    assert '    Header always set X-Client yes\n    ProxyPass "/_matrix/client/unstable/org.matrix.msc3575"' in client
    # an extra ProxyPass for a more specific path comes before the role's /_matrix (first match wins)
    passes = [p for p, _target, _opts in _proxy_passes(client)]
    assert passes.index("/_matrix/client/unstable/org.matrix.msc3575") < passes.index("/_matrix")
    # the admin <Location> comes after the extras, so an extra <Location /> cannot re-open it
    assert client.index("X-Client") < client.index('<Location "/_synapse/admin">')
    assert "X-Federation" in federation and "X-Client" not in federation
    assert 'RequestHeader set X-Correlation-ID "%{UNIQUE_ID}e"' in client
    well_known = _vhosts(rendered["same_host_not_on_443"]["site"])[(443, "matrix.example.test")]
    assert "Header always set X-Well-Known yes" in well_known


def _apache_usable():
    return shutil.which("apache2ctl") and shutil.which("a2enmod") and shutil.which("openssl") and os.geteuid() == 0


def _candidate(rendered, name, tmp_path):
    """The rendered set in a scratch copy of /etc/apache2, built as the role builds it; (scratch, env)."""
    vars_main = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    scratch = tmp_path / "stage"
    conf = scratch / "conf"
    shutil.copytree("/etc/apache2", conf, symlinks=True)
    env = dict(os.environ, APACHE_CONFDIR=str(conf), APACHE_STATE_DIRECTORY=str(scratch / "state"))
    for mpm in vars_main["_apache_other_mpms"]:
        subprocess.run(["a2dismod", "-q", mpm], env=env, capture_output=True, check=False)
    for module in [vars_main["_apache_mpm"]] + rendered[name]["derived"]["modules"]:
        subprocess.run(["a2enmod", "-q", module], env=env, capture_output=True, check=True)
    if name in ACME:
        subprocess.run(["a2dissite", "-q", vars_main["_apache_default_site"]], env=env, capture_output=True, check=False)
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=matrix.example.test"],
        capture_output=True, check=True,
    )
    for dest, text in rendered[name]["files"].items():
        derived = rendered[name]["derived"]
        (conf / dest).write_text(text.replace(derived["cert"], str(cert)).replace(derived["key"], str(key)))
    subprocess.run(["a2enconf", "-q", "mxedge-matrix"], env=env, capture_output=True, check=True)
    subprocess.run(["a2ensite", "-q", "mxedge-matrix"], env=env, capture_output=True, check=True)
    return scratch, env


@pytest.mark.skipif(not _apache_usable(), reason="needs Apache (apache2ctl, a2enmod), openssl and root")
@pytest.mark.parametrize("name", VARIANTS)
def test_apache_accepts_the_rendered_configuration(rendered, name, tmp_path):
    scratch, env = _candidate(rendered, name, tmp_path)
    proc = subprocess.run(["apache2ctl", "configtest"], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    trial = subprocess.run(["sh", str(ROLE / "files" / "trial-start.sh"), str(scratch)],
                           capture_output=True, text=True, timeout=60, check=False)
    if trial.returncode == 2:
        pytest.skip(trial.stderr)
    assert trial.returncode == 0, trial.stderr


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

# Apache and the stand-in in network and PID namespaces of their own (nothing of
# the machine's ports is touched; everything dies with the namespace), then curl.
LIVE_SCRIPT = r"""
set -u
ip link set lo up
python3 "$SCRATCH/echo.py" "$ACME_PORT" &
. "$APACHE_CONFDIR/envvars"
APACHE_PID_FILE=$SCRATCH/run/apache2.pid APACHE_RUN_DIR=$SCRATCH/run APACHE_LOCK_DIR=$SCRATCH/run APACHE_LOG_DIR=$SCRATCH/log
export APACHE_PID_FILE APACHE_RUN_DIR APACHE_LOCK_DIR APACHE_LOG_DIR
mkdir -p "$SCRATCH/run" "$SCRATCH/log"
/usr/sbin/apache2 -d "$APACHE_CONFDIR" -D FOREGROUND -c "PidFile $APACHE_PID_FILE" -c "ErrorLog $APACHE_LOG_DIR/error.log" &
i=0
while [ ! -s "$APACHE_PID_FILE" ] && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
sleep 0.5
ask() {
    curl -s --path-as-is -o "$SCRATCH/body" -w '%{http_code} %header{location}' --max-time 5 -H "Host: $1" "http://127.0.0.1$2"
    echo " $(head -c 200 "$SCRATCH/body" | tr -c '[:print:]' ' ')"
}
ask "$HOST1:80" '/_matrix/client/versions?a=%2Fb&c=d%20e'
ask "unknown.example" '/some/where/'
ask "$HOST1" '/.well-known/acme-challenge/t0ken-1'
ask "$HOST2:80" '/.well-known/acme-challenge/t0ken-2'
ask "$HOST2" '/_matrix/media/v3/download/x%2Fy%3Fz//w/../v?q=%3F'
cat "$APACHE_LOG_DIR/error.log" >&2
"""


@pytest.mark.skipif(not _apache_usable() or not shutil.which("curl") or not shutil.which("unshare"),
                    reason="needs Apache, openssl, curl, unshare and root")
@pytest.mark.parametrize("name", ACME)
def test_apache_port_80_passes_the_challenge_and_redirects(rendered, name, tmp_path):
    scratch, env = _candidate(rendered, name, tmp_path)
    if subprocess.run(["unshare", "--net", "--pid", "--fork", "true"], capture_output=True, check=False).returncode:
        pytest.skip("unshare --net --pid is not permitted here")
    (scratch / "echo.py").write_text(ECHO_SERVER)
    variables = VARIANTS[name]
    fqdn = variables.get("matrix_homeserver_fqdn", variables["matrix_server_name"])
    port = variables.get("matrix_acme_challenge_port", 8402)
    env.update(SCRATCH=str(scratch), ACME_PORT=str(port), HOST1=fqdn, HOST2=variables["matrix_server_name"])
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
