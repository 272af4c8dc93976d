"""Render tests for roles/apache: its templates, rendered by Ansible for several variable sets.

One ansible-playbook run (localhost, connection local, no Apache needed) runs the role's
preflight entry point for each variable set (so the real mxedge.matrix.matrix role derives
the shared facts and the apache preflight asserts run) and renders the three templates with
the role's own defaults and vars into one JSON file per variant. The tests read the text.

When Apache is installed and we are root, each rendered set is also put into a scratch copy
of /etc/apache2 the way the role builds its candidate (a2enmod, a2enconf, a2ensite with
APACHE_CONFDIR) and checked with `apache2ctl configtest` and the role's trial start.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import tempfile

import daemon_checks
import pytest
import yaml
from render import OPERATOR_SITE_VARIABLES, SERVICE_VARIABLES, render

ROOT = pathlib.Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles" / "apache"

CERT = "/etc/ssl/mxedge-test/fullchain.pem"
KEY = "/etc/ssl/mxedge-test/privkey.pem"
BASE = {"matrix_tls_certificate": CERT, "matrix_tls_certificate_key": KEY, "matrix_proxy_mode": "dedicated"}

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
    # MAS and MatrixRTC on host names of their own (MX13, MX14); the JWT service's upstream is a DNS
    # name that does not resolve here: mod_proxy resolves a worker's host when it connects, so
    # configtest and the trial start accept it
    "services": dict(SERVICE_VARIABLES, matrix_rtc_jwt_upstream="http://hs.internal:8081", mx_ipv6=True),
}
ACME = [name for name, v in VARIANTS.items() if v.get("matrix_tls_source") == "acme"]

# MX16 Synapse workers on two homeserver hosts: endpoint classes to worker pools, with the main process as fallback.
WORKER_HOSTS = {"hs1": "10.0.0.1", "hs2": "10.0.0.2"}
WORKERS = {
    # two sync workers (sticky by user), two federation readers, one inbound federation worker and one client
    # reader; federation on 8448, the admin API allow-listed, IPv6
    "workers_readers": {
        "matrix_server_name": "example.test",
        "matrix_homeserver_fqdn": "matrix.example.test",
        "matrix_admin_allowed_networks": ["10.0.0.0/8"],
        "matrix_workers": "{{ 'readers' | mxedge.matrix.synapse_worker_layout(['hs1', 'hs2']) }}",
        "matrix_worker_hosts": WORKER_HOSTS,
        "mx_ipv6": True,
    },
    # one worker of every type with stream writers, single port (federation classes on the client vhost),
    # MAS before the worker routes, the homeserver on a UNIX socket
    "workers_one_of_each": dict(
        SERVICE_VARIABLES,
        matrix_federation_port=443,
        matrix_homeserver_socket="/run/synapse/main.sock",
        matrix_rtc_jwt_upstream="http://127.0.0.1:8081",
        matrix_workers="{{ 'one_of_each' | mxedge.matrix.synapse_worker_layout(['hs1', 'hs2']) }}",
        matrix_worker_hosts=WORKER_HOSTS,
        mx_ipv6=False,
    ),
    # readers without stream writers: account data, presence and push rules to the client reader, GET only
    "workers_readers_methods": {
        "matrix_server_name": "example.test",
        "matrix_homeserver_fqdn": "matrix.example.test",
        "matrix_workers": [
            {"name": "sync1", "type": "sync", "host": "hs1", "port": 18101},
            {"name": "sync2", "type": "sync", "host": "hs2", "port": 18101},
            {"name": "reader1", "type": "client_reader", "host": "hs1", "port": 18102},
            {"name": "reader2", "type": "client_reader", "host": "hs2", "port": 18102},
            {"name": "creator1", "type": "event_creator", "host": "hs1", "port": 18103},
            {"name": "creator2", "type": "event_creator", "host": "hs2", "port": 18103},
            {"name": "inbound1", "type": "federation_inbound", "host": "hs1", "port": 18104},
            {"name": "inbound2", "type": "federation_inbound", "host": "hs2", "port": 18104},
        ],
        "matrix_worker_hosts": WORKER_HOSTS,
        "mx_ipv6": False,
    },
}

# matrix_proxy_mode=alongside (MX15): the operator's Apache as preflight would read it (mx_operator: what
# apache2ctl -S and the Listen lines say; the render pretends apache2ctl is absent so nothing is read here).
OPERATOR_SITES = [
    {"port": 443, "names": ["example.test"], "default": True, "where": "/etc/apache2/sites-enabled/example.test.conf:2",
     "address": "*"},
    {"port": 443, "names": ["unrelated.test"], "default": False,
     "where": "/etc/apache2/sites-enabled/unrelated.test.conf:2", "address": "*"},
]
ALONGSIDE = {
    # delegated from a host the operator does not serve (the documents in a vhost of the role's), federation on
    # 8448, where no Listen of the operator's is: the role's site lists it
    "alongside_own_well_known": {
        "matrix_server_name": "other.test",
        "matrix_homeserver_fqdn": "matrix.example.test",
        "matrix_proxy_mode": "alongside",
        "mx_operator": {"listeners": OPERATOR_SITES, "listen_ports": [80, 443]},
        "mx_ipv6": True,
    },
    # Synapse workers alongside the operator's Apache (MX16, MX15): the worker modules are enabled like the others
    "alongside_workers": {
        "matrix_server_name": "other.test",
        "matrix_homeserver_fqdn": "matrix.example.test",
        "matrix_proxy_mode": "alongside",
        "matrix_workers": "{{ 'readers' | mxedge.matrix.synapse_worker_layout(['hs1', 'hs2']) }}",
        "matrix_worker_hosts": WORKER_HOSTS,
        "mx_operator": {"listeners": OPERATOR_SITES, "listen_ports": [80, 443]},
        "mx_ipv6": False,
    },
    # the molecule shape: single port 443, the operator's example.test website includes the snippet
    "alongside_snippet": {
        **OPERATOR_SITE_VARIABLES,
        "mx_operator": {"listeners": OPERATOR_SITES, "listen_ports": [80, 443]},
        "mx_ipv6": False,
    },
}

PLAYBOOK = """
- name: Render the apache role's templates for one variable set per host
  hosts: all
  connection: local
  gather_facts: false
  tasks:
    - name: Pretend the operator's Apache of an alongside variant (apache2ctl absent, so preflight reads nothing)
      ansible.builtin.set_fact:
        _apache_ctl: mxedge-render-no-apache2ctl
        _apache_operator_listeners: "{{{{ mx_operator.listeners }}}}"
        _apache_operator_listen_ports: "{{{{ mx_operator.listen_ports }}}}"
      when: mx_operator is defined
    - name: Load the apache role (defaults, vars, the matrix dependency) and run its preflight
      ansible.builtin.include_role:
        name: mxedge.matrix.apache
        tasks_from: preflight
        public: true
    - name: Pretend the host's IPv6 of this variant
      ansible.builtin.set_fact:
        _matrix_ipv6: "{{{{ mx_ipv6 }}}}"
    - name: Load how mxedge.matrix.proxy_common names the files it publishes for the role
      ansible.builtin.include_vars:
        file: "{role}/../proxy_common/vars/main.yml"
    - name: Write what the templates render to and the derived values, in one file per variant
      ansible.builtin.copy:
        dest: "{out}/{{{{ inventory_hostname }}}}.json"
        mode: "0644"
        content: "{{{{ {{'files': __files, 'placement': _matrix_well_known_placement, 'ports': _matrix_tls_ports,
          'upstreams': _apache_upstream_urls, 'body_limit': _matrix_max_body_bytes | int, 'routes': _matrix_routes,
          'documents': __proxy_common_files | list + _apache_documents.keep,
          'cert': _matrix_tls_certificate_path, 'key': _matrix_tls_key_path, 'modules': _apache_wanted_modules,
          'balancers': _apache_balancers}} | to_json }}}}"
      vars:
        proxy_common_documents: "{{{{ _apache_documents }}}}"
        __files: "{{{{ dict(_apache_config_files | map(attribute='dest') | zip(query('ansible.builtin.template',
          *(_apache_config_files | map(attribute='src') | map('regex_replace', '^', '{role}/templates/'))))) }}}}"
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("apache-render")
    variants = dict(VARIANTS, **ALONGSIDE, **WORKERS)
    data_by_name = render(out, PLAYBOOK.format(role=ROLE, out=out), {name: dict(BASE, **v) for name, v in variants.items()})
    result = {}
    for name in variants:
        data = data_by_name[name]
        files = data.pop("files")
        result[name] = {
            "files": files,
            "ports_conf": files.get("ports.conf"),
            "server": files.get("conf-available/mxedge-matrix.conf"),
            "site": files["sites-available/mxedge-matrix.conf"],
            "snippet": files.get("mxedge-matrix/well-known.conf"),
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


def _locations(body):
    """{path: text} of the <Location> sections of a virtual host's body ({regex: text} for <LocationMatch>)."""
    return dict(re.findall(r'^\s*<Location(?:Match)? "([^"]+)">\n(.*?)^\s*</Location(?:Match)?>', body, re.M | re.S))


def _section(route):
    """The <Location> (or <LocationMatch>) argument of a route: a prefix route that covers the error
    documents ("/") is a <LocationMatch> of its path without them."""
    path = route["match"]["path"]
    if route["match"]["kind"] == "regex":
        return route["match"]["pattern"]
    if route["match"]["kind"] == "prefix" and re.match(route["match"]["raw_regex"], ERROR_PREFIX):
        return "^" + re.escape(path) + "(?!" + re.escape(ERROR_PREFIX[len(path):]) + ")"
    return path


def _table_vhost(rendered, name, vhost_name):
    """(route-table vhost, its rendered body) for a variant."""
    vhost = next(v for v in rendered[name]["derived"]["routes"]["vhosts"] if v["name"] == vhost_name)
    site = rendered[name]["site"]
    if vhost["tls"]:
        return vhost, _vhosts(site)[(vhost["port"], vhost["hosts"][0])]
    return vhost, next(iter(_vhosts(site, tls=False).values()))


ERROR_PREFIX = "/.mxedge-matrix-error/"
# The client endpoints MAS answers (MX13), under every client API version.
MAS_VERSIONS = ("api/v1", "r0", "v3", "unstable")
MAS_ENDPOINTS = ("login", "logout", "refresh")
SERVICES = [name for name, v in VARIANTS.items() if v.get("matrix_mas_url")]
# The raw-URI check of a route (MX04): the request target of the request line
# (origin form, or the path of an absolute URI) must match the route's raw_regex.
RAW_CHECK = re.compile(
    r'<If "! %\{THE_REQUEST\} =~ m#(?P<target>[^#]+)# \|\| ! \'\$1\' =~ m#(?P<raw>[^#]+)#">\s*Redirect 404\s*</If>'
)
# The same for a route restricted to some methods (MX16): only requests of its methods are its.
RAW_CHECK_METHODS = re.compile(
    r'<If "%\{REQUEST_METHOD\} in \{[^}]+\} && \(! %\{THE_REQUEST\} =~ m#(?P<target>[^#]+)# \|\| '
    r'! \'\$1\' =~ m#(?P<raw>[^#]+)#\)">\s*Redirect 404\s*</If>'
)


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
            if target == "!":
                assert prefix == ERROR_PREFIX, key  # the error documents under a "/" route stay Apache's
                continue
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
    networks = variables.get("matrix_admin_allowed_networks", [])
    vhosts = _vhosts(rendered[name]["site"])
    client = vhosts[(client_port, fqdn)]
    # MX01, MX06: forward routes in the table's order (mod_proxy takes the first match); the admin
    # prefix is forwarded only when allow-listed, and then only to the listed addresses
    own = [p for p, t, _opts in _proxy_passes(client) if "8009" not in t]
    compat = [f"/_matrix/client/{v}/{e}" for v in MAS_VERSIONS for e in MAS_ENDPOINTS] if "matrix_mas_url" in variables else []
    assert own == ([admin] if networks else []) + compat + client_prefixes
    rule = f"Require ip {' '.join(networks)}" if networks else "Require all denied"
    assert rule in _locations(client)[admin]
    if federation_port != client_port:
        # MX02: /_matrix only; admin refused whatever the allow-list
        federation = vhosts[(federation_port, fqdn)]
        assert [p for p, _target, _opts in _proxy_passes(federation)] == ["/_matrix"]
        assert "Require all denied" in _locations(federation)[admin]
        assert "Require ip" not in federation
    else:
        assert len([k for k in vhosts if k[1] == fqdn]) == 1
    # <Location> sections in reverse table order: the first route's merges last and wins
    table_client, _body = _table_vhost(rendered, name, "client")
    routes = [p for p in _locations(client) if not p.startswith(ERROR_PREFIX)]
    assert routes == [r["match"]["path"] for r in reversed(table_client["routes"])]
    # MX11 fallback: nothing but the routed prefixes (and the error documents) reaches anything;
    # what mod_proxy does not claim (refused and static routes) is left to its <Location>/Alias
    for key, body in vhosts.items():
        claimed = re.search(r'^\s*RedirectMatch 404 "\^\(\?!(.*)\)"$', body, re.M)
        assert claimed, key
        assert claimed.group(1).startswith("/\\.mxedge\\-matrix\\-error/"), key


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
        serving = [k for k, body in vhosts.items() if 'Alias "/.well-known/matrix/server"' in body]
        assert serving == ([key] if key else []), name
        documents = rendered[name]["derived"]["documents"]
        for k, body in vhosts.items():
            if k != key:
                assert ".well-known/matrix" not in body, (name, k)
                continue
            # MX03: answered by Apache from the files of the table's bytes, JSON, CORS
            vhost = next(v for v in rendered[name]["derived"]["routes"]["vhosts"] if v["hosts"][0] == k[1] and v["port"] == k[0])
            locations = _locations(body)
            for kind in ("server", "client"):
                path = f"/.well-known/matrix/{kind}"
                target = f"/var/www/mxedge-matrix/static/{vhost['name']}-well-known-{kind}"
                assert f'Alias "{path}" "{target}"' in body, (name, kind)
                assert target in documents
                assert "ForceType application/json" in locations[path]
                assert 'Header always set Access-Control-Allow-Origin "*"' in locations[path]
            # Aliases are mod_alias's too: the fallback must leave the documents to them
            fallback = re.search(r'^\s*RedirectMatch 404 "(.*)"$', body, re.M).group(1)
            assert "|^/\\.well-known/matrix/server(?:[?]|$)|^/\\.well-known/matrix/client(?:[?]|$))" in fallback
    # a vhost of its own answers nothing else
    separate = _vhosts(rendered["delegated"]["site"])[(443, "example.test")]
    assert _proxy_passes(separate) == []


def test_upstreams(rendered):
    assert rendered["delegated"]["derived"]["upstreams"] == {"homeserver": "http://127.0.0.1:8008"}
    assert rendered["same_host_not_on_443"]["derived"]["upstreams"] == {"homeserver": "http://[::1]:8008"}
    assert rendered["acme_client_8443"]["derived"]["upstreams"] == {
        "homeserver": "http://127.0.0.1:8008", "acme": "http://127.0.0.1:8500"}
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
        ("/.well-known/acme-challenge", f"http://127.0.0.1:{port}/.well-known/acme-challenge",
         " nocanon retry=0 connectiontimeout=10 timeout=600")]
    assert "ProxyPreserveHost On" in body and "UseCanonicalName Off" in body
    suffix = "" if variables.get("matrix_client_port", 443) == 443 else f":{variables['matrix_client_port']}"
    rules = re.findall(r'^\s*RewriteRule "\^" "([^"]+)" \[([^\]]+)\]$', body, re.M)
    assert rules == [(f"https://%{{SERVER_NAME}}{suffix}%1", "R=301,L,NE"),
                     (f"https://%{{SERVER_NAME}}{suffix}%{{REQUEST_URI}}", "R=301,L")]
    # the redirect leaves the challenge route (and the error documents) alone
    assert body.count('RewriteCond %{REQUEST_URI} "!^/\\.well-known/acme-challenge(?:[/?]|$)"') == 2
    assert body.count('RewriteCond %{REQUEST_URI} "!^/\\.mxedge\\-matrix\\-error/"') == 2
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


