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
import sys

import daemon_checks
import pytest
from render import SERVICE_VARIABLES, render, run_playbook

ROOT = pathlib.Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles" / "haproxy"
TLS = {
    "matrix_tls_certificate": "/etc/ssl/mxedge-test/fullchain.pem",
    "matrix_tls_certificate_key": "/etc/ssl/mxedge-test/privkey.pem",
}
# The hosts of the worker variants (MX16): matrix_worker_hosts.
WORKER_HOSTS = {"hs1": "10.0.0.1", "hs2": "10.0.0.2"}
# The variants below are the role owning haproxy.cfg (matrix_proxy_mode=dedicated);
# the alongside ones (ALONGSIDE) render the role's own file next to an operator's.
COMMON = dict(TLS, matrix_proxy_mode="dedicated")

VARIANTS = {
    # The e2e hs1: single port 443, delegated from example.test, admin allow-list.
    "delegated_single_port": {
        "matrix_server_name": "example.test",
        "matrix_homeserver_fqdn": "matrix.example.test",
        "matrix_federation_port": 443,
        "matrix_admin_allowed_networks": ["127.0.0.0/8", "2001:db8::/32"],
        # The e2e inventory's operator routes: a static document, a refused prefix.
        "matrix_extra_routes": [
            {"vhost": "well_known", "id": "support", "kind": "exact", "path": "/.well-known/matrix/support",
             "action": "static", "body": '{"contacts":[]}'},
            {"vhost": "client", "id": "no-metrics", "kind": "prefix", "path": "/_synapse/metrics", "action": "refuse",
             "status": 403},
        ],
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
    # MAS and MatrixRTC (MX13, MX14): three service vhosts on 443 next to the client vhost.
    # `haproxy -c` resolves server names (libc, at parse time): the DNS-name upstream is
    # "localhost", which resolves on any machine, not an internal name that would not.
    "services": dict(SERVICE_VARIABLES, matrix_rtc_jwt_upstream="http://localhost:8081", mx_ipv6=True),
    # Synapse workers (MX16) on two hosts, federation on 8448: the "readers" layout (two sync and
    # two federation readers, one client reader and one inbound federation worker).
    "workers_readers": {
        "matrix_server_name": "other.test",
        "matrix_worker_hosts": WORKER_HOSTS,
        "matrix_workers": "{{ 'readers' | mxedge.matrix.synapse_worker_layout(['hs1', 'hs2']) }}",
        "mx_ipv6": False,
    },
    # One worker of each type (stream writers too) behind the e2e hs1's single port 443: the
    # federation classes are routes of the client listener.
    "workers_one_of_each": {
        "matrix_server_name": "example.test",
        "matrix_homeserver_fqdn": "matrix.example.test",
        "matrix_federation_port": 443,
        "matrix_admin_allowed_networks": ["127.0.0.0/8"],
        "matrix_worker_hosts": WORKER_HOSTS,
        "matrix_workers": "{{ 'one_of_each' | mxedge.matrix.synapse_worker_layout(['hs1', 'hs2']) }}",
        "mx_ipv6": True,
    },
    # Two workers in every pool the live test drives (each sticky key, and one without).
    "workers_live": {
        "matrix_server_name": "example.test",
        "matrix_homeserver_fqdn": "matrix.example.test",
        "matrix_worker_hosts": WORKER_HOSTS,
        "matrix_workers": [
            {"name": f"{kind}{n}", "type": worker_type, "host": f"hs{n}", "port": port}
            for kind, worker_type, port in (("sync", "sync", 18101), ("creator", "event_creator", 18102),
                                            ("inbound", "federation_inbound", 18103), ("reader", "client_reader", 18104))
            for n in (1, 2)
        ],
        "mx_ipv6": False,
    },
}
WORKERS = [name for name, v in VARIANTS.items() if v.get("matrix_workers")]
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

    - name: Render the Lua helpers
      ansible.builtin.template:
        src: "{role}/templates/mxedge_matrix.lua.j2"
        dest: "{{{{ _haproxy_lua_path }}}}"
        mode: "0644"

    - name: Create the directory of the static answers
      ansible.builtin.file:
        path: "{{{{ _haproxy_static_dir }}}}"
        state: directory
        mode: "0755"

    - name: Write the static answers as the role does
      ansible.builtin.copy:
        content: "{{{{ item.1.body }}}}"
        dest: "{{{{ _haproxy_static_dir }}}}/{{{{ item.0.name }}}}.{{{{ item.1.id }}}}"
        mode: "0644"
      loop: "{{{{ _matrix_routes.vhosts | subelements('routes') | selectattr('1.action', 'equalto', 'static') | list }}}}"

    - name: Record the facts the tests compare against
      ansible.builtin.copy:
        dest: "{out}/{{{{ inventory_hostname }}}}.json"
        mode: "0644"
        content: "{{{{ {{'server_body': _matrix_well_known_server_body, 'client_body': _matrix_well_known_client_body,
          'cert_path': _haproxy_crt_path, 'derived_bundle': mx_derived_bundle, 'bundle': _matrix_tls_bundle_path,
          'inputs': _haproxy_tls_inputs, 'routes': _matrix_routes, 'static_dir': _haproxy_static_dir}} | to_json }}}}"
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("haproxy-render")
    facts = render(out, PLAYBOOK.format(role=ROLE, out=out), {name: dict(COMMON, **v) for name, v in VARIANTS.items()})
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


def _vhost_rule(vhost, hosts):
    """The rule choosing `vhost` by its Host names."""
    return (f"http-request set-var(txn.mx_vhost) str({vhost}) if !{{ var(txn.mx_vhost) -m found }} "
            f"{{ var(txn.mx_host) -m str {hosts} }}")


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
    # MX08 MX11 the Lua filter limits bodies without a length in every pool's backend but a tunnel pool's.
    tunnel_pools = {r["upstream"] for v in rendered[name]["facts"]["routes"]["vhosts"] for r in v["routes"]
                    if r["action"] == "forward" and r["policy"]["timeout"] == "tunnel"}
    for pool in rendered[name]["facts"]["routes"]["upstreams"]:
        filters = [line for line in sections[f"backend be_matrix_{pool['name']}"] if line.startswith("filter ")]
        assert filters == ([] if pool["name"] in tunnel_pools else ["filter lua.mx_body_limit"]), pool["name"]
    assert any(line.startswith("http-check send meth GET uri /health ver HTTP/1.1 hdr Host ") for line in backend)
    for port, lines in _frontends(text).items():
        assert "http-request set-header X-Forwarded-For %[src]" in lines, port
        assert "http-request set-header X-Forwarded-Proto https if { ssl_fc }" in lines, port
        assert "http-request set-var(txn.mx_path) path,lua.mx_normalize_path" in lines, port
        assert not any(line.startswith("filter ") for line in lines), port
        assert lines[-1] == "default_backend be_matrix_error_404", port
        assert all(re.search(r"\bssl crt \S+ alpn h2,http/1.1$", line) for line in lines if line.startswith("bind "))
        # Security rules (the role's own http-request rules) come before anything
        # an operator extra or a use_backend can do.
        first_backend = next(i for i, line in enumerate(lines) if line.startswith(("use_backend", "default_backend")))
        assert not any(line.startswith("http-request") for line in lines[first_backend:]), port


@pytest.mark.parametrize("name", [n for n, v in VARIANTS.items() if v.get("matrix_well_known_serve", True)])
def test_well_known_bodies_are_the_facts_byte_for_byte(rendered, name):
    """MX03: every static route of the table is served from a file holding its exact bytes, with CORS."""
    variant = rendered[name]
    table = variant["facts"]["routes"]
    static = [(v, r) for v in table["vhosts"] for r in v["routes"] if r["action"] == "static"]
    bodies = {r["match"]["path"].rsplit("/", 1)[1]: r["body"] for _v, r in static}
    assert {k: bodies[k] for k in ("server", "client")} == {
        "server": variant["facts"]["server_body"], "client": variant["facts"]["client_body"]}
    lines = [line.strip() for line in variant["cfg"].splitlines()]
    for vhost, route in static:
        path = pathlib.Path(variant["facts"]["static_dir"]) / f"{vhost['name']}.{route['id']}"
        assert path.read_bytes() == route["body"].encode()
        rule = (
            f"http-request return status 200 content-type application/json file {path} "
            f'hdr Access-Control-Allow-Origin "*" if mx_route_{vhost["name"]}_{route["id"]}'
        )
        assert rule in lines, rule


def test_delegated_single_port(rendered):
    variant = rendered["delegated_single_port"]
    text = variant["cfg"]
    frontends = _frontends(text)
    assert list(frontends) == [443]
    lines = frontends[443]
    assert f"bind 0.0.0.0:443 ssl crt {variant['facts']['cert_path']} alpn h2,http/1.1" in lines
    assert any(line.startswith("bind [::]:443 v6only ") for line in lines)
    assert _vhost_rule("client", "matrix.example.test") in lines
    assert _vhost_rule("well_known", "example.test") in lines
    assert "acl mx_allowed_client_admin-synapse-admin src 127.0.0.0/8 2001:db8::/32" in lines
    assert "acl mx_path_client_admin-synapse-admin var(txn.mx_path) -i -m beg /_synapse/admin/" in lines
    assert "acl mx_path_client_api-matrix var(txn.mx_path) -i -m beg /_matrix/" in lines
    assert "acl mx_path_client_api-synapse-client var(txn.mx_path) -i -m beg /_synapse/client/" in lines
    assert "acl mx_path_client_health var(txn.mx_path) -i -m str /health" in lines
    # Routes in the table's order, the first whose match holds answers.
    selected = [line.split()[2] for line in lines if line.startswith("http-request set-var(txn.mx_route)")]
    assert selected == ["str(client.admin-synapse-admin)", "str(client.api-matrix)", "str(client.api-synapse-client)",
                        "str(client.health)", "str(client.no-metrics)", "str(well_known.well-known-server)",
                        "str(well_known.well-known-client)", "str(well_known.support)"]
    # matrix_extra_routes: rendered like the table's own routes.
    assert ('http-request return status 403 content-type application/json string '
            '\'{"errcode":"M_FORBIDDEN","error":"Forbidden"}\' hdr Access-Control-Allow-Origin "*" '
            "if mx_route_client_no-metrics") in lines
    # MX06: from an allowed source the admin route is forwarded; from others, the 403.
    assert ('http-request return status 403 content-type application/json string '
            '\'{"errcode":"M_FORBIDDEN","error":"Forbidden"}\' hdr Access-Control-Allow-Origin "*" '
            "if mx_route_client_admin-synapse-admin !mx_allowed_client_admin-synapse-admin") in lines
    assert "use_backend be_matrix_homeserver if mx_route_client_admin-synapse-admin" in lines
    assert "chroot /var/lib/haproxy" in _sections(text)["global"]
    assert "server main 127.0.0.1:8008 check" in text


