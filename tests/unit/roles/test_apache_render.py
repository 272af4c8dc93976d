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
}

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
          'upstream': _apache_upstream, 'body_limit': _matrix_max_body_bytes | int}} | to_json }}}}"
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


def _vhosts(site):
    """{(port, ServerName): body} of the <VirtualHost> sections."""
    found = {}
    for port, body in re.findall(r"^<VirtualHost \*:(\d+)>\n(.*?)^</VirtualHost>", site, re.M | re.S):
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
    for key, body in _vhosts(rendered[name]["site"]).items():
        # TLS on every vhost: Mozilla intermediate, HTTP/2
        assert "SSLEngine on" in body and f'SSLCertificateFile "{CERT}"' in body, key
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


@pytest.mark.skipif(not _apache_usable(), reason="needs Apache (apache2ctl, a2enmod), openssl and root")
@pytest.mark.parametrize("name", VARIANTS)
def test_apache_accepts_the_rendered_configuration(rendered, name, tmp_path):
    vars_main = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    scratch = tmp_path / "stage"
    conf = scratch / "conf"
    shutil.copytree("/etc/apache2", conf, symlinks=True)
    env = dict(os.environ, APACHE_CONFDIR=str(conf), APACHE_STATE_DIRECTORY=str(scratch / "state"))
    for mpm in vars_main["_apache_other_mpms"]:
        subprocess.run(["a2dismod", "-q", mpm], env=env, capture_output=True, check=False)
    for module in [vars_main["_apache_mpm"]] + vars_main["_apache_modules"]:
        subprocess.run(["a2enmod", "-q", module], env=env, capture_output=True, check=True)
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=matrix.example.test"],
        capture_output=True, check=True,
    )
    for dest, text in rendered[name]["files"].items():
        (conf / dest).write_text(text.replace(CERT, str(cert)).replace(KEY, str(key)))
    subprocess.run(["a2enconf", "-q", "mxedge-matrix"], env=env, capture_output=True, check=True)
    subprocess.run(["a2ensite", "-q", "mxedge-matrix"], env=env, capture_output=True, check=True)
    proc = subprocess.run(["apache2ctl", "configtest"], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    trial = subprocess.run(["sh", str(ROLE / "files" / "trial-start.sh"), str(scratch)],
                           capture_output=True, text=True, timeout=60, check=False)
    if trial.returncode == 2:
        pytest.skip(trial.stderr)
    assert trial.returncode == 0, trial.stderr