@pytest.mark.parametrize("name", VARIANTS)
def test_proxy_errors_are_the_tables_matrix_json(rendered, name):
    """MX11: what Apache answers itself is the table's Matrix error: its bytes, JSON, CORS, Retry-After."""
    errors = rendered[name]["derived"]["routes"]["errors"]
    assert sorted(int(status) for status in errors) == [403, 404, 413, 502, 503, 504]
    documents = rendered[name]["derived"]["documents"]
    assert "/var/www/mxedge-matrix/errors/400" in documents
    assert "asis" in rendered[name]["derived"]["modules"]
    site = rendered[name]["site"]
    vhosts = list(_vhosts(site).items()) + list(_vhosts(site, tls=False).items())
    for key, body in vhosts:
        # the bodies are files of the table's bytes, served by an internal redirect (the status stays)
        assert f'Alias "{ERROR_PREFIX}" "/var/www/mxedge-matrix/errors/"' in body, key
        locations = _locations(body)
        assert "ForceType application/json" in locations[ERROR_PREFIX], key
        assert 'Header always set Access-Control-Allow-Origin "*"' in locations[ERROR_PREFIX], key
        # asked for directly (no REDIRECT_STATUS), the prefix is an unrouted path
        assert re.search(r'<If "-z %\{ENV:REDIRECT_STATUS\}">\s*Redirect 404\s*</If>', locations[ERROR_PREFIX]), key
        for status, error in errors.items():
            assert f"/var/www/mxedge-matrix/errors/{status}" in documents
            assert re.search(rf"^\s*ErrorDocument {status} {re.escape(ERROR_PREFIX)}{status}$", body, re.M), (key, status)
            retry = locations.get(f"{ERROR_PREFIX}{status}", "")
            if "retry_after" in error:
                assert f'Header always set Retry-After "{error["retry_after"]}"' in retry, (key, status)
            else:
                assert "Retry-After" not in retry, (key, status)
        # Apache's own 400 (a path above the root, ...) is the unrouted-path 404, status included (mod_asis)
        assert re.search(rf"^\s*ErrorDocument 400 {re.escape(ERROR_PREFIX)}400$", body, re.M), key
        assert "SetHandler send-as-is" in locations[f"{ERROR_PREFIX}400"], key
        # the homeserver's own errors pass through untouched
        assert not re.search(r"^\s*ProxyErrorOverride", body, re.M), key
    # every refusal and fallback status of the table has its error document
    for vhost in rendered[name]["derived"]["routes"]["vhosts"]:
        statuses = {r["status"] for r in vhost["routes"] if r["action"] == "refuse"}
        statuses |= {r["refuse"]["status"] for r in vhost["routes"] if r.get("refuse")}
        statuses |= {vhost["fallback"]["status"]} if vhost["tls"] else set()
        assert statuses <= {int(status) for status in errors}, vhost["name"]