def test_separate_federation_port(rendered):
    text = rendered["separate_federation_no_well_known"]["cfg"]
    frontends = _frontends(text)
    assert sorted(frontends) == [443, 8448]
    federation = frontends[8448]
    routes = [line for line in federation if line.startswith("use_backend")]
    assert routes == ["use_backend be_matrix_homeserver if mx_route_federation_federation-matrix",
                      "use_backend be_matrix_error_404 if mx_vhost_federation"]
    # Any Host: the federation vhost is the port's only one.
    assert "http-request set-var(txn.mx_vhost) str(federation) unless { var(txn.mx_vhost) -m found }" in federation
    assert "http-response set-header X-Federation yes" in federation
    assert not any("X-Federation" in line for line in frontends[443])
    assert "well-known" not in text
    # An empty allow-list: the admin prefix is a refusal on every listener, forwarded nowhere.
    for port, vhost in ((443, "client"), (8448, "federation")):
        lines = frontends[port]
        assert any(line.startswith("http-request return status 403 ")
                   and line.endswith(f"if mx_route_{vhost}_admin-synapse-admin") for line in lines), port
        assert not any("admin" in line for line in lines if line.startswith(("use_backend", "acl mx_allowed"))), port
    assert not any(line.startswith("bind [") for lines in frontends.values() for line in lines)


def test_socket_palpo_same_host(rendered):
    variant = rendered["socket_palpo_same_host"]
    text = variant["cfg"]
    frontends = _frontends(text)
    # Clients on 8443, but other servers look for https://<server_name>/.well-known on 443.
    assert sorted(frontends) == [443, 8443, 8448]
    client = frontends[8443]
    assert "server main unix@/run/palpo/palpo.sock check" in text
    assert not any(line.startswith("chroot") for line in _sections(text)["global"])
    assert "acl mx_path_client_api-palpo-client var(txn.mx_path) -i -m beg /_palpo/client/" in client
    assert "acl mx_path_client_admin-palpo-admin var(txn.mx_path) -i -m beg /_palpo/admin/" in client
    assert not any("_synapse" in line for line in text.splitlines())
    assert _vhost_rule("well_known", "matrix.example.test") in frontends[443]
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
    # example.test is the well-known vhost; any other Host on 443 is federation.
    vhost_rules = [line for line in frontends[443] if line.startswith("http-request set-var(txn.mx_vhost)")]
    assert vhost_rules == [_vhost_rule("federation", "matrix.example.test"), _vhost_rule("well_known", "example.test"),
                           "http-request set-var(txn.mx_vhost) str(federation) unless { var(txn.mx_vhost) -m found }"]
    assert not any(line.startswith("acl mx_vhost_well_known") for line in frontends[8443])
    assert "server main [::1]:8008 check" in text
    assert "acl mx_body_too_large req.hdr_val(content-length),sub(txn.mx_body_limit) gt 0" in frontends[8443]
    assert "http-request set-var(txn.mx_body_limit) int(8388608) if mx_route_client_api-matrix" in frontends[8443]
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
    assert "acl mx_path_http_acme-challenge var(txn.mx_path) -i -m beg /.well-known/acme-challenge/" in lines
    assert "acl mx_raw_http_acme-challenge pathq -m reg '^/\\.well-known/acme-challenge(?:[/?]|$)'" in lines
    suffix = "" if variables.get("matrix_client_port", 443) == 443 else f":{variables['matrix_client_port']}"
    redirect = f"http-request redirect code 301 location https://%[var(txn.mx_host)]{suffix}%[capture.req.uri] if "
    # Everything no route answers, and a raw URI that only normalises to the challenge.
    assert redirect + "mx_vhost_http !{ var(txn.mx_route) -m found }" in lines
    assert redirect + "mx_route_http_acme-challenge !mx_raw_http_acme-challenge" in lines
    assert "use_backend be_matrix_acme if mx_route_http_acme-challenge" in lines
    assert lines[-1] == "default_backend be_matrix_error_404"
    port = variables.get("matrix_acme_challenge_port", 8402)
    assert sections["backend be_matrix_acme"][-1] == f"server certbot 127.0.0.1:{port}"
    assert "option httpchk" not in sections["backend be_matrix_acme"]


def _quoted(text):
    """`text` as the template quotes it for HAProxy (single quotes)."""
    return "'" + text.replace("'", "'\\''") + "'"


def _route_frontend(text, vhost):
    """The lines of the frontend serving `vhost` (a dict of the table)."""
    return _frontends(text, tls=vhost["tls"])[vhost["port"]]


@pytest.mark.parametrize("name", VARIANTS)
def test_rendered_configuration_cites_every_behaviour_of_the_contract(rendered, name):
    """Each behaviour of docs/contract.md that applies to this variant is named by a comment (MXnn)."""
    from ansible_collections.mxedge.matrix.plugins.module_utils.matrix_routes import BEHAVIOURS  # pylint: disable=import-outside-toplevel

    variant = rendered[name]
    table = variant["facts"]["routes"]
    routes = [r for v in table["vhosts"] for r in v["routes"]]
    not_applicable = set()
    if not any(r["action"] == "static" for r in routes):
        not_applicable.add("MX03")  # matrix_well_known_serve: false
    if not any(not v["tls"] for v in table["vhosts"]):
        not_applicable.add("MX12")  # no plain-HTTP listener without ACME
    services = {v["name"] for v in table["vhosts"]}
    if "mas" not in services:
        not_applicable.add("MX13")  # no matrix_mas_url
    if not {"rtc_jwt", "rtc_sfu"} & services:
        not_applicable.add("MX14")  # no matrix_rtc_*_url
    if not any("MX16" in r["behaviours"] for r in routes):
        not_applicable.add("MX16")  # no matrix_workers
    comments = [line for line in variant["cfg"].splitlines() if line.strip().startswith("#")]
    cited = {i for line in comments for i in re.findall(r"\bMX\d\d\b", line)}
    assert cited <= set(BEHAVIOURS), cited - set(BEHAVIOURS)
    assert set(BEHAVIOURS) - not_applicable - cited == set(), "behaviours without a comment in the rendered configuration"
    # Every route's block names the behaviours the table gives it.
    for vhost in table["vhosts"]:
        for route in vhost["routes"]:
            header = f"# {' '.join(route['behaviours'])} route {vhost['name']}.{route['id']}: "
            assert any(line.strip().startswith(header) for line in comments), header


@pytest.mark.parametrize("name", VARIANTS)
def test_every_route_checks_the_raw_uri(rendered, name):
    """MX04: every route that forwards or answers (exact ones too, issue 18) checks the raw URI
    against the table's raw_regex before it acts; a mismatch gets the vhost's fallback."""
    variant = rendered[name]
    table = variant["facts"]["routes"]
    checked = 0
    for vhost in table["vhosts"]:
        lines = _route_frontend(variant["cfg"], vhost)
        for route in vhost["routes"]:
            key = f"{vhost['name']}_{route['id']}"
            if route["action"] == "refuse":
                continue
            assert f"acl mx_raw_{key} pathq -m reg {_quoted(route['match']['raw_regex'])}" in lines, key
            refusal = next(i for i, line in enumerate(lines) if line.endswith(f"if mx_route_{key} !mx_raw_{key}"))
            if "redirect" in vhost["fallback"]:
                assert lines[refusal].startswith("http-request redirect code 301 "), key
            else:
                fallback = vhost["fallback"]
                assert lines[refusal].startswith(
                    f"http-request return status {fallback['status']} content-type application/json "
                    f'string {_quoted(fallback["body"])} hdr Access-Control-Allow-Origin "*" '), key
            acts = [i for i, line in enumerate(lines)
                    if line.endswith(f"if mx_route_{key}") and not line.startswith("http-request set-var")]
            assert acts and min(acts) > refusal, key
            checked += 1
    # The exact-match routes are among them: /health on every client vhost.
    exact = [r for v in table["vhosts"] for r in v["routes"] if r["match"]["kind"] == "exact" and r["action"] != "refuse"]
    assert any(r["id"] == "health" for r in exact) and checked >= len(exact)
    assert "acl mx_raw_client_health pathq -m reg '^/health(?:[?]|$)'" in variant["cfg"].replace("    ", "")


@pytest.mark.parametrize("name", VARIANTS)
def test_errors_the_proxy_answers_are_the_tables_matrix_json(rendered, name):
    """MX11: 403, 404, 413 and 502/503/504 answered by HAProxy itself are the table's canonical
    JSON bodies with Content-Type application/json and CORS; 502/503/504 carry Retry-After.
    The homeserver's own error responses are left alone (no http-response rule rewrites them)."""
    variant = rendered[name]
    text = variant["cfg"]
    errors = {int(status): error for status, error in variant["facts"]["routes"]["errors"].items()}
    assert set(errors) == {403, 404, 413, 502, 503, 504}
    returns = [line.strip() for line in text.splitlines() if line.strip().startswith("http-request return status")]
    own = [line for line in returns if not line.startswith("http-request return status 200 ")]
    assert {int(line.split()[3]) for line in own} >= {404, 413}
    for line in own:
        status = int(line.split()[3])
        assert line.startswith(f"http-request return status {status} content-type application/json "
                               f'string {_quoted(errors[status]["body"])} hdr Access-Control-Allow-Origin "*"'), line
    sections = _sections(text)
    for pool in variant["facts"]["routes"]["upstreams"]:
        backend = sections[f"backend be_matrix_{pool['name']}"]
        for status in (502, 503, 504):
            assert (f"http-error status {status} content-type application/json string {_quoted(errors[status]['body'])} "
                    f'hdr Access-Control-Allow-Origin "*" hdr Retry-After {errors[status]["retry_after"]}') in backend
    assert sections["backend be_matrix_error_404"] == [
        f'http-request return status 404 content-type application/json string {_quoted(errors[404]["body"])} '
        'hdr Access-Control-Allow-Origin "*"']
    # 413: at once for "Expect: 100-continue", else from the Lua service; chunked: the Lua filter.
    lua = (variant["dir"] / "matrix" / "mxedge_matrix.lua").read_text()
    assert f"local TOO_LARGE_BODY = {json.dumps(errors[413]['body'])}" in lua
    assert f"local TOO_LARGE_STATUS = {errors[413]['status']}" in lua
    assert lua.count('"access-control-allow-origin"') == 2
    assert 'core.register_filter("mx_body_limit"' in lua and 'core.register_service("mx_too_large"' in lua
    for port, lines in _frontends(text).items():
        assert "http-request use-service lua.mx_too_large if mx_body_too_large" in lines, port
    assert not re.search(r"^\s*http-response", text.replace("http-response set-header X-", ""), re.M)