@pytest.mark.parametrize("name", list(VARIANTS) + list(WORKERS))
def test_raw_uri_checked_on_every_route(rendered, name):
    """MX04: every forward and static route, exact ones included, has the raw-URI check of its raw_regex.

    Issue 18: nginx forwarded /_synapse/admin/v2/users/%2E%2E%2F...%2Fhealth to Synapse because its
    exact /health location had no raw check. Here no route is without one.
    """
    exact_forwarded = 0
    for vhost in rendered[name]["derived"]["routes"]["vhosts"]:
        _vhost, body = _table_vhost(rendered, name, vhost["name"])
        locations = _locations(body)
        for route in vhost["routes"]:
            block = locations[_section(route)]
            if route["action"] == "refuse":
                assert "Require all denied" in block, route["id"]
                continue
            checks = (RAW_CHECK_METHODS if route["match"]["methods"] else RAW_CHECK).findall(block)
            assert [raw for _target, raw in checks] == [route["match"]["raw_regex"]], (vhost["name"], route["id"])
            exact_forwarded += route["match"]["kind"] == "exact" and route["action"] == "forward"
    assert exact_forwarded >= 1  # /health


RAW_CASES = [
    # (request line, route path, kind, expected)
    ("GET /health HTTP/1.1", "/health", "exact", True),
    ("GET /health?x=1 HTTP/2.0", "/health", "exact", True),
    ("GET https://matrix.example.test/health HTTP/1.1", "/health", "exact", True),
    ("GET /health/x HTTP/1.1", "/health", "exact", False),
    ("GET /_matrix/../health HTTP/1.1", "/health", "exact", False),
    ("GET /_synapse/admin/v2/users/%2E%2E%2F%2E%2E%2F%2E%2E%2F%2E%2E%2Fhealth HTTP/1.1", "/health", "exact", False),
    ("GET /_synapse/client/../admin/v1/server_version HTTP/1.1", "/_synapse/admin", "prefix", False),
    ("GET //_matrix/client/versions HTTP/1.1", "/_matrix", "prefix", False),
    ("GET /_matrix/client/versions HTTP/1.1", "/_matrix", "prefix", True),
    ("GET /_matrix?x HTTP/1.1", "/_matrix", "prefix", True),
    ("GET /_matrixfoo HTTP/1.1", "/_matrix", "prefix", False),
    ("GET /.well-known/matrix/server HTTP/1.1", "/.well-known/matrix/server", "exact", True),
    ("GET /.well-known/matrix/server/ HTTP/1.1", "/.well-known/matrix/server", "exact", False),
]


@pytest.mark.parametrize(("line", "path", "kind", "expected"), RAW_CASES)
def test_raw_uri_check_expression(rendered, line, path, kind, expected):
    """MX04: the rendered expression, read with Python's re (PCRE agrees on these), admits exactly the raw URIs of its route."""
    for vhost in rendered["delegated"]["derived"]["routes"]["vhosts"]:
        for route in vhost["routes"]:
            if route["match"]["path"] == path and route["match"]["kind"] == kind and route["action"] != "refuse":
                block = _locations(_table_vhost(rendered, "delegated", vhost["name"])[1])[path]
                target, raw = RAW_CHECK.search(block).groups()
                found = re.search(target, line)
                assert bool(found and re.search(raw, found.group(1))) == expected, (line, raw)
                return
    pytest.fail(f"no forward or static route {kind} {path}")


# The services on host names of their own (variant "services"): (vhost, host, ProxyPass target, timeout, upgrade).
SERVICE_CASES = [
    ("mas", "auth.example.test", "http://127.0.0.1:8080/", 600, False),
    ("rtc_jwt", "rtc-jwt.example.test", "http://hs.internal:8081/", 600, False),
    ("rtc_sfu", "sfu.example.test", "http://127.0.0.1:7880/", 3600, True),
]


@pytest.mark.parametrize(("vhost_name", "host", "target", "timeout", "upgrade"), SERVICE_CASES)
def test_service_vhosts_answer_only_their_host_and_forward_it_whole(rendered, vhost_name, host, target, timeout, upgrade):
    """MX13, MX14: one virtual host per service, named by its host only, "/" to its upstream, URI unmodified."""
    site = rendered["services"]["site"]
    vhosts = _vhosts(site)
    body = vhosts[(443, host)]
    assert re.findall(r"^\s*ServerAlias (\S+)$", body, re.M) == []
    # no other virtual host answers the service's name
    for key, other in vhosts.items():
        if key != (443, host):
            assert not re.search(rf"^\s*Server(?:Name|Alias) {re.escape(host)}$", other, re.M), key
    # Apache sends a Host no virtual host names to the first one of the port: the client's, not a service's
    assert site.index("ServerName matrix.example.test") < site.index(f"ServerName {host}")
    params = f" nocanon retry=0 connectiontimeout=10 timeout={timeout}" + (" upgrade=websocket" if upgrade else "")
    # the error documents stay Apache's (an ErrorDocument is an internal redirect, "/" would proxy it)
    assert _proxy_passes(body) == [(ERROR_PREFIX, "!", ""), ("/", target, params)]
    vhost, _body = _table_vhost(rendered, "services", vhost_name)
    assert rendered["services"]["derived"]["upstreams"][vhost_name] == target.rstrip("/")
    # the route's checks (raw URI, body limit) apply to all of "/" but the error documents
    section = _locations(body)[_section(vhost["routes"][0])]
    assert "<LocationMatch \"^/(?!\\.mxedge\\-matrix\\-error/)\">" in body
    assert f"LimitRequestBody {rendered['services']['derived']['body_limit']}" in section
    assert [raw for _target, raw in RAW_CHECK.findall(section)] == ["^/"]
    assert _cited({"site": body}) >= set(vhost["routes"][0]["behaviours"])


@pytest.mark.parametrize(("version", "endpoint"), [(v, e) for v in MAS_VERSIONS for e in MAS_ENDPOINTS])
def test_mas_compat_routes_go_to_mas_before_the_client_api(rendered, version, endpoint):
    """MX13: login, logout and refresh of every client API version go to MAS, ahead of /_matrix (first match wins)."""
    client = _vhosts(rendered["services"]["site"])[(443, "matrix.example.test")]
    passes = _proxy_passes(client)
    paths = [p for p, _target, _opts in passes]
    path = f"/_matrix/client/{version}/{endpoint}"
    _p, target, params = passes[paths.index(path)]
    assert target == "http://127.0.0.1:8080" + path
    assert "timeout=600" in params and "upgrade=" not in params
    assert paths.index(path) < paths.index("/_matrix")
    # its <Location> merges after /_matrix's (reverse order), with its own raw-URI check
    block = _locations(client)[path]
    assert [raw for _t, raw in RAW_CHECK.findall(block)] == [f"^{re.escape(path)}(?:[/?]|$)"]
    sections = list(_locations(client))
    assert sections.index(path) > sections.index("/_matrix")


@pytest.mark.parametrize("name", VARIANTS)
def test_websocket_upgrade_only_on_tunnel_routes(rendered, name):
    """MX14: upgrade=websocket (mod_proxy_http) and apache_tunnel_timeout on tunnel routes; elsewhere neither."""
    tunnels = 0
    for vhost in rendered[name]["derived"]["routes"]["vhosts"]:
        _vhost, body = _table_vhost(rendered, name, vhost["name"])
        passes = {p: opts for p, target, opts in _proxy_passes(body) if target != "!" and "8009" not in target}
        for route in vhost["routes"]:
            if route["action"] != "forward":
                continue
            opts = passes[route["match"]["path"]]
            tunnel = route["policy"]["timeout"] == "tunnel"
            tunnels += tunnel
            assert ("upgrade=websocket" in opts.split()) == tunnel, (vhost["name"], route["id"])
            assert re.search(r"\btimeout=(\d+)", opts).group(1) == ("3600" if tunnel else "600"), route["id"]
    assert tunnels == (1 if name in SERVICES else 0)
    # mod_proxy_http tunnels the upgrade itself (2.4.47+); mod_proxy_wstunnel is not needed
    assert "proxy_http" in rendered[name]["derived"]["modules"]
    assert "proxy_wstunnel" not in rendered[name]["derived"]["modules"]


def test_tunnel_timeout_default_in_lockstep():
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    spec = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
    option = spec["argument_specs"]["main"]["options"]["apache_tunnel_timeout"]
    assert defaults["apache_tunnel_timeout"] == option["default"] == 3600
    assert option["type"] == "int"


CONTRACT = ROOT / "docs" / "contract.md"
# Behaviours of every vhost, whatever the route table holds.
EVERY_CONFIGURATION = {"MX05", "MX08", "MX09", "MX10", "MX11"}


def _contract_behaviours(flavour="Apache"):
    """IDs the contract's behaviour table lists for a flavour (its cell says yes or partly)."""
    rows = [line.split("|")[1:-1] for line in CONTRACT.read_text().splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in rows[0]]
    column = header.index(flavour)
    return {row[0].strip() for row in rows[1:]
            if re.fullmatch(r"MX\d\d", row[0].strip()) and re.match(r"(yes|partly)\b", row[column].strip())}


def _cited(files):
    """Behaviour IDs named in the comment lines of the rendered files."""
    return {found for text in files.values() for comment in re.findall(r"^\s*#(.*)$", text, re.M)
            for found in re.findall(r"\bMX\d\d\b", comment)}


@pytest.mark.parametrize("name", list(VARIANTS) + list(WORKERS))
def test_rendered_configuration_cites_every_behaviour(rendered, name):
    """Every behaviour the contract lists for Apache, and that applies to this variant, is cited in a comment."""
    listed = _contract_behaviours()
    assert {f"MX{n:02d}" for n in range(1, 13)} <= listed
    table = rendered[name]["derived"]["routes"]
    applies = {b for vhost in table["vhosts"] for route in vhost["routes"] for b in route["behaviours"]}
    applies |= EVERY_CONFIGURATION | ({"MX12"} if any(not v["tls"] for v in table["vhosts"]) else set())
    missing = (listed & applies) - _cited(rendered[name]["files"])
    assert not missing, f"the rendered configuration cites no {sorted(missing)}"


def test_every_behaviour_is_cited_by_some_variant(rendered):
    cited = set().union(*(_cited(rendered[name]["files"]) for name in list(VARIANTS) + list(ALONGSIDE) + list(WORKERS)))
    assert _contract_behaviours() <= cited


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
@pytest.mark.parametrize("name", list(VARIANTS) + list(WORKERS))
def test_apache_accepts_the_rendered_configuration(rendered, name, tmp_path):
    scratch, env = _candidate(rendered, name, tmp_path)
    apache = f"Apache {daemon_checks.host_version('apache2')} (this machine)"
    proc = subprocess.run(["apache2ctl", "configtest"], env=env, capture_output=True, text=True, check=False)
    daemon_checks.record(f"{apache}: apache2ctl configtest")
    assert proc.returncode == 0, proc.stderr
    trial = subprocess.run(["sh", str(ROLE / "files" / "trial-start.sh"), str(scratch)],
                           capture_output=True, text=True, timeout=60, check=False)
    if trial.returncode == 2:
        pytest.skip(trial.stderr)
    daemon_checks.record(f"{apache}: trial start (roles/apache/files/trial-start.sh, unshare --net --pid)")
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
    daemon_checks.record(f"Apache {daemon_checks.host_version('apache2')} (this machine): "
                         "port 80 answering curl (unshare --net --pid)")
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


# Stand-ins for MAS, the SFU and the homeserver: an Upgrade request is answered 101 and the
# connection then echoes what it gets; any other request is answered with what arrived.
SERVICE_STANDIN = """
import socket, sys, threading
def serve(conn):
    data = b""
    while b"\\r\\n\\r\\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return
        data += chunk
    head = data.split(b"\\r\\n\\r\\n")[0].decode()
    lines = head.split("\\r\\n")
    headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    upgrade = headers.get("upgrade", "none")
    if upgrade.lower() == "websocket":
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n\\r\\n")
        while True:
            chunk = conn.recv(4096)
            if not chunk:
                return
            conn.sendall(b"echo:" + chunk)
    body = ("port=%s host=%s target=%s upgrade=%s" % (sys.argv[1], headers.get("host"), lines[0].split()[1], upgrade)).encode()
    conn.sendall(b"HTTP/1.1 200 OK\\r\\nConnection: close\\r\\nContent-Length: %d\\r\\n\\r\\n%s" % (len(body), body))
    conn.close()
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen(16)
while True:
    threading.Thread(target=serve, args=(server.accept()[0],), daemon=True).start()
"""

# A WebSocket handshake over TLS (HTTP/1.1), then one message each way, a pause, another.
WS_CLIENT = """
import socket, ssl, sys, time
host, path = sys.argv[1], sys.argv[2]
context = ssl.create_default_context()
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
context.set_alpn_protocols(["http/1.1"])
conn = context.wrap_socket(socket.create_connection(("127.0.0.1", 443), timeout=5), server_hostname=host)
conn.sendall(("GET %s HTTP/1.1\\r\\nHost: %s\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n"
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n" % (path, host)).encode())
data = b""
while b"\\r\\n\\r\\n" not in data:
    chunk = conn.recv(4096)
    if not chunk:
        break
    data += chunk
head, _sep, rest = data.partition(b"\\r\\n\\r\\n")
status = head.split(b"\\r\\n")[0].decode()
if not status.startswith("HTTP/1.1 101"):
    print(status, rest.decode(errors="replace")[:200].replace("\\n", " "))
    sys.exit(0)
answers = []
for message in (b"ping-1", b"ping-2"):
    conn.sendall(message)
    answers.append(conn.recv(4096).decode())
    time.sleep(2)
print(status, " ".join(answers))
"""

SERVICES_LIVE_SCRIPT = r"""
set -u
ip link set lo up
for port in 8008 8080 7880; do python3 "$SCRATCH/standin.py" "$port" & done
. "$APACHE_CONFDIR/envvars"
APACHE_PID_FILE=$SCRATCH/run/apache2.pid APACHE_RUN_DIR=$SCRATCH/run APACHE_LOCK_DIR=$SCRATCH/run APACHE_LOG_DIR=$SCRATCH/log
export APACHE_PID_FILE APACHE_RUN_DIR APACHE_LOCK_DIR APACHE_LOG_DIR
mkdir -p "$SCRATCH/run" "$SCRATCH/log"
/usr/sbin/apache2 -d "$APACHE_CONFDIR" -D FOREGROUND -c "PidFile $APACHE_PID_FILE" -c "ErrorLog $APACHE_LOG_DIR/error.log" &
i=0
while [ ! -s "$APACHE_PID_FILE" ] && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
sleep 0.5
ask() {
    host=$1
    shift
    curl -sk --http1.1 --path-as-is -o "$SCRATCH/body" -w '%{http_code} %{content_type}' --max-time 5 \
        --resolve "$host:443:127.0.0.1" "$@" 2>/dev/null
    echo " $(head -c 200 "$SCRATCH/body" | tr -c '[:print:]' ' ')"
}
ask auth.example.test 'https://auth.example.test/oauth2/%2Fx/../y?q=1'
ask matrix.example.test https://matrix.example.test/_matrix/client/v3/login
ask matrix.example.test https://matrix.example.test/_matrix/client/v3/sync
ask rtc-jwt.example.test https://rtc-jwt.example.test/sfu/get
ask sfu.example.test https://sfu.example.test/rtc -X POST -H "Content-Length: $OVER_LIMIT" -H 'Expect:'
python3 "$SCRATCH/ws.py" sfu.example.test '/rtc?access_token=t'
python3 "$SCRATCH/ws.py" auth.example.test /ws
cat "$APACHE_LOG_DIR/error.log" >&2
"""


@pytest.mark.skipif(not _apache_usable() or not shutil.which("curl") or not shutil.which("unshare"),
                    reason="needs Apache, openssl, curl, unshare and root")
def test_apache_forwards_the_services_and_tunnels_websocket(rendered, tmp_path):
    """MX13, MX14 live: Apache on the rendered services variant, stand-in upstreams, in namespaces of their own."""
    scratch, env = _candidate(rendered, "services", tmp_path)
    if subprocess.run(["unshare", "--net", "--pid", "--fork", "true"], capture_output=True, check=False).returncode:
        pytest.skip("unshare --net --pid is not permitted here")
    (scratch / "standin.py").write_text(SERVICE_STANDIN)
    (scratch / "ws.py").write_text(WS_CLIENT)
    env.update(SCRATCH=str(scratch), OVER_LIMIT=str(rendered["services"]["derived"]["body_limit"] + 1))
    proc = subprocess.run(["unshare", "--net", "--pid", "--fork", "--kill-child", "sh", "-c", SERVICES_LIVE_SCRIPT],
                          env=env, capture_output=True, text=True, timeout=90, check=False)
    daemon_checks.record(f"Apache {daemon_checks.host_version('apache2')} (this machine): "
                         "services and WebSocket answering curl (unshare --net --pid)")
    answers = proc.stdout.splitlines()
    assert len(answers) == 7, proc.stdout + proc.stderr
    # MAS's host, whole, the URI as sent (MX04), Host kept
    assert answers[0].endswith("port=8080 host=auth.example.test target=/oauth2/%2Fx/../y?q=1 upgrade=none"), answers[0]
    # the compat route to MAS, the rest of the client API to the homeserver
    assert answers[1].endswith("port=8080 host=matrix.example.test target=/_matrix/client/v3/login upgrade=none")
    assert answers[2].endswith("port=8008 host=matrix.example.test target=/_matrix/client/v3/sync upgrade=none")
    # an upstream name that does not resolve (hs.internal): mod_proxy answers 500 "DNS lookup failure" itself, a
    # status the table has no error for, so it is Apache's HTML page (docs/apache.md, "What Apache cannot express")
    assert answers[3].startswith("500 text/html") and "DNS lookup failure" in proc.stderr, answers[3]
    # a declared body over the limit on a "/" route is 413 before the upstream is asked (MX08). The body of
    # this 413 (Content-Length declared, body never sent) is Apache's page on /_matrix too: not checked here
    assert answers[4].startswith("413 "), answers[4]
    # the tunnel route upgrades and carries data both ways; a default route does not upgrade
    assert answers[5] == "HTTP/1.1 101 Switching Protocols echo:ping-1 echo:ping-2", proc.stderr
    assert answers[6].startswith("HTTP/1.1 200") and answers[6].endswith("upgrade=none"), answers[6]