# A stand-in homeserver: logs each request it received in full, answers 200 JSON.
UPSTREAM_SERVER = """
import http.server, sys
class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.headers.get("Transfer-Encoding") == "chunked":
            while True:
                size = int(self.rfile.readline().strip(), 16)
                self.rfile.read(size + 2)
                if size == 0:
                    break
        else:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(sys.argv[1], "a") as log:
            log.write(self.path + "\\n")
        body = b'{"upstream":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_POST = do_GET
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", 8008), Upstream).serve_forever()
"""

# HAProxy and the stand-in in namespaces of their own; requests from 10.9.9.9, outside the allow-list.
MX11_SCRIPT = r"""
set -u
ip link set lo up
ip addr add 10.9.9.9/32 dev lo
python3 "$SCRATCH/upstream.py" "$SCRATCH/upstream.log" &
upstream=$!
haproxy -db -f "$SCRATCH/haproxy.cfg" >"$SCRATCH/haproxy.log" 2>&1 &
i=0
while ! grep -q "is UP" "$SCRATCH/haproxy.log" && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
head -c 2000000 /dev/zero >"$SCRATCH/big.bin"
ask() {
    name=$1; host=$2; path=$3; shift 3
    curl -sk --path-as-is --interface 10.9.9.9 --resolve "$host:443:127.0.0.1" -o "$SCRATCH/$name.body" \
        -D "$SCRATCH/$name.head" --max-time 20 "$@" "https://$host$path" >/dev/null
}
ask admin "$FQDN" /_synapse/admin/v1/server_version
ask health_bypass "$FQDN" "/_synapse/admin/v2/users/%2E%2E%2F%2E%2E%2F%2E%2E%2F%2E%2E%2Fhealth"
ask well_known_bypass "$NAME" "/_synapse/admin/v2/users/%2E%2E%2F%2E%2E%2F%2E%2E%2F%2E%2E%2F.well-known%2Fmatrix%2Fserver"
ask unrouted "$FQDN" /_matrixnothing
ask health "$FQDN" /health
ask chunked "$FQDN" "/_matrix/media/v3/upload?chunked" --http1.1 -X POST -H "Transfer-Encoding: chunked" --data-binary @"$SCRATCH/big.bin"
ask length "$FQDN" "/_matrix/media/v3/upload?length" -X POST -H "Expect:" --data-binary @"$SCRATCH/big.bin"
kill "$upstream"
ask down "$FQDN" /_matrix/client/versions
"""


def _install_test_certificate(variant, tmp_path):
    """A throw-away certificate and key, as the chain+key bundle the variant's configuration names."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=matrix.example.test"],
        capture_output=True, check=True,
    )
    pem = pathlib.Path(variant["facts"]["cert_path"])
    pem.parent.mkdir(parents=True, exist_ok=True)
    pem.write_text(cert.read_text() + key.read_text())


@pytest.mark.skipif(not all(shutil.which(tool) for tool in ("haproxy", "openssl", "curl", "unshare", "ip")),
                    reason="needs haproxy, openssl, curl, unshare and ip")
def test_haproxy_answers_matrix_errors_and_checks_the_raw_uri(rendered, tmp_path):
    """MX04, MX06, MX08, MX11 live: a real HAProxy on the e2e hs1 configuration (body limit lowered
    to 1 MiB) next to a stand-in homeserver. Its own answers are the table's JSON with CORS; a URI
    that only normalises to /health or a well-known route is not forwarded; a chunked body over
    the limit gets the 413 and never reaches the homeserver as a request."""
    if subprocess.run(["unshare", "--net", "--pid", "--fork", "true"], capture_output=True, check=False).returncode:
        pytest.skip("unshare --net --pid is not permitted here")
    variant = rendered["delegated_single_port"]
    _install_test_certificate(variant, tmp_path)
    limit = int(VARIANTS["delegated_single_port"].get("matrix_max_upload_size_mb", 50)) * 1048576
    cfg = variant["cfg"].replace("/run/haproxy/admin.sock", str(tmp_path / "admin.sock"))
    (tmp_path / "haproxy.cfg").write_text(cfg.replace(f"int({limit})", "int(1048576)"))
    (tmp_path / "upstream.py").write_text(UPSTREAM_SERVER)
    env = dict(os.environ, SCRATCH=str(tmp_path), FQDN="matrix.example.test", NAME="example.test")
    proc = subprocess.run(["unshare", "--net", "--pid", "--fork", "--kill-child", "sh", "-c", MX11_SCRIPT],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    errors = {int(status): error for status, error in variant["facts"]["routes"]["errors"].items()}

    def answer(name):
        head = (tmp_path / f"{name}.head").read_text().replace("\r", "")
        final = head.strip().split("\n\n")[-1].split("\n")
        headers = dict(line.split(": ", 1) for line in final[1:] if ": " in line)
        return int(final[0].split()[1]), {k.lower(): v for k, v in headers.items()}, (tmp_path / f"{name}.body").read_text()

    logs = proc.stderr + (tmp_path / "haproxy.log").read_text()
    for name, status in (("admin", 403), ("health_bypass", 404), ("well_known_bypass", 404), ("unrouted", 404),
                         ("chunked", 413), ("length", 413), ("down", 503)):
        got = answer(name)
        assert got[0] == status and got[2] == errors[status]["body"], (name, got, logs)
        assert got[1]["content-type"] == "application/json" and got[1]["access-control-allow-origin"] == "*", (name, got)
        assert ("retry-after" in got[1]) == (status >= 500), (name, got)
    assert answer("health")[0] == 200
    # The homeserver received the health checks and the /health request, nothing else.
    received = (tmp_path / "upstream.log").read_text()
    assert set(received.split()) == {"/health"}, received


@pytest.mark.skipif(not (shutil.which("haproxy") and shutil.which("openssl")), reason="needs haproxy and openssl")
@pytest.mark.parametrize("name", VARIANTS)
def test_haproxy_accepts_the_rendered_configuration(rendered, name, tmp_path):
    variant = rendered[name]
    _install_test_certificate(variant, tmp_path)
    # A check only parses (certificates and Lua included); it binds and connects nothing.
    proc = subprocess.run(["haproxy", "-c", "-f", str(variant["dir"] / "haproxy.cfg")],
                          capture_output=True, text=True, check=False)
    daemon_checks.record(f"HAProxy {daemon_checks.host_version('haproxy')} (this machine): haproxy -c")
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
    _install_test_certificate(variant, tmp_path)
    # Its own admin socket, so that a HAProxy of the machine keeps its own.
    (tmp_path / "haproxy.cfg").write_text(variant["cfg"].replace("/run/haproxy/admin.sock", str(tmp_path / "admin.sock")))
    (tmp_path / "echo.py").write_text(ECHO_SERVER)
    variables = VARIANTS[name]
    fqdn = variables.get("matrix_homeserver_fqdn", variables["matrix_server_name"])
    port = variables.get("matrix_acme_challenge_port", 8402)
    env = dict(os.environ, SCRATCH=str(tmp_path), ACME_PORT=str(port), HOST1=fqdn, HOST2=variables["matrix_server_name"])
    proc = subprocess.run(["unshare", "--net", "--pid", "--fork", "--kill-child", "sh", "-c", LIVE_SCRIPT],
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    daemon_checks.record(f"HAProxy {daemon_checks.host_version('haproxy')} (this machine): "
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


# Per-vhost extras with no frontend to go into: the template would drop them
# without a word, so the preflight refuses them, naming the variable and why
# (as nginx, Apache and Caddy do).
PREFLIGHT_PLAYBOOK = """
- name: Run the haproxy role's preflight, one variable set per host
  hosts: all
  connection: local
  gather_facts: false
  tasks:
    - name: Load the role (defaults, vars, matrix dependency) and run its preflight
      ansible.builtin.include_role:
        name: mxedge.matrix.haproxy
        tasks_from: preflight