def test_alongside_writes_only_files_of_its_own(rendered):
    """MX15: no ports.conf, no server-wide conf; the site, and the snippet only when the operator's website includes it."""
    assert sorted(rendered["alongside_own_well_known"]["files"]) == ["sites-available/mxedge-matrix.conf"]
    assert sorted(rendered["alongside_snippet"]["files"]) == [
        "mxedge-matrix/well-known.conf", "sites-available/mxedge-matrix.conf"]
    for name in ALONGSIDE:
        site = rendered[name]["site"]
        assert "# MX15 alongside the operator's Apache" in site
        for directive in ("ServerLimit", "ThreadsPerChild", "MaxRequestWorkers", "ListenBacklog", "KeepAlive",
                          "ServerTokens", "Timeout ", "SSLSessionCache", "Mutex"):
            assert not re.search(rf"^\s*{directive}", site, re.M), (name, directive)
        # mod_http2 is loaded by the site itself: a2enmod would enable Debian's http2.conf, whose server-wide
        # "Protocols h2 h2c http/1.1" changes the operator's websites (ALPN h2, "Upgrade: h2,h2c")
        assert "http2" not in rendered[name]["derived"]["modules"], name
        assert ("<IfModule !http2_module>\n    LoadModule http2_module /usr/lib/apache2/modules/mod_http2.so\n"
                "</IfModule>") in site, name
        assert "Protocols h2 http/1.1" in site
    for name in VARIANTS:
        assert "MX15" not in rendered[name]["site"], name
        assert "http2" in rendered[name]["derived"]["modules"] and "LoadModule" not in rendered[name]["site"], name


def test_alongside_lists_only_ports_the_operator_does_not(rendered):
    def listens(name):
        return re.findall(r"^Listen (.+)$", rendered[name]["site"], re.M)

    # 443 is the operator's (ports.conf); 8448 is not: the role's site listens there (IPv6 too)
    assert listens("alongside_own_well_known") == ["0.0.0.0:8448 https", "[::]:8448 https"]
    assert listens("alongside_snippet") == []
    for name in VARIANTS:
        assert listens(name) == [], name


def test_alongside_snippet_serves_the_well_known_routes_inside_the_operators_site(rendered):
    site, snippet = rendered["alongside_snippet"]["site"], rendered["alongside_snippet"]["snippet"]
    # no virtual host of the role's for the operator's website
    assert list(_vhosts(site)) == [(443, "matrix.example.test")]
    assert not re.search(r"^\s*(<VirtualHost|RedirectMatch|ErrorDocument|Listen)", snippet, re.M)
    vhost = next(v for v in rendered["alongside_snippet"]["derived"]["routes"]["vhosts"] if v["name"] == "well_known")
    assert vhost["snippet"] is True
    static = [r for r in vhost["routes"] if r["action"] == "static"]
    assert [r["id"] for r in static] == ["well-known-server", "well-known-client", "support"]
    locations = _locations(snippet)
    for route in static:
        target = f"/var/www/mxedge-matrix/static/well_known-{route['id']}"
        assert f'Alias "{route["match"]["path"]}" "{target}"' in snippet
        assert target in rendered["alongside_snippet"]["derived"]["documents"]
        assert "ForceType application/json" in locations[route["match"]["path"]]
        assert 'Header always set Access-Control-Allow-Origin "*"' in locations[route["match"]["path"]]
        assert f'ProxyPass "{route["match"]["path"]}" "!"' in snippet
    assert "Require all denied" in locations["/.well-known/matrix/policy"]
    # the snippet's own routes, in reverse order (the last merged <Location> wins)
    assert list(locations) == [r["match"]["path"] for r in reversed(vhost["routes"])]


def _operator_tree(rendered, name, tmp_path):
    """Debian's stock /etc/apache2 (this machine's package files) with two TLS websites of an operator's, the
    role's files and, in example.test's <VirtualHost>, the role's two marked lines; (scratch, site file)."""
    vars_main = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    scratch = tmp_path / "stage"
    conf = scratch / "conf"
    shutil.copytree("/etc/apache2", conf, symlinks=True)
    env = dict(os.environ, APACHE_CONFDIR=str(conf), APACHE_STATE_DIRECTORY=str(scratch / "state"))
    for module in ["ssl", "headers"] + rendered[name]["derived"]["modules"]:
        subprocess.run(["a2enmod", "-q", module], env=env, capture_output=True, check=True)
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=example.test"],
        capture_output=True, check=True,
    )
    (conf / "mxedge-matrix").mkdir()
    for dest, text in rendered[name]["files"].items():
        derived = rendered[name]["derived"]
        (conf / dest).write_text(text.replace(derived["cert"], str(cert)).replace(derived["key"], str(key)))
    marker, include = vars_main["_apache_include_marker"], "Include /etc/apache2/mxedge-matrix/well-known.conf"
    for host in ("example.test", "unrelated.test"):
        lines = ["<VirtualHost *:443>", f"\tServerName {host}", f"\tDocumentRoot {scratch}/www-{host}",
                 "\tSSLEngine on", f"\tSSLCertificateFile {cert}", f"\tSSLCertificateKeyFile {key}",
                 f'\tHeader always set X-Operator-Site "{host}"',
                 f"\t<Directory {scratch}/www-{host}>", "\t\tRequire all granted", "\t</Directory>", "</VirtualHost>"]
        if host == "example.test" and rendered[name]["snippet"]:
            lines[1:1] = [f"\t{marker}", f"\t{include}"]
        (conf / "sites-available" / f"{host}.conf").write_text("# the operator's\n" + "\n".join(lines) + "\n")
        subprocess.run(["a2ensite", "-q", host], env=env, capture_output=True, check=True)
        (scratch / f"www-{host}").mkdir()
        (scratch / f"www-{host}" / "index.html").write_text(f"<h1>{host}</h1>\n")
    subprocess.run(["a2ensite", "-q", "mxedge-matrix"], env=env, capture_output=True, check=True)
    shutil.copy(ROLE / "files" / "trial-start.sh", scratch / "trial-start.sh")
    return scratch


def _mount_namespaces():
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "--net", "--pid", "--fork", "true"],
                          capture_output=True, check=False).returncode == 0


@pytest.mark.skipif(not _apache_usable() or not shutil.which("unshare"), reason="needs Apache, openssl, unshare and root")
@pytest.mark.parametrize("name", ALONGSIDE)
def test_apache_accepts_the_alongside_candidate_with_the_operators_sites(rendered, name, tmp_path):
    """MX10, MX15: the role's alongside test (files/alongside-test.sh: the candidate mounted as /etc/apache2,
    configtest, trial start) accepts Debian's stock configuration + two operator websites + the role's files."""
    if not _mount_namespaces():
        pytest.skip("unshare --mount --net --pid is not permitted here")
    scratch = _operator_tree(rendered, name, tmp_path)
    proc = subprocess.run(["sh", str(ROLE / "files" / "alongside-test.sh"), str(scratch), "/etc/apache2"],
                          capture_output=True, text=True, timeout=90, check=False)
    daemon_checks.record(f"Apache {daemon_checks.host_version('apache2')} (this machine): "
                         "alongside candidate as /etc/apache2 (files/alongside-test.sh, unshare --mount)")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(not _apache_usable() or not shutil.which("unshare"), reason="needs Apache, openssl, unshare and root")
def test_alongside_test_rejects_a_second_listen(rendered, tmp_path):
    """A second Listen on a port (here: the operator's own, listed again) is refused before anything goes live."""
    if not _mount_namespaces():
        pytest.skip("unshare --mount --net --pid is not permitted here")
    scratch = _operator_tree(rendered, "alongside_snippet", tmp_path)
    site = scratch / "conf" / "sites-available" / "mxedge-matrix.conf"
    site.write_text("Listen 443\n" + site.read_text())
    ports = (scratch / "conf" / "ports.conf").read_text()
    assert re.search(r"^\s*Listen 443$", ports, re.M)
    proc = subprocess.run(["sh", str(ROLE / "files" / "alongside-test.sh"), str(scratch), "/etc/apache2"],
                          capture_output=True, text=True, timeout=90, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Cannot define multiple Listeners on the same IP:port" in proc.stderr


# Apache on the alongside candidate in namespaces of its own (the tree mounted as /etc/apache2), asked with curl.
ALONGSIDE_LIVE_SCRIPT = r"""
set -u
mount --bind "$SCRATCH/conf" /etc/apache2
APACHE_CONFDIR=/etc/apache2
export APACHE_CONFDIR
ip link set lo up
. /etc/apache2/envvars
APACHE_PID_FILE=$SCRATCH/run/apache2.pid APACHE_RUN_DIR=$SCRATCH/run APACHE_LOCK_DIR=$SCRATCH/run APACHE_LOG_DIR=$SCRATCH/log
export APACHE_PID_FILE APACHE_RUN_DIR APACHE_LOCK_DIR APACHE_LOG_DIR
mkdir -p "$SCRATCH/run" "$SCRATCH/log"
/usr/sbin/apache2 -d /etc/apache2 -D FOREGROUND -c "PidFile $APACHE_PID_FILE" -c "ErrorLog $APACHE_LOG_DIR/error.log" &
i=0
while [ ! -s "$APACHE_PID_FILE" ] && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
sleep 0.5
ask() {
    curl -sk --path-as-is -o "$SCRATCH/body" -D "$SCRATCH/head" -w '%{http_code} %{content_type}' --max-time 5 \
        --resolve "$1:443:127.0.0.1" "https://$1$2"
    echo " cors=$(grep -i '^access-control-allow-origin:' "$SCRATCH/head" | tr -d '\r' | cut -d' ' -f2)" \
         "site=$(grep -i '^x-operator-site:' "$SCRATCH/head" | tr -d '\r' | cut -d' ' -f2)" \
         "body=$(head -c 300 "$SCRATCH/body" | tr -c '[:print:]' ' ')"
}
ask example.test /
ask example.test /.well-known/matrix/server
ask example.test /.well-known/matrix/support
ask example.test /.well-known/matrix/policy
ask unrelated.test /.well-known/matrix/server
ask unrelated.test /
cat "$APACHE_LOG_DIR/error.log" >&2
"""


@pytest.mark.skipif(not _apache_usable() or not shutil.which("curl") or not shutil.which("unshare"),
                    reason="needs Apache, openssl, curl, unshare and root")
def test_operators_website_serves_the_well_known_documents(rendered, tmp_path):
    """MX03, MX15 live: the operator's example.test website answers its own pages and, through the snippet,
    the table's well-known bytes with JSON and CORS; the unrelated website is untouched."""
    if not _mount_namespaces():
        pytest.skip("unshare --mount --net --pid is not permitted here")
    scratch = _operator_tree(rendered, "alongside_snippet", tmp_path)
    # www-data serves the documents from the scratch directory: let it through pytest's private temporary directories
    for parent in [scratch, *scratch.parents]:
        if parent == pathlib.Path(tempfile.gettempdir()):
            break
        parent.chmod(0o755)
    routes = next(v for v in rendered["alongside_snippet"]["derived"]["routes"]["vhosts"] if v["name"] == "well_known")
    bodies = {r["id"]: r["body"] for r in routes["routes"] if r["action"] == "static"}
    static = scratch / "static"
    static.mkdir()
    for route_id, body in bodies.items():
        (static / f"well_known-{route_id}").write_text(body)
    snippet = scratch / "conf" / "mxedge-matrix" / "well-known.conf"
    snippet.write_text(snippet.read_text().replace("/var/www/mxedge-matrix/static", str(static)))
    env = dict(os.environ, SCRATCH=str(scratch))
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "--net", "--pid", "--fork", "--kill-child",
                           "sh", "-c", ALONGSIDE_LIVE_SCRIPT], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    daemon_checks.record(f"Apache {daemon_checks.host_version('apache2')} (this machine): "
                         "operator's website with the well-known snippet answering curl (unshare --mount --net --pid)")
    answers = proc.stdout.splitlines()
    assert len(answers) == 6, proc.stdout + proc.stderr
    assert answers[0] == "200 text/html cors= site=example.test body=<h1>example.test</h1> ", proc.stderr
    assert answers[1] == f"200 application/json cors=* site=example.test body={bodies['well-known-server']}", proc.stderr
    assert answers[2] == f"200 application/json cors=* site=example.test body={bodies['support']}"
    assert answers[3].startswith("403 ") and "site=example.test" in answers[3]
    assert answers[4].startswith("404 ") and "site=unrelated.test" in answers[4]
    assert answers[5] == "200 text/html cors= site=unrelated.test body=<h1>unrelated.test</h1> "


# --- MX16 Synapse workers -------------------------------------------------------------------------------------------

WORKER_MODULES = ["lbmethod_byrequests", "proxy_balancer", "proxy_hcheck", "rewrite"]
# The request line's target (origin form, or the path of an absolute URI) that a worker rule proxies (MX04).
REWRITE_TARGET = 'RewriteCond %{THE_REQUEST} "^\\S+ (?:[A-Za-z][A-Za-z0-9+.-]*://[^/?\\s]*)?(/\\S*)"'


def _rewrite_rules(body):
    """[(pattern, substitution, flags)] of the RewriteRule lines of a virtual host, in order."""
    return re.findall(r'^\s*RewriteRule "([^"]+)" "?([^"\s]+)"? \[([^\]]+)\]$', body, re.M)


def _balancers(body):
    """{balancer name: [BalancerMember lines' arguments]} of a virtual host."""
    return {name: re.findall(r'^\s*BalancerMember (.+)$', inner, re.M)
            for name, inner in re.findall(r'^\s*<Proxy "balancer://([^"]+)">\n(.*?)^\s*</Proxy>', body, re.M | re.S)}


def _worker_vhosts(rendered, name):
    """[(route-table vhost, rendered body)] of the listeners with worker routes."""
    found = []
    for vhost in rendered[name]["derived"]["routes"]["vhosts"]:
        if any(r["match"]["kind"] == "regex" for r in vhost["routes"]):
            found.append(_table_vhost(rendered, name, vhost["name"]))
    assert found
    return found


@pytest.mark.parametrize("name", WORKERS)
def test_worker_routes_are_rewrite_rules_in_table_order(rendered, name):
    """MX16: one rule per balancer of a worker route, in the table's order, after a rule that leaves the earlier
    routes to ProxyPass (mod_rewrite runs before it); no ProxyPass for a worker route; the raw URI is proxied."""
    assert set(WORKER_MODULES) <= set(rendered[name]["derived"]["modules"])
    balancers = rendered[name]["derived"]["balancers"]
    for vhost, body in _worker_vhosts(rendered, name):
        expected, pending = [], []
        for route in vhost["routes"]:
            if route["match"]["kind"] != "regex":
                pending.append(route)
                continue
            if pending:
                expected.append(("claim", [r["id"] for r in pending]))
                pending = []
            for balancer in balancers[route["upstream"]]:
                expected.append((route["match"]["pattern"], f"balancer://{balancer['name']}%1", "P,NE,UnsafeAllow3F"))
        rules = _rewrite_rules(body)
        assert len(rules) == len(expected), vhost["name"]
        for rule, want in zip(rules, expected):
            if want[0] == "claim":
                assert rule[1:] == ("-", "L"), rule
                claimed = [r for r in vhost["routes"] if r["id"] in want[1]]
                for route in claimed:
                    path = route["match"]["path"]
                    below = path + "/x" if route["match"]["kind"] == "prefix" else path
                    assert re.match(rule[0], path) and re.match(rule[0], below), (route["id"], rule[0])
                assert not re.match(rule[0], "/_matrix/client/v3/sync")
            else:
                assert rule == want
        # every worker rule proxies the request target as received (the last condition before it)
        assert body.count(REWRITE_TARGET) == len([e for e in expected if e[0] != "claim"])
        # mod_proxy's prefixes are the other routes'
        passes = [p for p, _t, _o in _proxy_passes(body) if p != ERROR_PREFIX]
        assert passes == [r["match"]["path"] for r in vhost["routes"]
                          if r["action"] == "forward" and r["match"]["kind"] != "regex"]


@pytest.mark.parametrize("name", WORKERS)
def test_worker_route_checks_are_location_match_sections_before_the_homeservers(rendered, name):
    """MX16, MX04, MX08: each worker route's <LocationMatch> merges after /_matrix's (reverse table order), with the
    body limit and the raw-URI check of its raw_regex (for its methods only, when it has methods)."""
    limit = rendered[name]["derived"]["body_limit"]
    for vhost, body in _worker_vhosts(rendered, name):
        sections = list(_locations(body))
        assert [p for p in sections if not p.startswith(ERROR_PREFIX)] == [_section(r) for r in reversed(vhost["routes"])]
        matrix = sections.index(_section(next(r for r in vhost["routes"] if r["id"] in ("api-matrix", "federation-matrix"))))
        for route in vhost["routes"]:
            if route["match"]["kind"] != "regex":
                continue
            assert sections.index(route["match"]["pattern"]) > matrix, route["id"]
            block = _locations(body)[route["match"]["pattern"]]
            assert f"LimitRequestBody {limit}" in block
            check = (RAW_CHECK_METHODS if route["match"]["methods"] else RAW_CHECK).search(block)
            assert check and check.group("raw") == route["match"]["raw_regex"], route["id"]
            if route["match"]["methods"]:
                assert "%{REQUEST_METHOD} in {'GET', 'HEAD'}" in block


# (variant, pool, balancers: [(name, upper bound of the bucket's hashes, members as (server, lbset))]); the main
# process is the last member of every balancer, a hot standby of the highest lbset, without health check.
MAIN = "http://127.0.0.1:8008"
BALANCER_CASES = [
    ("workers_readers", "workers_sync", [
        ("workers_sync_0", "8000", [("http://10.0.0.1:18101", 0), ("http://10.0.0.2:18101", 1), (MAIN, 2)]),
        ("workers_sync_1", None, [("http://10.0.0.2:18101", 0), ("http://10.0.0.1:18101", 1), (MAIN, 2)])]),
    ("workers_readers", "workers_federation_reader", [
        ("workers_federation_reader", None, [("http://10.0.0.1:18102", 0), ("http://10.0.0.2:18102", 0), (MAIN, 1)])]),
    ("workers_readers", "workers_federation_inbound", [
        ("workers_federation_inbound", None, [("http://10.0.0.1:18103", 0), (MAIN, 1)])]),
    ("workers_readers_methods", "workers_federation_inbound", [
        ("workers_federation_inbound_0", "8000", [("http://10.0.0.1:18104", 0), ("http://10.0.0.2:18104", 1), (MAIN, 2)]),
        ("workers_federation_inbound_1", None, [("http://10.0.0.2:18104", 0), ("http://10.0.0.1:18104", 1), (MAIN, 2)])]),
    ("workers_readers_methods", "workers_account_data", [
        ("workers_account_data", None, [("http://10.0.0.1:18102", 0), ("http://10.0.0.2:18102", 0), (MAIN, 1)])]),
    ("workers_one_of_each", "workers_media", [
        ("workers_media", None, [("http://10.0.0.2:18103", 0), ("unix:/run/synapse/main.sock|http://localhost", 1)])]),
]