"""
REFUSED_EXTRAS = {
    "federation_extra_single_port": (
        {"matrix_server_name": "example.test", "matrix_homeserver_fqdn": "matrix.example.test",
         "matrix_federation_port": 443, "haproxy_federation_vhost_extra": "http-response set-header X-Federation yes"},
        ["haproxy_federation_vhost_extra is set", "matrix_federation_port ==", "haproxy_client_vhost_extra"],
    ),
    "well_known_extra_not_served": (
        {"matrix_server_name": "other.test", "matrix_well_known_serve": False,
         "haproxy_well_known_vhost_extra": "http-response set-header X-Well-Known yes"},
        ["haproxy_well_known_vhost_extra is set", "matrix_well_known_serve is false"],
    ),
}


@pytest.mark.parametrize("name", REFUSED_EXTRAS)
def test_preflight_refuses_an_extra_with_no_frontend(tmp_path, name):

    variables, fragments = REFUSED_EXTRAS[name]
    proc = run_playbook(tmp_path, PREFLIGHT_PLAYBOOK, {name: dict(COMMON, **variables)})
    output = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0, output[-3000:]
    assert "Assert every per-vhost extra has a listener to go into" in output, output[-3000:]
    for fragment in fragments:
        assert fragment in output, (fragment, output[-3000:])


# MAS and MatrixRTC (MX13, MX14): the "services" variant.
# vhost, its one Host name, its route, its pool and that pool's one server.
SERVICE_VHOSTS = [
    ("mas", "auth.example.test", "mas", "127.0.0.1:8080"),
    ("rtc_jwt", "rtc-jwt.example.test", "rtc-jwt", "localhost:8081"),
    ("rtc_sfu", "sfu.example.test", "rtc-sfu", "127.0.0.1:7880"),
]
MAS_COMPAT = [(version, endpoint) for version in ("api/v1", "r0", "v3", "unstable")
              for endpoint in ("login", "logout", "refresh")]


@pytest.mark.parametrize(("vhost", "host", "route", "server"), SERVICE_VHOSTS)
def test_service_vhosts_answer_only_their_host_names(rendered, vhost, host, route, server):
    """MX13, MX14: each service is a vhost of port 443 chosen by its Host name alone, routed whole
    ("/") to its own pool; no other vhost answers that name and no vhost answers any Host."""
    text = rendered["services"]["cfg"]
    lines = _frontends(text)[443]
    vhost_rules = [line for line in lines if line.startswith("http-request set-var(txn.mx_vhost)")]
    assert _vhost_rule(vhost, host) in vhost_rules
    assert [line for line in vhost_rules if host in line] == [_vhost_rule(vhost, host)]
    assert not any(" unless " in line for line in vhost_rules)  # an unknown Host: default_backend (404)
    assert _vhost_rule("client", "matrix.example.test") in vhost_rules
    key = f"{vhost}_{route}"
    # "/" matches every normalised path below the root, and every raw URI; nothing is left for the fallback.
    assert [line for line in lines if line.startswith(f"acl mx_path_{key} ")] == [
        f"acl mx_path_{key} var(txn.mx_path) -i -m beg /"]
    assert f"acl mx_raw_{key} pathq -m reg '^/'" in lines
    selected = [line for line in lines if line.startswith(f"http-request set-var(txn.mx_route) str({vhost}.")]
    assert selected == [f"http-request set-var(txn.mx_route) str({vhost}.{route}) if mx_vhost_{vhost} "
                        f"!{{ var(txn.mx_route) -m found }} mx_path_{key}"]
    routing = [line for line in lines if line.startswith("use_backend")
               and line.endswith((f" if mx_route_{key}", f" if mx_vhost_{vhost}"))]
    assert routing == [f"use_backend be_matrix_{vhost} if mx_route_{key}", f"use_backend be_matrix_error_404 if mx_vhost_{vhost}"]
    backend = _sections(text)[f"backend be_matrix_{vhost}"]
    assert backend[0] == "balance first" and backend[-1] == f"server {vhost} {server}"
    assert "option httpchk" not in backend  # no health path: no checks
    by_name = {v["name"]: v for v in rendered["services"]["facts"]["routes"]["vhosts"]}
    assert by_name[vhost]["hosts"] == [host] and by_name[vhost]["port"] == 443 and not by_name[vhost]["any_host"]


@pytest.mark.parametrize(("version", "endpoint"), MAS_COMPAT)
def test_mas_compat_routes_go_to_mas_before_the_client_api(rendered, version, endpoint):
    """MX13: login, logout and refresh of every client API version go to MAS, chosen before the
    /_matrix route would send them to the homeserver; the prefix ends at a path segment."""
    lines = _frontends(rendered["services"]["cfg"])[443]
    route = f"mas-{version.replace('/', '-')}-{endpoint}"
    key = f"client_{route}"
    path = f"/_matrix/client/{version}/{endpoint}"
    assert f"acl mx_path_{key} var(txn.mx_path) -i -m str {path}" in lines
    assert f"acl mx_path_{key} var(txn.mx_path) -i -m beg {path}/" in lines
    assert f"acl mx_raw_{key} pathq -m reg {_quoted('^' + path + '(?:[/?]|$)')}" in lines
    selected = [line.split()[2] for line in lines if line.startswith("http-request set-var(txn.mx_route) str(client.")]
    assert selected.index(f"str(client.{route})") < selected.index("str(client.api-matrix)")
    assert selected.index("str(client.admin-synapse-admin)") < selected.index(f"str(client.{route})")
    assert f"use_backend be_matrix_mas if mx_route_{key}" in lines
    assert f"http-request set-var(txn.mx_body_limit) int(52428800) if mx_route_{key}" in lines


def test_mas_compat_routes_in_the_tables_order(rendered):
    lines = _frontends(rendered["services"]["cfg"])[443]
    selected = [line.split()[2][4:-1] for line in lines if line.startswith("http-request set-var(txn.mx_route) str(client.")]
    assert selected == (["client.admin-synapse-admin"]
                        + [f"client.mas-{v.replace('/', '-')}-{e}" for v, e in MAS_COMPAT]
                        + ["client.api-matrix", "client.api-synapse-client", "client.health"])


@pytest.mark.parametrize("name", VARIANTS)
def test_websocket_tunnel_only_on_tunnel_routes(rendered, name):
    """MX14, MX08: the backend of a tunnel-class route states timeout tunnel (the role default,
    3600 s); no other backend does, and no rule rewrites Upgrade or Connection anywhere: HAProxy
    passes the upgrade as received, and only an upstream answering 101 makes a tunnel."""
    import yaml  # pylint: disable=import-outside-toplevel

    variant = rendered[name]
    table = variant["facts"]["routes"]
    text = variant["cfg"]
    sections = _sections(text)
    default = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())["haproxy_timeout_tunnel"]
    assert default >= 3600
    assert f"timeout tunnel {default}s" in sections["defaults"]
    tunnel_pools = {r["upstream"] for v in table["vhosts"] for r in v["routes"]
                    if r["action"] == "forward" and r["policy"]["timeout"] == "tunnel"}
    assert tunnel_pools == ({"rtc_sfu"} if name == "services" else set())
    for pool in table["upstreams"]:
        backend = sections[f"backend be_matrix_{pool['name']}"]
        stated = [line for line in backend if line.startswith("timeout ")]
        assert stated == ([f"timeout tunnel {default}s"] if pool["name"] in tunnel_pools else []), pool["name"]
    assert not re.search(r"^\s*http-(request|response) \S+-header (Upgrade|Connection)\b", text, re.M | re.I)
    websocket = [line.strip() for line in text.splitlines() if line.strip().startswith("# MX14 MX08 WebSocket")]
    assert websocket == (["# MX14 MX08 WebSocket: the Upgrade (HTTP/2: extended CONNECT) goes to be_matrix_rtc_sfu as"]
                         if name == "services" else [])


# Stand-ins for the homeserver, MAS, the JWT service and the SFU: each answers
# "<port> <Host> <X-Forwarded-For> <path>" in JSON; the SFU (port 7880) answers a WebSocket
# upgrade with 101 and then echoes what it reads.
SERVICE_STANDIN = r"""
import base64, hashlib, http.server, json, socket, sys
port = int(sys.argv[1])
class Standin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if port == 7880 and self.headers.get("Upgrade", "").lower() == "websocket":
            accept = base64.b64encode(hashlib.sha1((self.headers["Sec-WebSocket-Key"]
                                                    + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", accept.decode())
            self.end_headers()
            self.wfile.flush()
            while True:
                data = self.connection.recv(4096)
                if not data:
                    break
                self.connection.sendall(data)
            self.close_connection = True
            return
        body = json.dumps([port, self.headers.get("Host"), self.headers.get("X-Forwarded-For"), self.path]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_POST = do_GET
    def log_message(self, *args):
        pass
class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6  # "::", dual stack: "localhost" may resolve to ::1 or 127.0.0.1
Server(("::", port), Standin).serve_forever()
"""

# An HTTP/1.1 WebSocket upgrade through HAProxy, idle longer than timeout client and server,
# then one message each way: "<host> <status line> echoed|not echoed".
WEBSOCKET_CLIENT = r"""
import socket, ssl, sys, time
host, path, idle = sys.argv[1], sys.argv[2], float(sys.argv[3])
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
with context.wrap_socket(socket.create_connection(("127.0.0.1", 443), timeout=10), server_hostname=host) as tls:
    tls.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n" % (path, host)).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = tls.recv(4096)
        if not chunk:
            break
        head += chunk
    status = head.split(b"\r\n", 1)[0].decode()
    time.sleep(idle)
    try:
        tls.sendall(b"ping")
        echo = tls.recv(4096)
    except OSError:
        echo = b""
    print(host, status, "echoed" if echo == b"ping" else "not echoed")
"""

SERVICES_SCRIPT = r"""
set -u
ip link set lo up
for port in 8008 8080 8081 7880; do python3 "$SCRATCH/standin.py" "$port" & done
haproxy -db -f "$SCRATCH/haproxy.cfg" >"$SCRATCH/haproxy.log" 2>&1 &
i=0
while ! grep -q "is UP" "$SCRATCH/haproxy.log" && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
ask() {
    curl -sk --path-as-is --resolve "$1:443:127.0.0.1" -H "X-Forwarded-For: 192.0.2.66" -o "$SCRATCH/body" \
        -w '%{http_code} ' --max-time 10 "https://$1$2"
    head -c 300 "$SCRATCH/body" | tr -d '\n'
    echo
}
ask auth.example.test /.well-known/openid-configuration
ask auth.example.test /_matrix/client/v3/sync
ask matrix.example.test /_matrix/client/v3/login
ask matrix.example.test /_matrix/client/r0/logout/all
ask matrix.example.test '/_matrix/client/unstable/refresh?x=1'
ask matrix.example.test /_matrix/client/v3/loginx
ask matrix.example.test /_matrix/client/v3/sync
ask rtc-jwt.example.test /sfu/get
ask sfu.example.test '/rtc/validate?access_token=t'
ask unknown.example.test /
python3 "$SCRATCH/ws.py" sfu.example.test '/rtc?access_token=t' 3
python3 "$SCRATCH/ws.py" matrix.example.test /_matrix/client/versions 0
"""


@pytest.mark.skipif(not all(shutil.which(tool) for tool in ("haproxy", "openssl", "curl", "unshare", "ip")),
                    reason="needs haproxy, openssl, curl, unshare and ip")
def test_haproxy_routes_the_services_and_tunnels_the_sfu_websocket(rendered, tmp_path):
    """MX13, MX14, MX05 live: a real HAProxy on the "services" configuration next to stand-ins for the
    homeserver, MAS, the JWT service and the SFU. Each service host goes whole to its service, the
    compat routes to MAS and their neighbours to the homeserver; a WebSocket upgrade on the SFU host
    becomes a tunnel that outlives timeout client and server (lowered to 1 s here), while an upgrade
    asked of the homeserver stays plain HTTP."""
    if subprocess.run(["unshare", "--net", "--pid", "--fork", "true"], capture_output=True, check=False).returncode:
        pytest.skip("unshare --net --pid is not permitted here")
    variant = rendered["services"]
    _install_test_certificate(variant, tmp_path)
    cfg = variant["cfg"].replace("/run/haproxy/admin.sock", str(tmp_path / "admin.sock"))
    cfg = re.sub(r"(?m)^(\s+timeout (client|server)) \d+s$", r"\1 1s", cfg)
    assert cfg.count(" 1s\n") == 2
    (tmp_path / "haproxy.cfg").write_text(cfg)
    (tmp_path / "standin.py").write_text(SERVICE_STANDIN)
    (tmp_path / "ws.py").write_text(WEBSOCKET_CLIENT)
    proc = subprocess.run(["unshare", "--net", "--pid", "--fork", "--kill-child", "sh", "-c", SERVICES_SCRIPT],
                          env=dict(os.environ, SCRATCH=str(tmp_path)), capture_output=True, text=True, timeout=120,
                          check=False)
    daemon_checks.record(f"HAProxy {daemon_checks.host_version('haproxy')} (this machine): "
                         "service hosts and a WebSocket tunnel answering (unshare --net --pid)")
    logs = proc.stderr + (tmp_path / "haproxy.log").read_text()
    answers = proc.stdout.splitlines()
    assert len(answers) == 12, proc.stdout + logs

    def forwarded(port, host, path):
        # the upstream's port, the Host as sent, X-Forwarded-For overwritten, the URI unmodified
        return "200 " + json.dumps([port, host, "127.0.0.1", path])

    assert answers[:9] == [
        forwarded(8080, "auth.example.test", "/.well-known/openid-configuration"),
        forwarded(8080, "auth.example.test", "/_matrix/client/v3/sync"),
        forwarded(8080, "matrix.example.test", "/_matrix/client/v3/login"),
        forwarded(8080, "matrix.example.test", "/_matrix/client/r0/logout/all"),
        forwarded(8080, "matrix.example.test", "/_matrix/client/unstable/refresh?x=1"),
        forwarded(8008, "matrix.example.test", "/_matrix/client/v3/loginx"),
        forwarded(8008, "matrix.example.test", "/_matrix/client/v3/sync"),
        forwarded(8081, "rtc-jwt.example.test", "/sfu/get"),
        forwarded(7880, "sfu.example.test", "/rtc/validate?access_token=t"),
    ], logs
    errors = variant["facts"]["routes"]["errors"]
    assert answers[9] == "404 " + errors["404"]["body"]
    assert answers[10] == "sfu.example.test HTTP/1.1 101 Switching Protocols echoed", logs
    # The homeserver answers the upgrade as a plain request: no tunnel, "ping" is no HTTP request.
    assert answers[11] == "matrix.example.test HTTP/1.1 200 OK not echoed", logs


# ---------------------------------------------------------------------------
# matrix_proxy_mode=alongside: the role's own file next to the operator's haproxy.cfg.
# Checked by `haproxy -c` with both files (-f, -f), as the role's drop-in loads them:
#   stock   next to Debian's stock haproxy.cfg (no frontend): the role binds its ports itself;
#   joined  next to the scenario's operator config (frontend "www" on 80/443 for example.test
#           and unrelated.test): the role joins "www" (haproxy_operator_frontend), with the
#           well-known documents of the operator's example.test site (matrix_well_known_site=operator).
OPERATOR_CFG = ROOT / "molecule" / "shared" / "operator" / "haproxy" / "haproxy.cfg"
DEBIAN_STOCK_CFG = pathlib.Path("/etc/haproxy/haproxy.cfg")
E2E_HS1 = {key: value for key, value in VARIANTS["delegated_single_port"].items() if key != "mx_ipv6"}
ALONGSIDE = {
    "stock": dict(E2E_HS1, matrix_proxy_mode="alongside", mx_ipv6=True, mx_operator="stock"),
    "joined": dict(E2E_HS1, matrix_proxy_mode="alongside", matrix_well_known_site="operator",
                   haproxy_operator_frontend="www", mx_ipv6=False, mx_operator="joined"),
    # MAS and MatrixRTC hosts on the joined 443; federation on 8448, bound by the role itself.
    "joined_services": dict(SERVICE_VARIABLES, matrix_rtc_jwt_upstream="http://localhost:8081",
                            matrix_proxy_mode="alongside", matrix_well_known_site="operator",
                            haproxy_operator_frontend="www", mx_ipv6=False, mx_operator="joined"),
}

ALONGSIDE_PLAYBOOK = PLAYBOOK.replace(
    'dest: "{{{{ _haproxy_config_path }}}}"', 'dest: "{{{{ _haproxy_rendered_path }}}}"'
).replace(
    "'static_dir': _haproxy_static_dir}}",
    "'static_dir': _haproxy_static_dir, 'rendered': _haproxy_rendered_path, 'join_port': _haproxy_join_port | int,"
    " 'join_line': _haproxy_join_line if _haproxy_join_port | int else ''}}",
)
assert ALONGSIDE_PLAYBOOK.count("_haproxy_rendered_path") == 2


def _operator_tree(scratch):
    """The scenario's operator config with its files (certificate, pages) under `scratch`."""
    text = OPERATOR_CFG.read_text()
    for name in ("certs", "sites"):
        text = text.replace(f"/etc/haproxy/{name}/", f"{scratch}/{name}/")
        (scratch / name).mkdir(parents=True, exist_ok=True)
    for page in ("example.html", "about.html", "unrelated.html"):
        (scratch / "sites" / page).write_bytes((OPERATOR_CFG.parent / page).read_bytes())
    key, cert = scratch / "key.pem", scratch / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=example.test",
         "-addext", "subjectAltName=DNS:example.test,DNS:unrelated.test"],
        capture_output=True, check=True,
    )
    (scratch / "certs" / "sites.pem").write_text(cert.read_text() + key.read_text())
    cfg = scratch / "haproxy.cfg"
    cfg.write_text(text)
    return cfg


@pytest.fixture(scope="module")
def alongside(tmp_path_factory):
    if not (shutil.which("haproxy") and shutil.which("openssl") and DEBIAN_STOCK_CFG.is_file()):
        pytest.skip("needs haproxy, openssl and Debian's stock /etc/haproxy/haproxy.cfg")
    out = tmp_path_factory.mktemp("haproxy-alongside")
    hosts = {}
    for name, variables in ALONGSIDE.items():
        operator = (_operator_tree(out / f"{name}-operator") if variables["mx_operator"] == "joined"
                    else DEBIAN_STOCK_CFG)
        hosts[name] = dict(dict(COMMON, **variables), haproxy_operator_config=str(operator))
    facts = render(out, ALONGSIDE_PLAYBOOK.format(role=ROLE, out=out), hosts)
    return {name: {"dir": out / name, "operator": pathlib.Path(hosts[name]["haproxy_operator_config"]),
                   "cfg": pathlib.Path(facts[name]["rendered"]).read_text(), "facts": facts[name]}
            for name in ALONGSIDE}


def _join(variant):
    """The operator's config text with the role's edits (what the role's join task writes)."""
    from ansible_collections.mxedge.matrix.plugins.module_utils import haproxy_config  # pylint: disable=import-outside-toplevel
    text = variant["operator"].read_text()
    return haproxy_config.join(text, "www", variant["facts"]["join_line"], variant["facts"]["cert_path"],
                               variant["facts"]["join_port"]), text


def test_alongside_file_sets_no_global_of_the_operators(alongside):
    for name, variant in alongside.items():
        sections = _sections(variant["cfg"])
        assert sections["global"] == [f"lua-load-per-thread {variant['dir']}/mxedge-matrix/mxedge_matrix.lua"], name
        assert "defaults mxedge_matrix" in sections, name
        for key in sections:
            if key.startswith(("frontend ", "backend ")):
                assert key.endswith(" from mxedge_matrix"), (name, key)


def test_alongside_stock_binds_its_own_ports_with_its_tls_profile(alongside):
    variant = alongside["stock"]
    assert variant["facts"]["join_port"] == 0 and variant["facts"]["join_line"] == ""
    binds = _sections(variant["cfg"])["frontend fe_matrix_443 from mxedge_matrix"]
    binds = [line for line in binds if line.startswith("bind ")]
    assert len(binds) == 2, binds
    for line in binds:
        assert f"crt {variant['dir']}/mxedge-matrix/tls/matrix.pem" in line
        assert "ssl-min-ver TLSv1.2 no-tls-tickets" in line and " ciphers " in line and " curves " in line


def test_alongside_joined_listens_internally_and_adds_one_marked_line(alongside):
    variant = alongside["joined"]
    facts = variant["facts"]
    assert facts["join_port"] == 443
    sections = _sections(variant["cfg"])
    frontend = sections["frontend fe_matrix_443 from mxedge_matrix"]
    assert [line for line in frontend if line.startswith("bind ")] == ["bind abns@mxedge-matrix-443 accept-proxy"]
    assert "http-request set-header X-Forwarded-Proto https" in frontend
    assert sections["backend be_mxedge_matrix_443 from mxedge_matrix"][-1] == (
        "server mxedge_matrix_443 abns@mxedge-matrix-443 send-proxy-v2")
    line = facts["join_line"]
    assert line.startswith("use_backend be_mxedge_matrix_443 if { ssl_fc } { dst_port 443 } ")
    assert "-m str matrix.example.test }" in line and "-m str example.test } { path -m str " in line
    assert "/.well-known/matrix/server" in line and "/.well-known/matrix/support" in line
    edited, before = _join(variant)
    from ansible_collections.mxedge.matrix.plugins.module_utils import haproxy_config  # pylint: disable=import-outside-toplevel
    assert haproxy_config.unjoin(edited, facts["cert_path"]) == before
    added = [line for line in edited.splitlines() if line not in before.splitlines()]
    assert len(added) == 2, added   # the bind line with the role's crt, the use_backend line
    assert added[0] == "\tbind :443 ssl crt " + str(variant["operator"].parent / "certs" / "sites.pem") + \
        f" alpn h2,http/1.1 crt {facts['cert_path']}"   # the operator's line, extended
    assert added[1] == "\t" + line + " " + haproxy_config.MARKER
    # Before the operator's own use_backend lines: evaluated first.
    lines = edited.splitlines()
    assert lines.index(added[1]) + 1 == lines.index("\tuse_backend site_example if host_example")


@pytest.mark.parametrize("name", ALONGSIDE)
def test_haproxy_accepts_the_operators_config_with_the_alongside_file(alongside, name, tmp_path):
    variant = alongside[name]
    _install_test_certificate(variant, tmp_path)
    operator = variant["operator"]
    if variant["facts"]["join_port"]:
        operator = tmp_path / "operator.cfg"
        operator.write_text(_join(variant)[0])
    proc = subprocess.run(["haproxy", "-c", "-f", str(operator), "-f", variant["facts"]["rendered"]],
                          capture_output=True, text=True, check=False)
    daemon_checks.record(f"HAProxy {daemon_checks.host_version('haproxy')} (this machine): haproxy -c")
    assert proc.returncode == 0, proc.stdout + proc.stderr


# The operator's frontend "www" joined: a real HAProxy with both files, a stand-in homeserver that
# echoes what it received. From 10.9.9.9 (outside the allow-list); long-poll timing lowered.
JOINED_UPSTREAM = """
import http.server, json, sys, time
class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.headers.get("Transfer-Encoding") == "chunked":
            while True:
                size = int(self.rfile.readline().strip(), 16)
                self.rfile.read(size + 2)
                if size == 0:
                    break
        else:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if "sleep=" in self.path:
            time.sleep(float(self.path.split("sleep=")[1]))
        body = json.dumps({"path": self.path, "xff": self.headers.get_all("X-Forwarded-For"),
                           "proto": self.headers.get("X-Forwarded-Proto"),
                           "rid": self.headers.get("X-Request-ID")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_POST = do_GET
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", 8008), Upstream).serve_forever()
"""
JOINED_SCRIPT = r"""
set -u
ip link set lo up
ip addr add 10.9.9.9/32 dev lo
python3 "$SCRATCH/upstream.py" &
haproxy -db -f "$SCRATCH/operator.cfg" -f "$SCRATCH/mxedge-matrix.cfg" >"$SCRATCH/haproxy.log" 2>&1 &
i=0
while ! grep -q "is UP" "$SCRATCH/haproxy.log" && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
head -c 2000000 /dev/zero >"$SCRATCH/big.bin"
ask() {
    name=$1; host=$2; path=$3; shift 3
    curl -sk --path-as-is --interface 10.9.9.9 --resolve "$host:443:127.0.0.1" -o "$SCRATCH/$name.body" \
        -D "$SCRATCH/$name.head" --max-time 20 "$@" "https://$host$path" >/dev/null
}
ask site example.test /
ask about example.test /about.html
ask unrelated unrelated.test /
ask wk_server example.test /.well-known/matrix/server
ask wk_support example.test /.well-known/matrix/support
ask wk_other example.test /.well-known/matrix/other
ask versions matrix.example.test /_matrix/client/versions -H "X-Forwarded-For: 6.6.6.6" -H "X-Request-ID: forged"
ask versions2 matrix.example.test /_matrix/client/versions --http2
ask admin matrix.example.test /_synapse/admin/v1/server_version
ask poll matrix.example.test "/_matrix/client/v3/sync?sleep=3"
ask length matrix.example.test "/_matrix/media/v3/upload?length" -X POST -H "Expect:" --data-binary @"$SCRATCH/big.bin"
ask chunked matrix.example.test "/_matrix/media/v3/upload?chunked" --http1.1 -X POST -H "Transfer-Encoding: chunked" --data-binary @"$SCRATCH/big.bin"
"""


@pytest.mark.skipif(not all(shutil.which(tool) for tool in ("haproxy", "openssl", "curl", "unshare", "ip")),
                    reason="needs haproxy, openssl, curl, unshare and ip")
def test_haproxy_joined_frontend_keeps_the_sites_and_the_matrix_behaviour(alongside, tmp_path):
    """The chain operator frontend -> be_mxedge_matrix_443 -> abns -> fe_matrix_443: the operator's
    sites answer as before; the Matrix hosts and the well-known paths reach the role; the homeserver
    sees the client's address (not 127.0.0.1) in an overwritten X-Forwarded-For, https, a fresh request
    ID; the admin allow-list holds; the body limit answers 413; a long-poll longer than the operator's
    timeout client (lowered to 1 s) and the role's timeout server lowered to 5 s completes."""
    if subprocess.run(["unshare", "--net", "--pid", "--fork", "true"], capture_output=True, check=False).returncode:
        pytest.skip("unshare --net --pid is not permitted here")
    variant = alongside["joined"]
    _install_test_certificate(variant, tmp_path)
    limit = int(VARIANTS["delegated_single_port"].get("matrix_max_upload_size_mb", 50)) * 1048576
    operator = _join(variant)[0].replace("timeout client  50000", "timeout client  1000")
    operator = operator.replace("/run/haproxy/admin.sock", str(tmp_path / "admin.sock"))
    operator = "\n".join(line for line in operator.splitlines() if not line.strip().startswith(("chroot", "user ", "group ", "daemon", "log /dev/log")))
    (tmp_path / "operator.cfg").write_text(operator + "\n")
    cfg = variant["cfg"].replace(f"int({limit})", "int(1048576)").replace("timeout server 180s", "timeout server 5s")
    (tmp_path / "mxedge-matrix.cfg").write_text(cfg)
    (tmp_path / "upstream.py").write_text(JOINED_UPSTREAM)
    env = dict(os.environ, SCRATCH=str(tmp_path))
    proc = subprocess.run(["unshare", "--net", "--pid", "--fork", "--kill-child", "sh", "-c", JOINED_SCRIPT],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    logs = proc.stderr + (tmp_path / "haproxy.log").read_text()

    def answer(name):
        head = (tmp_path / f"{name}.head").read_text().replace("\r", "")
        final = head.strip().split("\n\n")[-1].split("\n")
        headers = dict(line.split(": ", 1) for line in final[1:] if ": " in line)
        return int(final[0].split()[1]), {k.lower(): v for k, v in headers.items()}, (tmp_path / f"{name}.body").read_bytes()

    for name, host, body in (("site", "example.test", OPERATOR_CFG.parent / "example.html"),
                             ("about", "example.test", OPERATOR_CFG.parent / "about.html"),
                             ("unrelated", "unrelated.test", OPERATOR_CFG.parent / "unrelated.html")):
        status, headers, got = answer(name)
        assert (status, headers.get("x-operator-site"), got) == (200, host, body.read_bytes()), (name, logs)
    facts = variant["facts"]
    status, headers, got = answer("wk_server")
    assert (status, got.decode()) == (200, facts["server_body"]), logs
    assert headers["access-control-allow-origin"] == "*" and "x-operator-site" not in headers
    assert answer("wk_support")[0] == 200
    assert answer("wk_other")[1].get("x-operator-site") == "example.test"   # not a route: the operator's site
    errors = facts["routes"]["errors"]
    for name in ("versions", "versions2"):
        status, headers, got = answer(name)
        seen = json.loads(got)
        assert status == 200 and seen["xff"] == ["10.9.9.9"] and seen["proto"] == "https", (name, seen, logs)
        assert seen["rid"] and seen["rid"] != "forged", seen
    status, headers, got = answer("admin")
    assert (status, got.decode()) == (403, errors["403"]["body"]), logs
    assert answer("poll")[0] == 200, logs
    for name in ("length", "chunked"):
        status, headers, got = answer(name)
        assert (status, got.decode()) == (413, errors["413"]["body"]), (name, logs)


JOINED_SERVICES_SCRIPT = r"""
set -u
ip link set lo up
for port in 8008 8080 8081 7880; do python3 "$SCRATCH/standin.py" "$port" & done
haproxy -db -f "$SCRATCH/operator.cfg" -f "$SCRATCH/mxedge-matrix.cfg" >"$SCRATCH/haproxy.log" 2>&1 &
i=0
while ! grep -q "is UP" "$SCRATCH/haproxy.log" && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
for host in auth.example.test rtc-jwt.example.test sfu.example.test; do
    curl -sk --resolve "$host:443:127.0.0.1" -o /dev/null -w "%{http_code}\n" --max-time 10 "https://$host/x"
done
python3 "$SCRATCH/ws.py" sfu.example.test '/rtc?access_token=t' 3
"""


@pytest.mark.skipif(not all(shutil.which(tool) for tool in ("haproxy", "openssl", "curl", "unshare", "ip")),
                    reason="needs haproxy, openssl, curl, unshare and ip")
def test_haproxy_joined_frontend_tunnels_the_sfu_websocket(alongside, tmp_path):
    """MX14 through the chain: the service hosts reach their stand-ins through the operator's frontend,
    and a WebSocket to the SFU outlives the operator's timeout client and the role's client and server
    timeouts (all lowered to 1 s): both hops become tunnels (be_mxedge_matrix_443 states timeout tunnel)."""
    if subprocess.run(["unshare", "--net", "--pid", "--fork", "true"], capture_output=True, check=False).returncode:
        pytest.skip("unshare --net --pid is not permitted here")
    variant = alongside["joined_services"]
    assert variant["facts"]["join_port"] == 443
    assert "sfu.example.test" in variant["facts"]["join_line"]
    assert "bind 0.0.0.0:8448 ssl crt" in variant["cfg"]   # federation: a port of the role's own
    _install_test_certificate(variant, tmp_path)
    operator = _join(variant)[0].replace("timeout client  50000", "timeout client  1000")
    operator = operator.replace("timeout server  50000", "timeout server  1000")
    operator = operator.replace("/run/haproxy/admin.sock", str(tmp_path / "admin.sock"))
    operator = "\n".join(line for line in operator.splitlines()
                         if not line.strip().startswith(("chroot", "user ", "group ", "daemon", "log /dev/log")))
    (tmp_path / "operator.cfg").write_text(operator + "\n")
    cfg = re.sub(r"(?m)^(\s+timeout (client|server)) \d+s$", r"\1 1s", variant["cfg"])
    (tmp_path / "mxedge-matrix.cfg").write_text(cfg)
    (tmp_path / "standin.py").write_text(SERVICE_STANDIN)
    (tmp_path / "ws.py").write_text(WEBSOCKET_CLIENT)
    proc = subprocess.run(["unshare", "--net", "--pid", "--fork", "--kill-child", "sh", "-c", JOINED_SERVICES_SCRIPT],
                          env=dict(os.environ, SCRATCH=str(tmp_path)), capture_output=True, text=True, timeout=120,
                          check=False)
    logs = proc.stderr + (tmp_path / "haproxy.log").read_text()
    assert proc.stdout.splitlines() == ["200", "200", "200",
                                        "sfu.example.test HTTP/1.1 101 Switching Protocols echoed"], proc.stdout + logs


# Preflight against the scenario's operator config: what stops the run, with which words.
REFUSED_ALONGSIDE = {
    "shared_port_without_consent": (
        {"matrix_well_known_site": "operator"},
        ["needs port 443, which frontend www (", "cannot share a port", "set haproxy_operator_frontend: www",
         "Nothing was changed"],
    ),
    "unknown_frontend": (
        {"haproxy_operator_frontend": "web"},
        ['haproxy_operator_frontend="web": allowed is "" or the name of the one frontend', "that file has www"],
    ),
    "well_known_site_own_on_the_operators_host": (
        {"haproxy_operator_frontend": "www", "matrix_well_known_site": "own"},
        ["already serves example.test on port 443", "matrix_well_known_site=operator"],
    ),
    "matrix_host_is_already_the_operators": (
        {"haproxy_operator_frontend": "www", "matrix_well_known_site": "operator",
         "matrix_homeserver_fqdn": "unrelated.test"},
        ["unrelated.test on port 443 is already a site of the operator's"],
    ),
    "well_known_site_file_elsewhere": (
        {"haproxy_operator_frontend": "www", "matrix_well_known_site": "operator",
         "matrix_well_known_site_file": "/etc/haproxy/sites.cfg"},
        ['matrix_well_known_site_file="/etc/haproxy/sites.cfg"', "haproxy_operator_frontend"],
    ),
}


@pytest.mark.skipif(not (shutil.which("haproxy") and shutil.which("openssl")), reason="needs haproxy and openssl")
@pytest.mark.parametrize("name", REFUSED_ALONGSIDE)
def test_preflight_refuses_alongside_conflicts(tmp_path, name):
    variables, fragments = REFUSED_ALONGSIDE[name]
    operator = _operator_tree(tmp_path / "operator")
    before = operator.read_bytes()
    host = dict(dict(COMMON, **E2E_HS1), matrix_proxy_mode="alongside", haproxy_operator_config=str(operator))
    proc = run_playbook(tmp_path, PREFLIGHT_PLAYBOOK, {name: dict(host, **variables)})
    output = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0, output[-3000:]
    for fragment in fragments:
        assert fragment in output, (fragment, output[-3000:])
    assert operator.read_bytes() == before


# ---------------------------------------------------------------------------
# Synapse workers (MX16): the worker routes and pools of the WORKERS variants.

def _pools(variant):
    return {pool["name"]: pool for pool in variant["facts"]["routes"]["upstreams"]}


def _worker_routes(variant):
    """[(vhost, route)] of the variant's worker routes (regex, MX16), in table order."""
    return [(vhost, route) for vhost in variant["facts"]["routes"]["vhosts"] for route in vhost["routes"]
            if "MX16" in route["behaviours"]]


@pytest.mark.parametrize("name", WORKERS)
def test_worker_routes_match_synapses_patterns_in_table_order(rendered, name):
    """MX16, MX04: each worker route matches the table's alternation on the normalised path (case-sensitive, as
    Synapse does), checks the raw URI against its raw_regex, is chosen in table order before the homeserver's
    /_matrix route, restricted to the class's methods, and forwards to its pool."""
    variant = rendered[name]
    workers = _worker_routes(variant)
    assert workers
    for vhost, route in workers:
        lines = _route_frontend(variant["cfg"], vhost)
        key = f"{vhost['name']}_{route['id']}"
        assert route["match"]["kind"] == "regex" and route["id"].startswith("workers-")
        assert [line for line in lines if line.startswith(f"acl mx_path_{key} ")] == [
            f"acl mx_path_{key} var(txn.mx_path) -m reg {_quoted(route['match']['pattern'])}"]
        assert f"acl mx_raw_{key} pathq -m reg {_quoted(route['match']['raw_regex'])}" in lines
        methods = f" {{ method {' '.join(route['match']['methods'])} }}" if route["match"]["methods"] else ""
        selection = [line for line in lines if line.startswith("http-request set-var(txn.mx_route) ")]
        rule = (f"http-request set-var(txn.mx_route) str({vhost['name']}.{route['id']}) if mx_vhost_{vhost['name']} "
                f"!{{ var(txn.mx_route) -m found }} mx_path_{key}{methods}")
        assert rule in selection, rule
        homeserver = next(i for i, line in enumerate(selection) if f"str({vhost['name']}.api-matrix)" in line
                          or f"str({vhost['name']}.federation-matrix)" in line)
        assert selection.index(rule) < homeserver, key
        assert f"use_backend be_matrix_{route['upstream']} if mx_route_{key}" in lines
        # MX08 the listener's body limit, as for the homeserver's routes.
        assert f"http-request set-var(txn.mx_body_limit) int({route['policy']['body_limit']}) if mx_route_{key}" in lines
        assert route["policy"]["timeout"] == "long_poll"   # timeout server of the defaults covers it
    ordered = [f"str({v['name']}.{r['id']})" for v, r in workers]
    chosen = [line.split()[2] for v in {v["port"]: v for v, _r in workers}.values()
              for line in _route_frontend(variant["cfg"], v) if line.startswith("http-request set-var(txn.mx_route)")]
    assert [rule for rule in chosen if rule in ordered] == ordered


# The sample expressions each sticky key stores in txn.mx_sticky, in order (the first that yields wins).
STICKY_SAMPLES = {
    "user": ["'req.fhdr(Authorization)'", "'url_param(access_token)'"],
    "room": ["'var(txn.mx_path),regsub(\"^/_matrix/client/[^/]+/(?:rooms|join|knock)/([^/]+).*\",\"\\1\")'"],
    "source": ["'src'"],
}


@pytest.mark.parametrize("name", WORKERS)
def test_worker_routes_set_their_sticky_key_and_pools_hash_it(rendered, name):
    """MX16: a sticky route stores its key (user: Authorization, else access_token; room: the regex group on the
    path; source: the address) in txn.mx_sticky; its pool hashes it consistently when it has several workers,
    else balances as the table says. Routes without a key set nothing."""
    variant = rendered[name]
    table = variant["facts"]["routes"]
    assert table["sticky"]["room"]["regex"] == "^/_matrix/client/[^/]+/(?:rooms|join|knock)/([^/]+)"
    assert table["sticky"]["user"] == {"header": "Authorization", "query": "access_token"}
    sections, pools = _sections(variant["cfg"]), _pools(variant)
    sticky_pools = set()
    for vhost, route in _worker_routes(variant):
        key = f"{vhost['name']}_{route['id']}"
        lines = _route_frontend(variant["cfg"], vhost)
        stored = [line for line in lines if line.startswith("http-request set-var(txn.mx_sticky) ") and f" if mx_route_{key}" in line]
        sticky = route["policy"]["sticky"]
        expected = [f"http-request set-var(txn.mx_sticky) {sample} if mx_route_{key}" + ("" if i == 0 else " !{ var(txn.mx_sticky) -m found }")
                    for i, sample in enumerate(STICKY_SAMPLES.get(sticky, []))]
        assert stored == expected, key
        if sticky:
            sticky_pools.add(route["upstream"])
    assert sticky_pools
    for pool in pools.values():
        if not pool["fallback"]:
            continue
        backend = sections[f"backend be_matrix_{pool['name']}"]
        balance = [line for line in backend if line.startswith(("balance ", "hash-type "))]
        if pool["name"] in sticky_pools and len(pool["servers"]) > 1:
            assert balance == ["balance hash var(txn.mx_sticky)", "hash-type consistent sdbm avalanche"], pool["name"]
        else:
            assert balance == [f"balance {pool['balance']}"], pool["name"]
            assert pool["balance"] == ("first" if len(pool["servers"]) == 1 else "roundrobin")


@pytest.mark.parametrize("name", WORKERS)
def test_worker_pools_are_health_checked_and_fall_back_to_the_main_process(rendered, name):
    """MX16, MX07: every worker is checked on /health and marked down at its first refused connection
    (the request is redispatched); the main process is the backup server of every worker pool, its
    state that of the homeserver pool's own checks (track)."""
    variant = rendered[name]
    sections, pools = _sections(variant["cfg"]), _pools(variant)
    main = pools["homeserver"]["servers"][0]
    workers = [pool for pool in pools.values() if pool["fallback"]]
    assert workers and all(pool["fallback"] == "homeserver" and pool["name"].startswith("workers_") for pool in workers)
    for pool in workers:
        backend = sections[f"backend be_matrix_{pool['name']}"]
        assert "option httpchk" in backend and "option redispatch 1" in backend
        assert f"http-check send meth GET uri {pool['health_path']} ver HTTP/1.1 hdr Host " in " ".join(backend) + " "
        servers = [line for line in backend if line.startswith("server ")]
        assert servers == [
            f"server {s['name']} {s['endpoint']} check inter 5s fastinter 1s downinter 2s fall 3 rise 1 "
            "observe layer4 error-limit 1 on-error mark-down" for s in pool["servers"]
        ] + [f"server homeserver_{main['name']} {main['endpoint']} backup track be_matrix_homeserver/{main['name']}"]
    # The homeserver's own pool: no backup, no observe (nothing to fail over to).
    assert not any("backup" in line or "observe" in line for line in sections["backend be_matrix_homeserver"])


def test_workers_are_routed_on_the_federation_listener_too(rendered):
    """MX16, MX02: the federation classes are routes of the federation listener (8448), or of the client
    listener when federation shares its port; media is on both."""
    readers = _frontends(rendered["workers_readers"]["cfg"])
    assert "use_backend be_matrix_workers_federation_inbound if mx_route_federation_workers-federation-inbound" in readers[8448]
    assert "use_backend be_matrix_workers_federation_reader if mx_route_federation_workers-federation-reader" in readers[8448]
    assert not any("workers_sync" in line for line in readers[8448])
    single = _frontends(rendered["workers_one_of_each"]["cfg"])
    assert list(single) == [443]
    for pool in ("federation_inbound", "federation_reader", "media", "sync", "typing"):
        assert any(line.startswith(f"use_backend be_matrix_workers_{pool} if mx_route_client_workers-") for line in single[443]), pool


def test_capabilities_cover_what_the_worker_variants_ask_for(rendered):
    """The role's _haproxy_capabilities claim what the template renders (proxy_common's preflight let the
    worker variants through, so the render fixture would have failed otherwise)."""
    import yaml  # pylint: disable=import-outside-toplevel

    caps = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["_haproxy_capabilities"]
    assert caps["regex"] is True and caps["fallback"] is True and caps["pool_servers"] == 0
    assert sorted(caps["sticky"]) == ["room", "source", "user"] and sorted(caps["balance"]) == ["first", "roundrobin"]
    asked = {r["policy"]["sticky"] for name in WORKERS for _v, r in _worker_routes(rendered[name])} - {None}
    assert asked == {"user", "room", "source"}


# A stand-in for the main process or one worker: `standin.py NAME ADDRESS PORT RECORD`. Answers
# {"name": NAME}; appends one JSON line per request to RECORD (its name, method, path as
# received, the headers the contract cares about). Health checks (/health) are not recorded.
WORKER_STANDIN = r"""
import http.server, json, sys
name, address, port, record = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
class Standin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path != "/health":
            with open(record, "a") as log:
                log.write(json.dumps({"name": name, "method": self.command, "path": self.path,
                                      "xff": self.headers.get_all("X-Forwarded-For"),
                                      "rid": self.headers.get("X-Request-ID"), "host": self.headers.get("Host")}) + "\n")
        body = json.dumps({"name": name}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_POST = do_PUT = do_GET
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer((address, port), Standin).serve_forever()
"""

# Runs as PID 1 of a network and PID namespace of its own (everything it starts dies with it):
# loopback with the worker hosts' and the clients' addresses, the stand-ins of plan.json, HAProxy;
# then the requests of the live test. Prints one JSON document: what answered each request.
WORKERS_DRIVER = r"""
import http.client, json, os, socket, ssl, subprocess, sys, time
scratch = os.environ["SCRATCH"]
plan = json.load(open(os.path.join(scratch, "plan.json")))
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
for address in plan["addresses"]:
    subprocess.run(["ip", "addr", "add", address + "/32", "dev", "lo"], check=True)
def until(test, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if test():
            return True
        time.sleep(0.2)
    return False
standins = {}
def start(server):
    standins[server["name"]] = subprocess.Popen([sys.executable, os.path.join(scratch, "standin.py"), server["name"],
                                                 server["address"], str(server["port"]), os.path.join(scratch, "record.jsonl")],
                                                stderr=subprocess.DEVNULL)
def listening(server):
    try:
        socket.create_connection((server["address"], server["port"]), timeout=1).close()
        return True
    except OSError:
        return False
def stop(name):
    standins[name].kill()
    standins[name].wait()
for server in plan["servers"]:
    start(server)
# Every stand-in listening before HAProxy starts: a server's first failed check marks it down.
until(lambda: all(listening(server) for server in plan["servers"]), 10)
log = open(os.path.join(scratch, "haproxy.log"), "w")
haproxy = subprocess.Popen(["haproxy", "-db", "-f", os.path.join(scratch, "haproxy.cfg")], stdout=log, stderr=subprocess.STDOUT)
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
def ask(path, port=443, source="127.0.0.1", method="GET", headers=None, body=None):
    try:
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, source_address=(source, 0), timeout=10)
        connection.request(method, path, body=body, headers=dict({"Host": plan["fqdn"]}, **(headers or {})))
        response = connection.getresponse()
        data = response.read().decode()
        connection.close()
    except OSError as error:
        return [0, str(error)]
    try:
        return [response.status, json.loads(data).get("name") or data]
    except ValueError:
        return [response.status, data]
def sync(token):
    return ask("/_matrix/client/v3/sync?timeout=0", headers={"Authorization": "Bearer " + token})
result = {"ready": until(lambda: ask("/_matrix/client/versions")[0] == 200)}
tokens = ["syt_user%d_token" % n for n in range(12)]
rooms = ["!room%d:example.test" % n for n in range(12)]
sources = plan["clients"]
result["sync"] = {t: [sync(t) for _n in range(3)] for t in tokens}
result["sync_query"] = {t: [ask("/_matrix/client/v3/sync?access_token=" + t) for _n in range(3)] for t in tokens}
result["send"] = {r: [ask("/_matrix/client/v3/rooms/%s/send/m.room.message/txn%d" % (r, n), method="PUT", body=b"{}")
                      for n in range(3)] for r in rooms}
result["messages"] = {r: [ask("/_matrix/client/v3/rooms/%s/messages?dir=b&from=%d" % (r, n)) for n in range(3)] for r in rooms}
result["inbound"] = {s: [ask("/_matrix/federation/v1/send/txn%d" % n, port=8448, source=s, method="PUT", body=b"{}")
                         for n in range(3)] for s in sources}
result["reader"] = [ask("/_matrix/client/versions") for _n in range(6)]
result["main"] = [ask(path) for path in plan["main_paths"]] + [ask("/_matrix/federation/v1/version", port=8448)]
result["raw"] = ask("/_matrix/client/v3//sync")
result["too_large"] = ask("/_matrix/client/v3/rooms/!big:example.test/send/m.room.message/t", method="PUT",
                          body=b"x" * 2000000)
result["forged"] = sync("forged")
result["forged_xff"] = ask("/_matrix/client/v3/sync", headers={"X-Forwarded-For": "6.6.6.6", "X-Request-ID": "forged",
                                                              "Authorization": "Bearer forged"})
with open(os.path.join(scratch, "record.jsonl")) as records:
    result["record_before"] = [json.loads(line) for line in records]
# Every sync worker stopped: the main process answers /sync; one back: the pool again.
for name in plan["sync_workers"]:
    stop(name)
start_down = time.monotonic()
result["fallback_reached"] = until(lambda: sync(tokens[0])[1] == "main")
result["fallback_seconds"] = time.monotonic() - start_down
result["fallback"] = [sync(t) for t in tokens]
start(next(s for s in plan["servers"] if s["name"] == plan["sync_workers"][-1]))
start_up = time.monotonic()
result["back_reached"] = until(lambda: sync(tokens[0])[1] != "main")
result["back_seconds"] = time.monotonic() - start_up
result["back"] = [sync(t) for t in tokens]
haproxy.kill()
print(json.dumps(result))
"""


def _live_plan(variant):
    """What the driver starts and asks: every server of the table's pools on its address, the clients' addresses."""
    pools = _pools(variant)
    servers = {s["name"]: {"name": s["name"], "address": s["address"], "port": s["port"]} for pool in pools.values()
               if pool["name"] == "homeserver" or pool["fallback"] for s in pool["servers"]}
    servers = [servers[name] for name in sorted(servers)]
    clients = [f"10.9.9.{n}" for n in range(1, 9)]
    return {
        "fqdn": VARIANTS["workers_live"]["matrix_homeserver_fqdn"],
        "servers": servers,
        "addresses": sorted({s["address"] for s in servers} - {"127.0.0.1"}) + clients,
        "clients": clients,
        "sync_workers": [s["name"] for s in pools["workers_sync"]["servers"]],
        # Client endpoints no worker of this deployment serves (receipts have no writer; keys).
        "main_paths": ["/_matrix/client/v3/rooms/!room1:example.test/read_markers", "/_matrix/key/v2/server"],
    }


@pytest.mark.skipif(not all(shutil.which(tool) for tool in ("haproxy", "openssl", "unshare", "ip")),
                    reason="needs haproxy, openssl, unshare and ip")
def test_haproxy_routes_worker_classes_sticks_and_falls_back_live(rendered, tmp_path):
    """MX16, MX04, MX05, MX08 live: a real HAProxy on the "workers_live" configuration (body limit lowered to
    1 MiB), stand-ins for the main process and two workers per pool. Each class reaches its pool; one
    access token (header or query) always the same sync worker while tokens spread; one room always the
    same worker; one remote address always the same inbound federation worker; with every sync worker
    stopped the main process answers, and the pool again once one is back; the main process sees none of
    the routed classes while the pools are up."""
    if subprocess.run(["unshare", "--net", "--pid", "--fork", "true"], capture_output=True, check=False).returncode:
        pytest.skip("unshare --net --pid is not permitted here")
    variant = rendered["workers_live"]
    _install_test_certificate(variant, tmp_path)
    cfg = variant["cfg"].replace("/run/haproxy/admin.sock", str(tmp_path / "admin.sock"))
    assert "int(52428800)" in cfg
    (tmp_path / "haproxy.cfg").write_text(cfg.replace("int(52428800)", "int(1048576)"))
    (tmp_path / "standin.py").write_text(WORKER_STANDIN)
    (tmp_path / "driver.py").write_text(WORKERS_DRIVER)
    plan = _live_plan(variant)
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    proc = subprocess.run(["unshare", "--net", "--pid", "--fork", "--kill-child", sys.executable, str(tmp_path / "driver.py")],
                          env=dict(os.environ, SCRATCH=str(tmp_path)), capture_output=True, text=True, timeout=180,
                          check=False)
    daemon_checks.record(f"HAProxy {daemon_checks.host_version('haproxy')} (this machine): "
                         "worker pools, stickiness and fallback answering (unshare --net --pid)")
    logs = proc.stderr[-3000:] + (tmp_path / "haproxy.log").read_text()[-3000:]
    assert proc.returncode == 0 and proc.stdout.strip(), logs
    result = json.loads(proc.stdout)
    assert result["ready"], logs
    pools = _pools(variant)

    def workers(pool):
        return {s["name"] for s in pools[pool]["servers"]}

    for key, pool in (("sync", "workers_sync"), ("sync_query", "workers_sync"), ("send", "workers_event_creation"),
                      ("messages", "workers_room_messages"), ("inbound", "workers_federation_inbound")):
        answered = {item: {name for status, name in answers if status == 200} for item, answers in result[key].items()}
        assert all(len(answers) == 3 and all(a[0] == 200 for a in answers) for answers in result[key].values()), (key, result[key])
        # The same key: always the same worker of the pool; different keys: both workers.
        assert all(len(names) == 1 for names in answered.values()), (key, answered)
        assert set().union(*answered.values()) == workers(pool), (key, answered)
    assert {name for status, name in result["reader"] if status == 200} == workers("workers_client_reader")
    assert all(status == 200 for status, _name in result["reader"])
    assert result["main"] == [[200, "main"]] * len(result["main"]), result["main"]
    errors = variant["facts"]["routes"]["errors"]
    assert result["raw"] == [404, errors["404"]["body"]]
    assert result["too_large"] == [413, errors["413"]["body"]]
    # MX05 on a worker: X-Forwarded-For overwritten, the proxy's own request ID, the Host as sent.
    forged = [r for r in result["record_before"] if r["path"] == "/_matrix/client/v3/sync"]
    assert len(forged) == 1 and forged[0]["name"] == result["forged"][1], forged
    assert forged[0]["xff"] == ["127.0.0.1"] and forged[0]["rid"] and forged[0]["rid"] != "forged"
    assert forged[0]["host"] == plan["fqdn"]
    # The main process got only what no worker serves, while the pools were up.
    main_paths = sorted(r["path"] for r in result["record_before"] if r["name"] == "main")
    assert main_paths == sorted(plan["main_paths"] + ["/_matrix/federation/v1/version"]), main_paths
    # Every sync worker down: the main process answers every token; one back: the pool answers them all.
    assert result["fallback_reached"] and result["fallback"] == [[200, "main"]] * 12, (result["fallback"], logs)
    back = plan["sync_workers"][-1]
    assert result["back_reached"] and result["back"] == [[200, back]] * 12, (result["back"], logs)
    assert result["back_seconds"] < 10, result["back_seconds"]