@pytest.mark.parametrize(("name", "pool", "balancers"), BALANCER_CASES, ids=[f"{c[0]}:{c[1]}" for c in BALANCER_CASES])
def test_worker_pools_are_balancers_with_the_main_process_as_hot_standby(rendered, name, pool, balancers):
    """MX16, MX07: a sticky pool is one balancer per hash bucket preferring its worker, then the others, then the
    main process; any other pool one balancer; workers have active health checks of /health."""
    derived = rendered[name]["derived"]["balancers"][pool]
    assert [(b["name"], b["upper"]) for b in derived] == [(b[0], b[1]) for b in balancers]
    for vhost, body in _worker_vhosts(rendered, name):
        if not any(r.get("upstream") == pool for r in vhost["routes"]):
            continue
        rendered_balancers = _balancers(body)
        for balancer, _upper, members in balancers:
            lines = rendered_balancers[balancer]
            assert [(re.match(r'"([^"]+)"', line).group(1), int(re.search(r"lbset=(\d)", line).group(1)))
                    for line in lines] == members, balancer
            for line in lines[:-1]:
                assert "hcmethod=GET hcuri=/health hcinterval=5" in line and "status=+H" not in line, line
                assert "timeout=600" in line and "connectiontimeout=10" in line
            assert "status=+H" in lines[-1] and "hcmethod" not in lines[-1] and "retry=0" in lines[-1]


@pytest.mark.parametrize("count", [2, 3, 5, 16, 17])
def test_hash_buckets_split_the_md5_space_evenly(count):
    """The buckets' upper bounds (in vars/main.yml, rendered by Ansible) are the N-ths of 0000-ffff: every MD5 falls
    into exactly one bucket, and no bucket is more than one 65536th larger than another."""
    vars_main = (ROLE / "vars" / "main.yml").read_text()
    assert "'%04x' | format(((__bucket + 1) * 65536 / __count) | round(0, 'ceil') | int)" in vars_main
    uppers = ["%04x" % -(-(bucket + 1) * 65536 // count) for bucket in range(count - 1)]
    bounds = [0] + [int(u, 16) for u in uppers] + [65536]
    sizes = [high - low for low, high in zip(bounds, bounds[1:])]
    assert len(sizes) == count and sum(sizes) == 65536 and max(sizes) - min(sizes) <= 1


# (variant, route, stickiness and what the bucket condition hashes)
STICKY_CASES = [
    ("workers_readers", "workers-sync", "user",
     ["md5(%{HTTP:Authorization}) < '8000'", "%{QUERY_STRING} =~ m#(?:^|&)access_token=([^&]*)# && md5('$1') < '8000'"]),
    ("workers_readers_methods", "workers-event-creation", "room",
     ["%{REQUEST_URI} =~ m#^/_matrix/client/[^/]+/(?:rooms|join|knock)/([^/]+)# && md5('$1') < '8000'",
      "md5(%{REQUEST_URI}) < '8000'"]),
    ("workers_readers_methods", "workers-federation-inbound", "source", ["md5(%{REMOTE_ADDR}) < '8000'"]),
]


@pytest.mark.parametrize(("name", "route_id", "sticky", "hashes"), STICKY_CASES, ids=[c[1] for c in STICKY_CASES])
def test_sticky_routes_pick_the_bucket_by_the_keys_hash(rendered, name, route_id, sticky, hashes):
    """MX16: the key of _matrix_routes.sticky, hashed with ap_expr's md5(); the last bucket takes the rest."""
    assert rendered[name]["derived"]["routes"]["sticky"]["room"]["regex"] == "^/_matrix/client/[^/]+/(?:rooms|join|knock)/([^/]+)"
    for vhost, body in _worker_vhosts(rendered, name):
        route = next((r for r in vhost["routes"] if r["id"] == route_id), None)
        if route is None:
            continue
        assert route["policy"]["sticky"] == sticky
        block = body[body.index(f"route {route_id}: regex"):]
        block = block[:block.index("\n    #")]
        conditions = re.findall(r'^\s*RewriteCond expr "(.+)"$', block, re.M)
        assert len(conditions) == 1, block  # two buckets: the first by its condition, the second the rest
        for text in hashes:
            assert text in conditions[0], (text, conditions[0])
        return
    pytest.fail(f"no route {route_id}")


def test_method_restricted_worker_routes_leave_other_methods_to_the_homeserver(rendered):
    """MX16: without a stream writer, account data, presence and push rules go to the client readers for GET (and
    HEAD) only; other methods reach the next route, the homeserver's /_matrix."""
    client = _vhosts(rendered["workers_readers_methods"]["site"])[(443, "matrix.example.test")]
    for route_id in ("workers-account-data", "workers-presence", "workers-push-rules"):
        block = client[client.index(f"route {route_id}: regex"):]
        block = block[:block.index("\n    #")]
        assert "(GET only)" in block
        assert "RewriteCond expr \"%{REQUEST_METHOD} in {'GET', 'HEAD'}\"" in block, route_id


# A stand-in upstream for the main process or a worker: answers every request with its name and records the
# method, the raw request target and the forwarded headers, one JSON line per request.
WORKER_STANDIN = """
import http.server, json, sys
name, address, port, record = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
class Standin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path != "/health":
            with open(record, "a") as stream:
                stream.write(json.dumps({"name": name, "method": self.command, "target": self.path,
                                         "xff": self.headers.get("X-Forwarded-For"),
                                         "rid": self.headers.get("X-Request-ID")}) + "\\n")
        body = name.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = answer
http.server.ThreadingHTTPServer((address, port), Standin).serve_forever()
"""

# Inside network and PID namespaces of their own: the stand-ins (the main process on 127.0.0.1:8008, each worker on
# its address, added to lo), Apache on the rendered candidate, then the requests of REQUESTS (JSON in argv[1]) with
# curl; "stop"/"start" entries stop or start stand-ins, "wait_for" repeats a request until the named stand-in answers.
WORKERS_DRIVER = r"""
import json, os, socket, subprocess, sys, time
plan = json.loads(open(sys.argv[1]).read())
scratch = os.environ["SCRATCH"]
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
for address in plan["addresses"]:
    subprocess.run(["ip", "addr", "add", address + "/32", "dev", "lo"], check=True)
standins = {}
def start(name):
    address, port = plan["standins"][name]
    standins[name] = subprocess.Popen([sys.executable, scratch + "/standin.py", name, address, str(port), scratch + "/record.jsonl"])
    for attempt in range(100):
        try:
            socket.create_connection((address, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
def stop(name):
    standins.pop(name).kill()
for name in plan["standins"]:
    start(name)
env = dict(os.environ, APACHE_PID_FILE=scratch + "/run/apache2.pid", APACHE_RUN_DIR=scratch + "/run",
           APACHE_LOCK_DIR=scratch + "/run", APACHE_LOG_DIR=scratch + "/log")
os.makedirs(scratch + "/run", exist_ok=True)
os.makedirs(scratch + "/log", exist_ok=True)
apache = subprocess.Popen(["sh", "-c", '. "$APACHE_CONFDIR/envvars"; APACHE_PID_FILE=' + env["APACHE_PID_FILE"]
                           + " APACHE_RUN_DIR=" + env["APACHE_RUN_DIR"] + " APACHE_LOCK_DIR=" + env["APACHE_RUN_DIR"]
                           + " APACHE_LOG_DIR=" + env["APACHE_LOG_DIR"] + ' exec /usr/sbin/apache2 -d "$APACHE_CONFDIR"'
                           + ' -D FOREGROUND -c "PidFile $APACHE_PID_FILE" -c "ErrorLog $APACHE_LOG_DIR/error.log"'])
for attempt in range(100):
    if os.path.exists(env["APACHE_PID_FILE"]) and os.path.getsize(env["APACHE_PID_FILE"]):
        break
    time.sleep(0.1)
time.sleep(0.5)
def ask(step):
    port = step.get("port", 443)
    argv = ["curl", "-sk", "--http1.1", "--path-as-is", "--max-time", "10", "-o", "-", "-w", " %{http_code}",
            "--resolve", "%s:%d:127.0.0.1" % (plan["host"], port), "-X", step.get("method", "GET")]
    for header in step.get("headers", []):
        argv += ["-H", header]
    if step.get("source"):
        argv += ["--interface", step["source"]]
    proc = subprocess.run(argv + ["https://%s:%d%s" % (plan["host"], port, step["path"])], capture_output=True, text=True)
    body, _sep, status = proc.stdout.rpartition(" ")
    return {"status": status, "body": body if status == "200" else body[:80]}
results = []
for step in plan["steps"]:
    if "stop" in step:
        record = scratch + "/record.jsonl"
        results.append({"record_lines": len(open(record).readlines()) if os.path.exists(record) else 0})
        for name in step["stop"]:
            stop(name)
    elif "start" in step:
        for name in step["start"]:
            start(name)
        results.append({})
    elif "wait_for" in step:
        deadline, answer = time.time() + step["within"], {}
        while time.time() < deadline:
            answer = ask(step)
            if answer["body"] == step["wait_for"]:
                break
            time.sleep(0.5)
        results.append(answer)
    else:
        results.append(ask(step))
apache.terminate()
json.dump({"results": results, "record": [json.loads(l) for l in open(scratch + "/record.jsonl")]
           if os.path.exists(scratch + "/record.jsonl") else []}, sys.stdout)
sys.stderr.write(open(scratch + "/log/error.log").read()[-6000:] if os.path.exists(scratch + "/log/error.log") else "")
"""

LIVE_WORKERS = "workers_readers_methods"
TOKENS = [f"syt_token_{number}" for number in range(16)]
ROOMS = [f"!room{number}:example.test" for number in range(16)]
SOURCES = [f"127.0.0.{number}" for number in range(2, 18)]
SYNC = "/_matrix/client/v3/sync?timeout=0"
# (class route, vhost port, method, path, the pool's workers): one request each must reach a worker of its pool
CLASS_REQUESTS = [
    ("workers-sync", 443, "GET", SYNC, {"sync1", "sync2"}),
    ("workers-event-creation", 443, "PUT", "/_matrix/client/v3/rooms/!r:example.test/send/m.room.message/t1",
     {"creator1", "creator2"}),
    ("workers-room-messages", 443, "GET", "/_matrix/client/v3/rooms/!r:example.test/messages?dir=b",
     {"reader1", "reader2"}),
    ("workers-client-reader", 443, "GET", "/_matrix/client/versions", {"reader1", "reader2"}),
    ("workers-account-data", 443, "GET", "/_matrix/client/v3/user/@a:example.test/account_data/m.push", {"reader1", "reader2"}),
    ("workers-push-rules", 443, "GET", "/_matrix/client/v3/pushrules/", {"reader1", "reader2"}),
    ("workers-device-lists", 443, "POST", "/_matrix/client/v3/keys/upload", {"reader1", "reader2"}),
    ("workers-federation-inbound", 8448, "PUT", "/_matrix/federation/v1/send/txn1", {"inbound1", "inbound2"}),
]
# (what, vhost port, method, path, the expected answer): the main process, Apache's 404 or the raw target at a worker
OTHER_REQUESTS = [
    # a method the route does not take (GET only without a stream writer) is the homeserver's
    ("account data written", 443, "PUT", "/_matrix/client/v3/user/@a:example.test/account_data/m.push", "main"),
    ("not a worker class", 443, "GET", "/_matrix/client/v3/rooms/!r:example.test/unknown_endpoint", "main"),
    # MX04: a URI that only normalises to a worker route is refused; the raw URI goes to the worker as sent
    ("encoded letter", 443, "GET", "/_matrix/client/v3/%73ync", "404"),
    ("outside /_matrix, other method", 443, "PUT", "/_synapse/../_matrix/client/v3/pushrules/x", "404"),
    ("admin API, refused before the worker routes (MX06)", 443, "GET", "/_synapse/admin/v1/server_version", "403"),
]


def _live_plan(table):
    """The driver's plan: stand-ins of every server of the table's pools, then the steps (indexes in STEPS)."""
    standins = {"main": ["127.0.0.1", 8008]}
    for pool in table["upstreams"]:
        if pool["fallback"]:
            for server in pool["servers"]:
                standins[server["name"]] = [server["address"], server["port"]]
    steps, index = [], {}

    def add(key, **step):
        index.setdefault(key, []).append(len(steps))
        steps.append(step)

    for route_id, port, method, path, _pool in CLASS_REQUESTS:
        add(("class", route_id), port=port, method=method, path=path, headers=["Authorization: Bearer syt_class"])
    for what, port, method, path, _answer in OTHER_REQUESTS:
        add(("other", what), port=port, method=method, path=path)
    for repeat in range(3):
        for token in TOKENS:
            add(("token", token), path=SYNC, headers=[f"Authorization: Bearer {token}"])
        add(("query token", TOKENS[0]), path=SYNC + f"&access_token={TOKENS[0]}")
        for room in ROOMS:
            add(("room", room), method="PUT", path=f"/_matrix/client/v3/rooms/{room}/send/m.room.message/t{repeat}")
        for source in SOURCES:
            add(("source", source), port=8448, method="PUT", path=f"/_matrix/federation/v1/send/t{repeat}", source=source)
    add(("raw",), path="/_matrix/client/v3/rooms/!a%2Fb:example.test/messages?from=x%2Fy&dir=b")
    # every sync worker stopped: the main process answers; one back: the pool again
    add(("stop",), stop=["sync1", "sync2"])
    for token in TOKENS[:4]:
        add(("pool down", token), path=SYNC, headers=[f"Authorization: Bearer {token}"])
    add(("start",), start=["sync2"])
    add(("pool back",), path=SYNC, headers=[f"Authorization: Bearer {TOKENS[0]}"], wait_for="sync2", within=30)
    for token in TOKENS[:4]:
        add(("pool back", token), path=SYNC, headers=[f"Authorization: Bearer {token}"])
    return {"host": "matrix.example.test", "addresses": sorted({a for a, _p in standins.values()} - {"127.0.0.1"}),
            "standins": standins, "steps": steps}, index


@pytest.fixture(scope="module")
def workers_live(rendered, tmp_path_factory):
    """MX16 live: Apache on the rendered workers variant with stand-ins for the main process and two workers per
    pool, in network and PID namespaces of its own; {"results": [...], "record": [...], "index": {...}}."""
    if not _apache_usable() or not shutil.which("curl") or not shutil.which("unshare"):
        pytest.skip("needs Apache, openssl, curl, unshare and root")
    if subprocess.run(["unshare", "--net", "--pid", "--fork", "true"], capture_output=True, check=False).returncode:
        pytest.skip("unshare --net --pid is not permitted here")
    scratch, env = _candidate(rendered, LIVE_WORKERS, tmp_path_factory.mktemp("apache-workers"))
    plan, index = _live_plan(rendered[LIVE_WORKERS]["derived"]["routes"])
    (scratch / "standin.py").write_text(WORKER_STANDIN)
    (scratch / "driver.py").write_text(WORKERS_DRIVER)
    (scratch / "plan.json").write_text(json.dumps(plan))
    env.update(SCRATCH=str(scratch))
    proc = subprocess.run(["unshare", "--net", "--pid", "--fork", "--kill-child", "python3", str(scratch / "driver.py"),
                           str(scratch / "plan.json")], env=env, capture_output=True, text=True, timeout=180, check=False)
    daemon_checks.record(f"Apache {daemon_checks.host_version('apache2')} (this machine): "
                         "Synapse worker pools answering curl (unshare --net --pid)")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    result = json.loads(proc.stdout)
    result["index"], result["log"] = index, proc.stderr
    return result


def _answers(live, key):
    return [live["results"][i] for i in live["index"][key]]


@pytest.mark.parametrize(("route_id", "port", "method", "path", "workers"), CLASS_REQUESTS, ids=[c[0] for c in CLASS_REQUESTS])
def test_live_worker_classes_reach_their_pool(workers_live, route_id, port, method, path, workers):
    (answer,) = _answers(workers_live, ("class", route_id))
    assert answer["status"] == "200" and answer["body"] in workers, (answer, workers_live["log"])


@pytest.mark.parametrize(("what", "port", "method", "path", "expected"), OTHER_REQUESTS, ids=[c[0] for c in OTHER_REQUESTS])
def test_live_other_requests_are_not_the_workers(workers_live, what, port, method, path, expected):
    (answer,) = _answers(workers_live, ("other", what))
    if expected.isdigit():
        assert answer["status"] == expected, answer
    else:
        assert answer == {"status": "200", "body": expected}, answer


@pytest.mark.parametrize(("kind", "keys", "workers"), [
    ("token", TOKENS, {"sync1", "sync2"}),
    ("room", ROOMS, {"creator1", "creator2"}),
    ("source", SOURCES, {"inbound1", "inbound2"}),
])
def test_live_the_same_key_reaches_the_same_worker_and_keys_spread(workers_live, kind, keys, workers):
    """MX16: user (Authorization), room (the room ID of the path) and source (the client address) stickiness."""
    chosen = {}
    for key in keys:
        answers = {a["body"] for a in _answers(workers_live, (kind, key))}
        assert len(answers) == 1 and answers <= workers, (kind, key, answers)
        chosen[key] = answers.pop()
    assert set(chosen.values()) == workers, chosen


def test_live_the_access_token_parameter_is_the_key_without_authorization(workers_live):
    """MX16: without an Authorization header the access_token query parameter is hashed: the same answers."""
    answers = {a["body"] for a in _answers(workers_live, ("query token", TOKENS[0]))}
    assert len(answers) == 1 and answers <= {"sync1", "sync2"}


def test_live_worker_gets_the_raw_uri_and_forwarded_headers(workers_live):
    """MX04, MX05 on a worker route: the request target as sent, X-Forwarded-For the connecting address, a request ID."""
    (answer,) = _answers(workers_live, ("raw",))
    assert answer["status"] == "200" and answer["body"] in {"reader1", "reader2"}
    entry = next(e for e in workers_live["record"] if "a%2Fb" in e["target"])
    assert entry["target"] == "/_matrix/client/v3/rooms/!a%2Fb:example.test/messages?from=x%2Fy&dir=b"
    assert entry["xff"] == "127.0.0.1" and entry["rid"]


def test_live_main_process_answers_when_the_pool_is_down_and_the_pool_again_after(workers_live):
    """MX16: every sync worker stopped: the main process answers sync; one started again: the pool answers."""
    for answer in [a for token in TOKENS[:4] for a in _answers(workers_live, ("pool down", token))]:
        assert answer == {"status": "200", "body": "main"}, answer
    (back,) = _answers(workers_live, ("pool back",))
    assert back == {"status": "200", "body": "sync2"}, workers_live["log"]
    for answer in [a for token in TOKENS[:4] for a in _answers(workers_live, ("pool back", token))]:
        assert answer == {"status": "200", "body": "sync2"}, answer


def test_live_main_process_gets_no_routed_class_while_the_pools_are_up(workers_live):
    """MX16: until the sync workers were stopped, the main process got only the requests no worker route takes."""
    (stop,) = _answers(workers_live, ("stop",))
    before = [(e["method"], e["target"]) for e in workers_live["record"][:stop["record_lines"]] if e["name"] == "main"]
    assert sorted(before) == sorted((method, path) for _w, _port, method, path, expected in OTHER_REQUESTS
                                    if expected == "main")
