"""Render mxedge.matrix.relayd's templates for several variable sets and check
the result with a parser of relayd.conf(5) and an evaluator of its filter rules.

relayd runs only on OpenBSD, so nothing here starts relayd or httpd: these
tests prove what the role writes, not what relayd does with it (see
docs/relayd.md, "What was not exercised"). The derived _matrix_* facts come from
the real mxedge.matrix.matrix role, run by ansible-playbook on localhost; only
_matrix_ipv6 (a property of the host) is set per case. The templates are
rendered by the template module, as the role renders them.
"""

from __future__ import annotations

import ipaddress
import json
import random
import urllib.parse

import pytest
import yaml

import relayd_conf_parser as rc
from relayd_harness import ROLE, ansible_playbook, run_playbook
from render import SERVICE_VARIABLES

pytestmark = pytest.mark.skipif(ansible_playbook() is None, reason="ansible-playbook is not installed")

MOZILLA_INTERMEDIATE_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)

EXTRA_GLOBAL = 'table <mxedge_extra> { "192.0.2.99" }'
EXTRA_CLIENT_PROTOCOL = (
    'block request quick path "/_matrix/client/*/register*" label "registration closed"\n'
    'pass request quick path "/extra/*" forward to <mxedge_extra>'
)
EXTRA_CLIENT_RELAY = "forward to <mxedge_extra> port 80 check tcp"
EXTRA_FEDERATION_PROTOCOL = 'block request quick path "/_matrix/federation/v1/query/*" label "no directory queries"'
EXTRA_FEDERATION_RELAY = "session timeout 900"

# Every case: the variables given to the roles. case_ipv6 stands for the
# host's IPv6 (the matrix role derives _matrix_ipv6 from the machine).
CASES = {
    # The test topology's hs1 (docs/contract.md): single port 443, delegated from example.test.
    "single_port_delegated": {
        "matrix_server_name": "example.test",
        "matrix_homeserver_fqdn": "matrix.example.test",
        "matrix_federation_port": 443,
        "case_ipv6": True,
    },
    # The test topology's hs2 (docs/contract.md): federation on 8448, server_name is the host (no separate well-known host).
    "separate_federation": {
        "matrix_server_name": "other.test",
        "case_ipv6": False,
    },
    # Admin allow-list (IPv4 and IPv6), Palpo, remote homeserver, bigger uploads.
    "admin_allow_list_palpo": {
        "matrix_server_name": "example.org",
        "matrix_homeserver_fqdn": "matrix.example.org",
        "matrix_homeserver_flavour": "palpo",
        "matrix_homeserver_address": "192.0.2.10",
        "matrix_homeserver_port": 8080,
        "matrix_max_upload_size_mb": 100,
        "matrix_admin_allowed_networks": ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"],
        "case_ipv6": True,
    },
    # server_name is the host, but clients use 8443: the well-known needs a 443 relay of its own.
    "client_port_8443": {
        "matrix_server_name": "example.net",
        "matrix_client_port": 8443,
        "matrix_federation_port": 8448,
        "case_ipv6": False,
    },
    # Federation on 443, clients on 8443, delegated: the well-known host shares the federation relay.
    "federation_on_443": {
        "matrix_server_name": "example.com",
        "matrix_homeserver_fqdn": "matrix.example.com",
        "matrix_client_port": 8443,
        "matrix_federation_port": 443,
        "case_ipv6": False,
    },
    # No well-known, TCP health checks, no body limit, IPv6 homeserver in brackets.
    "well_known_off": {
        "matrix_server_name": "example.edu",
        "matrix_homeserver_fqdn": "hs.example.edu",
        "matrix_federation_port": 443,
        "matrix_well_known_serve": False,
        "matrix_homeserver_address": "[::1]",
        "relayd_health_check": "tcp",
        "relayd_body_limit_enforce": False,
        "case_ipv6": True,
    },
    # Every extra variable.
    "extras": {
        "matrix_server_name": "extra.test",
        "relayd_global_extra": EXTRA_GLOBAL,
        "relayd_client_protocol_extra": EXTRA_CLIENT_PROTOCOL,
        "relayd_client_relay_extra": EXTRA_CLIENT_RELAY,
        "relayd_federation_protocol_extra": EXTRA_FEDERATION_PROTOCOL,
        "relayd_federation_relay_extra": EXTRA_FEDERATION_RELAY,
        "relayd_prefork": 8,
        "relayd_session_timeout": 3600,
        "relayd_request_id_value": "$SERVER_ADDR-$REMOTE_ADDR-$REMOTE_PORT",
        "case_ipv6": False,
    },
    # MX13 MX14: MAS and both MatrixRTC services on host names of their own, all on 443 (the client's
    # relay). The upstreams are IP literals because table hosts are resolved when relayd loads its
    # configuration ("relayd -n" fails on a name it cannot resolve).
    "services": dict(SERVICE_VARIABLES, matrix_rtc_jwt_upstream="http://127.0.0.2:8081", case_ipv6=True),
    # The same with the SFU on a port of its own: its relay alone allows WebSockets and idles long.
    "services_sfu_port": dict(SERVICE_VARIABLES, matrix_rtc_jwt_upstream="http://127.0.0.2:8081",
                              matrix_rtc_sfu_url="https://sfu.example.test:7443/", relayd_tunnel_timeout=7200,
                              case_ipv6=False),
}

DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())


def var(case, name):
    """A variable of a case, or the shared default (roles/matrix) or relayd default."""
    shared = {
        "matrix_client_port": 443, "matrix_federation_port": 8448, "matrix_well_known_serve": True,
        "matrix_homeserver_flavour": "synapse", "matrix_homeserver_address": "127.0.0.1",
        "matrix_homeserver_port": 8008, "matrix_max_upload_size_mb": 50, "matrix_admin_allowed_networks": [],
        "matrix_request_id_header": "X-Request-ID", "matrix_mas_url": "", "matrix_rtc_jwt_url": "",
        "matrix_rtc_sfu_url": "",
    }
    values = CASES[case]
    if name in values:
        return values[name]
    if name == "matrix_homeserver_fqdn":
        return values["matrix_server_name"]
    if name in shared:
        return shared[name]
    return DEFAULTS[name]


# --------------------------------------------------------------------------
# What each case should produce, worked out from the variables alone.
# --------------------------------------------------------------------------


def expected(case):
    client = var(case, "matrix_client_port")
    federation = var(case, "matrix_federation_port")
    separate = federation != client
    sn_host = var(case, "matrix_server_name").split(":")[0]
    fqdn = var(case, "matrix_homeserver_fqdn")
    if not var(case, "matrix_well_known_serve"):
        placement = "none"
    elif sn_host != fqdn:
        placement = "separate"
    elif client == 443:
        placement = "client"
    elif separate and federation == 443:
        placement = "federation"
    else:
        placement = "separate"
    relays = {"mxedge_client": client}
    if separate:
        relays["mxedge_federation"] = federation
    for name in ("mas", "rtc_jwt", "rtc_sfu"):
        url = CASES[case].get(f"matrix_{name}_url")
        port = url and (urllib.parse.urlsplit(url).port or 443)
        if port and port not in relays.values():
            relays[f"mxedge_{name}"] = port
    if placement == "separate" and 443 not in relays.values():
        relays["mxedge_well_known"] = 443
    flavour = var(case, "matrix_homeserver_flavour")
    return {
        "relays": relays,
        "separate": separate,
        "placement": placement,
        "server_name_host": sn_host,
        "fqdn": fqdn,
        "client_prefixes": ["/_matrix", f"/_{flavour}/client"],
        "admin_prefix": f"/_{flavour}/admin",
        "namespace": f"/_{flavour}/",
        "limit": var(case, "matrix_max_upload_size_mb") * 1048576,
        # The relay and the Host that answers /.well-known/matrix/*.
        "well_known_port": {"none": None, "client": client, "federation": federation, "separate": 443}[placement],
    }


# --------------------------------------------------------------------------
# Rendering (one ansible-playbook run for every case)
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    base = tmp_path_factory.mktemp("relayd-render")
    hosts = {}
    for case, values in CASES.items():
        hostvars = dict(values)
        hostvars.update({
            "case_out": str(base / "out" / case),
            "matrix_tls_certificate": "/etc/ssl/mxedge-test.crt",
            "matrix_tls_certificate_key": "/etc/ssl/private/mxedge-test.key",
        })
        hosts[case] = hostvars
    facts = {
        "server_name_host": "{{ _matrix_server_name_host }}",
        "federation_separate": "{{ _matrix_federation_separate }}",
        "well_known_server_body": "{{ _matrix_well_known_server_body }}",
        "well_known_client_body": "{{ _matrix_well_known_client_body }}",
        "client_path_prefixes": "{{ _matrix_client_path_prefixes }}",
        "admin_path_prefixes": "{{ _matrix_admin_path_prefixes }}",
        "max_body_bytes": "{{ _matrix_max_body_bytes }}",
        "placement": "{{ _matrix_well_known_placement }}",
        "ports": "{{ _matrix_tls_ports }}",
        "routes": "{{ _matrix_routes }}",
    }
    plays = [{
        "name": "Render mxedge.matrix.relayd for every case",
        "hosts": "all",
        "gather_facts": True, "gather_subset": ["min", "network"],
        # Role defaults sit below the cases' host variables (as in the role); role vars above.
        "vars_files": [str(ROLE / "vars" / "main.yml")],
        "roles": ["mxedge.matrix.matrix"],
        "tasks": [
            {"name": "Take the case's IPv6 answer", "ansible.builtin.set_fact": {"_matrix_ipv6": "{{ case_ipv6 | bool }}"}},
            {"name": "Create the output directory",
             "ansible.builtin.file": {"path": "{{ case_out }}", "state": "directory", "mode": "0755"}},
            {"name": "Render the role's templates",
             "ansible.builtin.template": {"src": str(ROLE / "templates") + "/{{ item }}.j2",
                                          "dest": "{{ case_out }}/{{ item }}", "mode": "0644"},
             "loop": ["relayd.conf", "httpd.conf", "login.conf.d-relayd"]},
            {"name": "Save the derived values",
             "ansible.builtin.copy": {"content": "{{ __facts | to_json }}", "dest": "{{ case_out }}/facts.json",
                                      "mode": "0644"},
             "vars": {"__facts": facts}},
        ],
    }]
    rc_, result, stderr = run_playbook(base, plays, hosts, group_vars=DEFAULTS)
    assert rc_ == 0, json.dumps(result.get("stats"), indent=1) + stderr
    out = {}
    for case in CASES:
        directory = base / "out" / case
        text = (directory / "relayd.conf").read_text()
        out[case] = {
            "text": text,
            "config": rc.parse(text),
            "httpd_text": (directory / "httpd.conf").read_text(),
            "httpd": rc.parse_blocks((directory / "httpd.conf").read_text()),
            "login_class": (directory / "login.conf.d-relayd").read_text(),
            "facts": json.loads((directory / "facts.json").read_text()),
        }
    return out


def request(case, path, host=None, source="198.51.100.7", headers=(), method="GET", port=None):
    exp = expected(case)
    return rc.Request(path=path, method=method, headers=[("Host", host or exp["fqdn"])] + list(headers), source=source,
                      relay_port=port or 443)


def run(rendered_case, port, req, **kwargs):
    cfg = rendered_case["config"]
    return rc.evaluate(cfg, cfg.relay_for_port(port), req, **kwargs)


ALL = pytest.mark.parametrize("case", list(CASES))


def httpd_answer(tree, host, path):
    """httpd(8)'s answer: the server whose name matches Host (fnmatch, case-folded, port dropped;
    the first server otherwise), then its first matching location."""
    servers = tree.find("server")
    name = (host or "").rsplit(":", 1)[0] if (host or "").count(":") == 1 else (host or "")
    server = next((s for s in servers if rc.relayd_fnmatch(s.words[1], name, casefold=True)), servers[0])
    return httpd_route(server, path)


def answer(rendered_case, port, out):
    """What the client gets for a request whose relayd outcome is ``out``:
    ("upstream", table), ("relayd", status) for relayd's own refusal page,
    ("error", status) for a Matrix JSON error from httpd with the headers relayd adds (MX11),
    or ("file", path, content type, cors) for a static document."""
    if out.action == "block":
        return ("relayd", out.status)
    if out.table != "mxedge_httpd":
        return ("upstream", out.table)
    result = httpd_answer(rendered_case["httpd"], out.headers.get("Host"), out.path)
    cfg = rendered_case["config"]
    content_type = result[2] if result[0] == "file" else "text/html"  # httpd's errors are text/html
    response = rc.evaluate(cfg, cfg.relay_for_port(port), rc.Request(path="/"), session_tag=out.tag,
                           direction="response", response_headers=[("Content-Type", content_type)])
    cors = response.headers.get_all("Access-Control-Allow-Origin") == ["*"]
    if result[0] == "status":
        status = result[1]
        table_errors = rendered_case["facts"]["routes"]["errors"]
        assert response.headers.get_all("Content-Type") == ["application/json"], (status, out)
        assert cors, (status, out)
        assert str(status) in table_errors
        return ("error", status)
    return ("file", result[1], response.headers.get("Content-Type"), cors)


def outcome(rendered_case, port, req):
    return answer(rendered_case, port, run(rendered_case, port, req))


# --------------------------------------------------------------------------
# Structure
# --------------------------------------------------------------------------


@ALL
def test_every_file_starts_with_the_managed_comment(rendered, case):
    for key in ("text", "httpd_text", "login_class"):
        assert rendered[case][key].startswith("#\n# Ansible managed\n#\n"), key


@ALL
def test_the_real_matrix_role_derived_what_the_contract_says(rendered, case):
    facts = rendered[case]["facts"]
    exp = expected(case)
    assert facts["server_name_host"] == exp["server_name_host"]
    assert facts["placement"] == exp["placement"]
    assert sorted(facts["ports"]) == sorted(set(exp["relays"].values()) | ({443} if exp["placement"] == "separate" else set()))
    assert facts["admin_path_prefixes"] == [exp["admin_prefix"]]
    assert facts["client_path_prefixes"] == exp["client_prefixes"]
    assert int(facts["max_body_bytes"]) == exp["limit"]
    # The bodies are the collection filters' canonical JSON (sorted keys, no spaces).
    server = json.dumps({"m.server": f"{exp['fqdn']}:{var(case, 'matrix_federation_port')}"},
                        sort_keys=True, separators=(",", ":"))
    assert facts["well_known_server_body"] == server
    client = json.loads(facts["well_known_client_body"])
    port = var(case, "matrix_client_port")
    assert client["m.homeserver"]["base_url"] == f"https://{exp['fqdn']}{'' if port == 443 else f':{port}'}/"


@ALL
def test_one_tls_relay_per_public_port(rendered, case):
    cfg = rendered[case]["config"]
    exp = expected(case)
    assert {name: relay.listens[0].port for name, relay in cfg.relays.items()} == exp["relays"]
    want_addresses = ["0.0.0.0"] + (["::"] if var(case, "case_ipv6") else [])
    for relay in cfg.relays.values():
        assert [listen.address for listen in relay.listens] == want_addresses
        assert all(listen.tls for listen in relay.listens)
        assert len({listen.port for listen in relay.listens}) == 1
        assert relay.protocol == relay.name
        assert relay.session_timeout >= 180


def _vhosts_of(rendered_case, relay_name):
    """The route table's TLS vhosts a relay (by name) serves: those on its port."""
    port = rendered_case["config"].relays[relay_name].listens[0].port
    return [v for v in rendered_case["facts"]["routes"]["vhosts"] if v["tls"] and v["port"] == port]


@ALL
def test_tls_is_mozilla_intermediate(rendered, case):
    cfg = rendered[case]["config"]
    for proto in cfg.protocols.values():
        assert proto.type == "http"
        assert proto.return_error
        assert proto.keypairs == [expected(case)["fqdn"]]
        assert proto.tls_flags == {"tlsv1.2", "tlsv1.3", "cipher-server-preference"}
        assert proto.tls_ciphers == MOZILLA_INTERMEDIATE_CIPHERS
        assert proto.tls_ecdhe == "X25519,P-256,P-384"
        assert proto.tls_session_tickets is False
        assert proto.tcp == {"nodelay": True, "backlog": 512}
        tunnel = any(r["policy"]["timeout"] == "tunnel" for v in _vhosts_of(rendered[case], proto.name)
                     for r in v["routes"] if r["action"] == "forward")
        assert proto.http == ({"headerlen": 32768, "websockets": True} if tunnel else {"headerlen": 32768})


@ALL
def test_tables_and_forwarding(rendered, case):
    cfg = rendered[case]["config"]
    address = var(case, "matrix_homeserver_address").strip("[]")
    assert cfg.tables["mxedge_homeserver"].hosts == [address]
    assert cfg.tables["mxedge_httpd"].hosts == ["127.0.0.1"]
    check = ("http", "/health", None, "code", 200) if var(case, "relayd_health_check") == "http" else ("tcp",)
    for relay in cfg.relays.values():
        tables = [(f.table, f.port) for f in relay.forwards if f.table != "mxedge_extra"]
        # The httpd instance first: it takes every request no rule sends elsewhere (404 there).
        assert tables[0] == ("mxedge_httpd", 8089)
        assert relay.forwards[0].options["check"] == ("tcp",)
        if relay.name == "mxedge_well_known":
            assert tables == [("mxedge_httpd", 8089)]
        elif relay.name in SERVICE_RELAYS:
            assert tables == [("mxedge_httpd", 8089), SERVICE_RELAYS[relay.name]]
        else:
            assert tables[1] == ("mxedge_homeserver", var(case, "matrix_homeserver_port"))
            assert relay.forwards[1].options["check"] == check


@ALL
def test_global_options(rendered, case):
    cfg = rendered[case]["config"]
    assert cfg.globals["prefork"] == var(case, "relayd_prefork")
    assert cfg.globals["interval"] == 10
    assert cfg.globals["timeout"] == 1000
    assert cfg.globals["log"] == ["state changes", "connection errors"]


def test_the_login_class_raises_open_files(rendered):
    text = rendered["single_port_delegated"]["login_class"]
    body = [line for line in text.splitlines() if not line.startswith("#")]
    assert body == ["relayd:\\", "\t:openfiles=16384:\\", "\t:tc=daemon:"]


# --------------------------------------------------------------------------
# Behaviour: requests through the rules
# --------------------------------------------------------------------------


@ALL
def test_client_api_goes_to_the_homeserver_unchanged(rendered, case):
    exp = expected(case)
    port = var(case, "matrix_client_port")
    paths = [
        "/_matrix/client/versions",
        "/_matrix/client/v3/rooms/%21room%3Aexample.test/state/m.room.name/%2Fslash%2F",
        "/_matrix/client/v3/directory/room/%23alias%3Aexample.test",
        "/_matrix/media/v3/download/example.test//double",
        exp["client_prefixes"][1] + "/sso_redirect",
        "/health",
    ]
    for path in paths:
        out = run(rendered[case], port, request(case, path, port=port))
        assert (out.action, out.table) == ("pass", "mxedge_homeserver"), path
        assert out.path == path  # relayd forwards the raw path; no rule rewrites it


@ALL
def test_forwarded_headers_overwrite_what_the_client_sent(rendered, case):
    port = var(case, "matrix_client_port")
    forged = [("X-Forwarded-For", "6.6.6.6"), ("x-forwarded-for", "7.7.7.7, 8.8.8.8"),
              ("X-Forwarded-Proto", "http"), ("X-Request-ID", "client-chosen")]
    for source in ("203.0.113.5", "2001:db8:1::5"):
        out = run(rendered[case], port, request(case, "/_matrix/client/versions", source=source, headers=forged, port=port))
        assert out.headers.get_all("X-Forwarded-For") == [source]
        assert out.headers.get_all("X-Forwarded-Proto") == ["https"]
        want_id = var(case, "relayd_request_id_value").replace("$SERVER_ADDR", "0.0.0.0")
        want_id = want_id.replace("$REMOTE_ADDR", source).replace("$REMOTE_PORT", "50000")
        assert out.headers.get_all("X-Request-ID") == [want_id]
        assert out.headers.get("Host") == expected(case)["fqdn"]


@ALL
def test_admin_api_is_refused_except_from_the_allow_list(rendered, case):
    exp = expected(case)
    port = var(case, "matrix_client_port")
    path = exp["admin_prefix"] + "/v1/server_version"
    assert outcome(rendered[case], port, request(case, path, source="203.0.113.9", port=port)) == ("error", 403)
    networks = var(case, "matrix_admin_allowed_networks")
    for network in networks:
        inside = str(next(iter(ipaddress.ip_network(network).hosts()), ipaddress.ip_network(network).network_address))
        out = run(rendered[case], port, request(case, path, source=inside, port=port))
        assert (out.action, out.table) == ("pass", "mxedge_homeserver"), network
        assert out.headers.get_all("X-Forwarded-For") == [inside]
    if networks:
        for outside in ("11.0.0.1", "192.0.2.8", "2001:db9::1"):
            assert outcome(rendered[case], port, request(case, path, source=outside, port=port)) == ("error", 403), outside


def _bypass_spellings(exp):
    ns = exp["namespace"]  # "/_synapse/"
    name = ns.strip("/")  # "_synapse"
    admin = exp["admin_prefix"]
    return [
        # percent-encoded letters of the admin prefix
        ns + "%61dmin/v1/server_version",
        ns + "adm%69n/v1/server_version",
        ns + "%41DMIN/v1/server_version",
        # percent-encoded namespace
        "/%5F" + name[1:] + "/admin/v1/server_version",
        "/" + name[:2] + "%" + format(ord(name[2]), "02x") + name[3:] + "/admin/v1/x",
        "/" + name + "%2Fadmin/v1/x",
        # dot segments, plain and encoded, upper and lower case
        "/_matrix/../" + admin[1:] + "/v1/server_version",
        "/_matrix/%2e%2e/" + admin[1:] + "/v1/server_version",
        "/_matrix/%2E%2E/" + admin[1:] + "/v1/server_version",
        "/_matrix/.%2e/" + admin[1:] + "/v1/server_version",
        "/_matrix/%2e./" + admin[1:] + "/v1/server_version",
        "/_matrix/./../" + admin[1:],
        ns + "client/../admin/v1/x",
        ns + "client/%2e%2e/admin/v1/x",
        "/_matrix/client/..",
        "/_matrix/client/%2E",
    ]


@ALL
def test_encoded_and_dot_segment_variants_are_refused(rendered, case):
    exp = expected(case)
    port = var(case, "matrix_client_port")
    allowed = var(case, "matrix_admin_allowed_networks")
    sources = ["203.0.113.9"] + [str(ipaddress.ip_network(n).network_address + 1) for n in allowed]
    for path in _bypass_spellings(exp):
        for source in sources:
            assert outcome(rendered[case], port, request(case, path, source=source, port=port)) == ("error", 403), \
                (path, source)


@ALL
def test_the_rest_of_the_homeserver_namespace_is_refused_and_other_paths_get_404(rendered, case):
    exp = expected(case)
    port = var(case, "matrix_client_port")
    for path in (exp["namespace"] + "metrics", exp["namespace"] + "clientX"):
        assert outcome(rendered[case], port, request(case, path, port=port)) == ("error", 403), path
    # Everything else is the listener's fallback: 404 M_UNRECOGNIZED from httpd's default server.
    for path in ("/", "/index.html", "/_matrixx", "//_synapse/admin/v1/x", "https://evil/_synapse/admin"):
        assert outcome(rendered[case], port, request(case, path, port=port)) == ("error", 404), path


@ALL
def test_body_limit_by_content_length(rendered, case):
    exp = expected(case)
    port = var(case, "matrix_client_port")
    limit = exp["limit"]
    enforce = var(case, "relayd_body_limit_enforce")
    rng = random.Random(limit)
    over = [limit + 1, limit + 10, limit * 10, 10 ** len(str(limit)), 99999999999] + \
        [rng.randint(limit + 1, limit * 100) for _draw in range(200)]
    under = [0, 1, limit, limit - 1, limit // 2, 10 ** (len(str(limit)) - 1)] + [rng.randint(0, limit) for _draw in range(200)]
    for length in over:
        upload = request(case, "/_matrix/media/v3/upload", method="POST", port=port, headers=[("Content-Length", str(length))])
        got = outcome(rendered[case], port, upload)
        assert got == (("error", 413) if enforce else ("upstream", "mxedge_homeserver")), length
    for length in under:
        upload = request(case, "/_matrix/media/v3/upload", method="POST", port=port, headers=[("content-length", str(length))])
        out = run(rendered[case], port, upload)
        assert (out.action, out.table) == ("pass", "mxedge_homeserver"), length


def test_body_limit_patterns_are_exact_for_many_limits():
    """The filter's digit-by-digit patterns against integers, matched the way this
    parser's fnmatch matches them, for limits of every shape."""
    from ansible_collections.mxedge.matrix.plugins.module_utils.relayd_patterns import content_length_over as patterns

    rng = random.Random(7)
    limits = [1048576, 52428800, 104857600, 9, 99, 1000, 999999, 10485760000] + [rng.randint(1, 10 ** 11) for _draw in range(50)]
    for limit in limits:
        pats = patterns(limit)
        values = {0, 1, limit - 1, limit, limit + 1, limit * 10, 10 ** len(str(limit))} | \
            {rng.randint(0, limit * 3) for _draw in range(300)}
        for value in sorted(v for v in values if v >= 0):
            blocked = any(rc.relayd_fnmatch(p, str(value)) for p in pats)
            assert blocked == (value > limit), (limit, value)


def test_the_template_writes_those_patterns(rendered):
    cfg = rendered["single_port_delegated"]["config"]
    rules = [r for r in cfg.protocols["mxedge_client"].rules if "header" in r.kvs and r.kvs["header"].key == "Content-Length"]
    assert all(r.action == "match" and r.tag == "mxedge_too_large" and r.direction == "request" for r in rules)
    assert [r.kvs["header"].value for r in rules] == [
        "?????????*", "[6-9]???????", "5[3-9]??????", "52[5-9]?????", "524[3-9]????", "5242[9-9]???", "52428[9-9]??",
        "524288[1-9]?", "5242880[1-9]",
    ]
    refuse = [r for r in cfg.protocols["mxedge_client"].rules if r.tagged == "mxedge_too_large"]
    assert len(refuse) == 1 and refuse[0].quick and refuse[0].table == "mxedge_httpd"
    assert refuse[0].kvs["header"] == rc.KeyValue("header", "set", "Host", "mxedge-error-413.invalid")


@ALL
def test_federation_listener(rendered, case):
    exp = expected(case)
    if not exp["separate"]:
        assert "mxedge_federation" not in rendered[case]["config"].relays
        return
    port = var(case, "matrix_federation_port")
    for path in ("/_matrix/federation/v1/version", "/_matrix/key/v2/server", "/_matrix/federation/v1/send/1%2F2"):
        out = run(rendered[case], port, request(case, path, port=port, headers=[("X-Forwarded-For", "6.6.6.6")]))
        assert (out.action, out.table) == ("pass", "mxedge_homeserver"), path
        assert out.headers.get_all("X-Forwarded-For") == ["198.51.100.7"]
    # The route table refuses the admin API here (403) and routes nothing else of the namespace.
    for path in (exp["client_prefixes"][1] + "/x", exp["admin_prefix"] + "/v1/x", "/_matrix/../" + exp["admin_prefix"][1:],
                 "/_matrix/%2e%2e/x"):
        assert outcome(rendered[case], port, request(case, path, port=port)) == ("error", 403), path
    for path in ("/health", "/"):
        assert outcome(rendered[case], port, request(case, path, port=port)) == ("error", 404), path


@ALL
def test_well_known_documents(rendered, case):
    exp = expected(case)
    host = exp["server_name_host"]
    facts = rendered[case]["facts"]
    bodies = {"server": facts["well_known_server_body"], "client": facts["well_known_client_body"]}
    statics = [r for v in facts["routes"]["vhosts"] for r in v["routes"] if r["action"] == "static"]
    if exp["placement"] == "none":
        assert statics == []
        got = outcome(rendered[case], var(case, "matrix_client_port"),
                      request(case, "/.well-known/matrix/server", host=host))
        assert got == ("error", 404)
        return
    assert {r["match"]["path"]: r["body"] for r in statics} == {f"/.well-known/matrix/{k}": b for k, b in bodies.items()}
    port = exp["well_known_port"]
    for kind in ("server", "client"):
        for host_header in (host, host + ":443", host.upper()) if exp["placement"] == "separate" else (host,):
            req = request(case, f"/.well-known/matrix/{kind}", host=host_header, port=port)
            if host_header == host.upper() and rendered[case]["config"].relay_for_port(port).name != "mxedge_well_known":
                continue  # relayd compares Host literally: the upper-case name is the homeserver's listener (404)
            got = outcome(rendered[case], port, req)
            assert got == ("file", f"/var/www/mxedge-matrix/.well-known/matrix/{kind}", "application/json", True), \
                (kind, host_header)
    # A Matrix API response on the same connection gets no CORS header from relayd.
    if exp["well_known_port"] == var(case, "matrix_client_port"):
        out = run(rendered[case], port, request(case, "/_matrix/client/versions", port=port), session_tag="mxedge_static")
        assert out.tag == "mxedge_vh_client"
        response = run(rendered[case], port, request(case, "/", port=port), session_tag=out.tag,
                       direction="response", response_headers=[])
        assert "Access-Control-Allow-Origin" not in response.headers


@ALL
def test_the_server_name_host_only_gets_the_well_known_documents(rendered, case):
    exp = expected(case)
    if exp["placement"] != "separate" or exp["server_name_host"] == exp["fqdn"]:
        return
    port = 443
    relay = rendered[case]["config"].relay_for_port(port)
    if relay.name == "mxedge_well_known":
        return
    for path in ("/_matrix/client/versions", "/_matrix/federation/v1/version", "/health"):
        for host in (exp["server_name_host"], exp["server_name_host"] + ":443"):
            assert outcome(rendered[case], port, request(case, path, host=host, port=port)) == ("error", 404), (path, host)
    # ... while the homeserver's host on the same relay is routed normally.
    out = run(rendered[case], port, request(case, "/_matrix/federation/v1/version", port=port))
    assert out.table == "mxedge_homeserver"


def test_well_known_relay_of_its_own(rendered):
    case = rendered["client_port_8443"]
    cfg = case["config"]
    relay = cfg.relays["mxedge_well_known"]
    assert [listen.port for listen in relay.listens] == [443]
    for path in ("/_matrix/client/versions", "/_synapse/admin/v1/x", "/"):
        out = rc.evaluate(cfg, relay, rc.Request(path=path, headers=[("Host", "example.net")]))
        assert answer(case, 443, out) == ("error", 404), path
    out = rc.evaluate(cfg, relay, rc.Request(path="/.well-known/matrix/server", headers=[("Host", "example.net")]))
    assert out.tag == "mxedge_static"


def test_extras_land_in_their_blocks(rendered):
    case = rendered["extras"]
    cfg = case["config"]
    assert "mxedge_extra" in cfg.tables
    assert [f.table for f in cfg.relays["mxedge_client"].forwards] == ["mxedge_httpd", "mxedge_homeserver", "mxedge_extra"]
    assert cfg.relays["mxedge_federation"].session_timeout == 900
    assert cfg.relays["mxedge_client"].session_timeout == 3600
    assert cfg.globals["prefork"] == 8
    out = run(case, 443, request("extras", "/extra/thing"))
    assert out.table == "mxedge_extra"
    out = run(case, 443, request("extras", "/_matrix/client/v3/register"))
    assert (out.action, out.label) == ("block", "registration closed")
    # Operator rules come before the role's, after the forwarded headers.
    client_rules = cfg.protocols["mxedge_client"].rules
    labels = [r.label for r in client_rules]
    assert labels.index("registration closed") < labels.index("request body too large")
    out = run(case, 8448, request("extras", "/_matrix/federation/v1/query/directory", port=8448))
    assert out.label == "no directory queries"
    out = run(case, 8448, request("extras", "/_matrix/federation/v1/version", port=8448))
    assert out.table == "mxedge_homeserver"


# --------------------------------------------------------------------------
# MAS and MatrixRTC (MX13, MX14): services on host names of their own
# --------------------------------------------------------------------------

SERVICES = pytest.mark.parametrize("case", [c for c in CASES if CASES[c].get("matrix_mas_url")])
# A service relay of its own (a service URL with a port no other listener has): its pool and port.
SERVICE_RELAYS = {"mxedge_rtc_sfu": ("mxedge_rtc_sfu", 7880)}
# name -> (table, upstream port)
SERVICE_TABLES = {"mas": ("mxedge_mas", 8080), "rtc_jwt": ("mxedge_rtc_jwt", 8081), "rtc_sfu": ("mxedge_rtc_sfu", 7880)}
MAS_COMPAT = [f"/_matrix/client/{version}/{endpoint}" for version in ("api/v1", "r0", "v3", "unstable")
              for endpoint in ("login", "logout", "refresh")]
WEBSOCKET = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")]


def service_port(case, name):
    return urllib.parse.urlsplit(var(case, f"matrix_{name}_url")).port or 443


def service_host(case, name):
    return urllib.parse.urlsplit(var(case, f"matrix_{name}_url")).hostname


@SERVICES
@pytest.mark.parametrize("path", MAS_COMPAT)
@pytest.mark.parametrize("tail", ["", "/sso/redirect/oidc-x?redirectUrl=x", "/all", "?x=1"])
def test_mas_compat_routes_go_to_mas(rendered, case, path, tail):
    port = var(case, "matrix_client_port")
    req = request(case, path + tail.split("?")[0], port=port)
    out = run(rendered[case], port, req)
    assert (out.action, out.table, out.path) == ("pass", "mxedge_mas", req.path)
    assert out.headers.get_all("X-Forwarded-For") == [req.source]  # MX05 as for the homeserver
    # A longer last segment is not the endpoint: the homeserver's.
    out = run(rendered[case], port, request(case, path + "x", port=port))
    assert out.table == "mxedge_homeserver"


@SERVICES
def test_mas_compat_routes_come_before_the_client_api(rendered, case):
    client = next(v for v in rendered[case]["facts"]["routes"]["vhosts"] if v["name"] == "client")
    ids = [r["id"] for r in client["routes"]]
    compat = [i for i, r in enumerate(client["routes"]) if r["id"].startswith("mas-")]
    assert len(compat) == 12 and [client["routes"][i]["match"]["path"] for i in compat] == MAS_COMPAT
    assert max(compat) < ids.index("api-matrix")
    rules = rendered[case]["config"].protocols["mxedge_client"].rules
    to_mas = [i for i, r in enumerate(rules) if r.table == "mxedge_mas" and r.tagged == "mxedge_vh_client"]
    to_api = [i for i, r in enumerate(rules) if r.table == "mxedge_homeserver" and r.tagged == "mxedge_vh_client"]
    assert len(to_mas) == 24 and max(to_mas) < min(to_api)
    for path in ("/_matrix/client/v3/sync", "/_matrix/client/v3/account/whoami", "/_matrix/client/versions"):
        assert run(rendered[case], 443, request(case, path)).table == "mxedge_homeserver", path


@SERVICES
@pytest.mark.parametrize("name", list(SERVICE_TABLES))
@pytest.mark.parametrize("path", ["/", "/account/", "/.well-known/openid-configuration", "/sfu/get", "/rtc?access_token=x",
                                  "/_matrix/client/v3/login", "/a//b/%2F"])
def test_service_hosts_are_routed_whole_to_their_upstream(rendered, case, name, path):
    port = service_port(case, name)
    host = service_host(case, name)
    for host_header in (host, f"{host}:{port}"):
        req = request(case, path.split("?")[0], host=host_header, port=port)
        out = run(rendered[case], port, req)
        assert (out.action, out.table, out.path) == ("pass", SERVICE_TABLES[name][0], req.path), host_header
        assert out.headers.get("Host") == host_header  # MX05: Host as sent
        assert out.headers.get_all("X-Forwarded-Proto") == ["https"]


@SERVICES
@pytest.mark.parametrize("name", list(SERVICE_TABLES))
def test_service_vhosts_answer_only_their_host_names(rendered, case, name):
    port = service_port(case, name)
    table = SERVICE_TABLES[name][0]
    others = ["matrix.example.test", "example.test", "evil.test", service_host(case, name) + ".evil.test"]
    others += [service_host(case, n) for n in SERVICE_TABLES if n != name and service_port(case, n) == port]
    for host in others:
        for path in ("/", "/account/", "/sfu/get"):
            out = run(rendered[case], port, request(case, path, host=host, port=port))
            assert out.table != table, (host, path)
    # Never on another port (the federation relay, or 443 for a service on a port of its own).
    for other_port in sorted(set(expected(case)["relays"].values()) - {port}):
        out = run(rendered[case], other_port, request(case, "/", host=service_host(case, name), port=other_port))
        assert out.table != table, other_port


def _tunnel_relays(rendered_case):
    return {name for name in rendered_case["config"].relays if any(
        r["policy"]["timeout"] == "tunnel" for v in _vhosts_of(rendered_case, name) for r in v["routes"] if r["action"] == "forward")}


@SERVICES
@pytest.mark.parametrize("upgrade", ["websocket", "WebSocket", "websocket, foo"])
def test_websocket_upgrade_only_on_tunnel_routes(rendered, case, upgrade):
    headers = [("Upgrade", upgrade)] + WEBSOCKET[1:]
    sfu_port = service_port(case, "rtc_sfu")
    out = run(rendered[case], sfu_port, request(case, "/rtc", host=service_host(case, "rtc_sfu"), headers=headers, port=sfu_port))
    assert (out.action, out.table) == ("pass", "mxedge_rtc_sfu")
    assert out.headers.get("Upgrade") == upgrade and out.headers.get("Connection") == "Upgrade"
    # relayd's own checks still hold on the tunnel route: Connection: upgrade and GET.
    out = run(rendered[case], sfu_port, request(case, "/rtc", host=service_host(case, "rtc_sfu"), method="POST",
                                                headers=headers, port=sfu_port))
    assert (out.action, out.status) == ("block", 405)
    # Everywhere else: 403 from relayd, as without "http websockets".
    refused = [("mas", "/"), ("rtc_jwt", "/sfu/get")]
    for name, path in refused:
        port = service_port(case, name)
        out = run(rendered[case], port, request(case, path, host=service_host(case, name), headers=headers, port=port))
        assert (out.action, out.status) == ("block", 403), name
    for port in sorted(set(expected(case)["relays"].values())):
        for path in ("/_matrix/client/v3/sync", "/_matrix/client/v3/login", "/.well-known/matrix/client", "/nothing"):
            out = run(rendered[case], port, request(case, path, headers=headers, port=port))
            assert (out.action, out.status) == ("block", 403), (port, path)
    # Without an upgrade nothing changes.
    out = run(rendered[case], 443, request(case, "/_matrix/client/v3/sync", headers=[("Connection", "keep-alive")]))
    assert (out.action, out.table) == ("pass", "mxedge_homeserver")


@ALL
def test_websockets_and_tunnel_timeout_only_where_a_tunnel_route_is(rendered, case):
    cfg = rendered[case]["config"]
    tunnels = _tunnel_relays(rendered[case])
    assert bool(tunnels) == bool(var(case, "matrix_rtc_sfu_url"))
    timeouts = {"extras": {"mxedge_federation": 900}}.get(case, {})
    for name, relay in cfg.relays.items():
        assert cfg.protocols[relay.protocol].http.get("websockets", False) is (name in tunnels), name
        want = max(var(case, "relayd_session_timeout"), var(case, "relayd_tunnel_timeout")) if name in tunnels \
            else timeouts.get(name, var(case, "relayd_session_timeout"))
        assert relay.session_timeout == want, name
    if not tunnels:
        out = run(rendered[case], var(case, "matrix_client_port"),
                  request(case, "/_matrix/client/v3/sync", headers=WEBSOCKET, port=var(case, "matrix_client_port")))
        assert (out.action, out.status, out.label) == ("block", 403, "Websocket Forbidden")


def test_tunnel_timeout_values(rendered):
    assert DEFAULTS["relayd_tunnel_timeout"] == 3600
    # The SFU shares 443 with the client API: every session there idles up to an hour.
    assert rendered["services"]["config"].relays["mxedge_client"].session_timeout == 3600
    # The SFU on a port of its own: only its relay.
    relays = rendered["services_sfu_port"]["config"].relays
    assert (relays["mxedge_rtc_sfu"].session_timeout, relays["mxedge_client"].session_timeout) == (7200, 600)
    assert [listen.port for listen in relays["mxedge_rtc_sfu"].listens] == [7443]


# --------------------------------------------------------------------------
# httpd.conf of the well-known instance
# --------------------------------------------------------------------------


def httpd_route(server, path):
    """httpd(8)'s answer within one server block: the first matching location decides."""
    root = next((c.words[1] for c in server.children if c.words[0] == "root"), "/htdocs")
    for location in server.find("location"):
        if rc.relayd_fnmatch(location.words[1], path):
            words = [c.words for c in location.children]
            block = next((w for w in words if w[:2] == ["block", "return"]), None)
            if block:
                return ("status", block[2])
            strip = next((w[2] for w in words if w[:2] == ["request", "strip"]), 0)
            parts = path.split("/")
            rest = "/" + "/".join(parts[1 + strip:])
            content_type = next(("".join(map(str, w[2:])) for w in words if w[:2] == ["default", "type"]), None)
            return ("file", "/var/www" + root + rest, content_type)
    return ("file", "/var/www" + root + path, None)


@ALL
def test_httpd_instance(rendered, case):
    tree = rendered[case]["httpd"]
    routes = rendered[case]["facts"]["routes"]
    assert [c.words for c in tree.children if c.children is None] == [["errdocs", "/mxedge-matrix-errors"]]
    servers = tree.find("server")
    errors = sorted(int(status) for status in routes["errors"] if int(status) < 500)
    assert [s.words[1] for s in servers] == ["mxedge-matrix", "mxedge-static.invalid"] + \
        [f"mxedge-error-{status}.invalid" for status in errors]
    for server in servers:
        assert server.find("listen")[0].words == ["listen", "on", "127.0.0.1", "port", 8089]
        assert ["log", "style", "forwarded"] in [c.words for c in server.children]
        assert [loc.words[1] for loc in server.find("location")][-1] == "*"
    # The default server (any other Host) is the fallback: 404 for everything.
    for path in ("/", "/_matrix/client/versions", "/.well-known/matrix/server", "/mxedge-matrix/server"):
        assert httpd_answer(tree, "matrix.example.test", path) == ("status", 404), path
    for status in errors:
        assert httpd_answer(tree, f"mxedge-error-{status}.invalid", "/_synapse/admin/x") == ("status", status)
    statics = [r for v in routes["vhosts"] for r in v["routes"] if r["action"] == "static"]
    for route in statics:
        assert httpd_answer(tree, "mxedge-static.invalid", route["match"]["path"]) == \
            ("file", "/var/www/mxedge-matrix" + route["match"]["path"], route["content_type"])
    for path in ("/", "/_matrix/client/versions", "/.well-known/acme-challenge/x", "/server"):
        assert httpd_answer(tree, "mxedge-static.invalid", path) == ("status", 404), path


def test_documents_are_published_from_the_route_table_unchanged():
    """configure.yml has mxedge.matrix.proxy_common publish the table's bodies as they are (no re-serialising),
    at <chroot>/<docroot><route path> and <chroot>/<errdocs>/<status>.html, where httpd.conf.j2 serves them."""
    tasks = yaml.safe_load((ROLE / "tasks" / "configure.yml").read_text())
    task = next(t for t in tasks if t.get("name", "").startswith("Publish the static documents"))
    assert task["ansible.builtin.include_role"]["name"] == "mxedge.matrix.proxy_common"
    assert task["ansible.builtin.include_role"]["tasks_from"] == "publish"
    assert task["vars"]["proxy_common_documents"] == "{{ _relayd_documents }}"
    documents = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["_relayd_documents"]
    assert documents["static_dir"] == "{{ _relayd_httpd_chroot }}/{{ _relayd_httpd_docroot }}"
    assert (documents["static_name"], documents["static_separator"]) == (["path"], "")
    assert documents["error_dir"] == "{{ _relayd_httpd_chroot }}/{{ _relayd_httpd_errdocs }}"
    assert documents["error_suffix"] == ".html"
    publish = yaml.safe_load((ROLE.parent / "proxy_common" / "tasks" / "publish.yml").read_text())
    files = next(t for t in publish if "mxedge.matrix.role_files" in t)["mxedge.matrix.role_files"]["files"]
    # the path -> content mapping of the route table's bodies, each written as it is
    assert "__proxy_common_files | dict2items(key_name='path', value_name='content')" in files


# --------------------------------------------------------------------------
# Issue 18: raw URIs that normalise into another route, case and slash variants
# --------------------------------------------------------------------------


def _issue_18_spellings(exp):
    ns = exp["namespace"]  # "/_synapse/"
    admin = exp["admin_prefix"]  # "/_synapse/admin"
    up = "%2E%2E%2F"
    return [
        # normalising tails that climb from the admin API to another exact route
        admin + "/v2/users/" + up * 4 + "health",
        admin + "/v2/users/" + up * 4 + "%2Ewell-known%2Fmatrix%2Fserver",
        admin + "/v2/users/" + "..%2F" * 4 + ".well-known/matrix/client",
        admin + "/v1/x/%2e%2e/%2e%2e/%2e%2e/health",
        admin + "/v1/x/../../../health",
        # ... and from another route into the admin API
        "/health/../" + admin[1:] + "/v1/x",
        "/health%2F..%2F" + admin[1:] + "/v1/x",
        "/.well-known/matrix/server/../../../" + admin[1:],
        # case variants
        ns.upper() + "admin/v1/x",
        ns + "ADMIN/v1/x",
        ns + "Admin/v1/x",
        # double slashes
        "/" + admin + "/v1/x",
        ns + "/admin/v1/x",
        admin + "//v1/x",
        # encoded letters
        ns + "%61dmin/v1/x",
        ns + "adm%69n/v1/x",
        "/%5F" + ns[2:] + "admin/v1/x",
    ]


@ALL
def test_issue_18_bypasses_never_reach_the_homeserver_from_outside(rendered, case):
    exp = expected(case)
    for port in sorted(set(exp["relays"].values())):
        for path in _issue_18_spellings(exp):
            for source in ("203.0.113.9", "2001:db9::9"):
                out = run(rendered[case], port, request(case, path, source=source, port=port))
                got = answer(rendered[case], port, out)
                assert got[0] != "upstream", (port, path, source, out)
                assert got in (("error", 403), ("error", 404)), (port, path, got)


@ALL
def test_issue_18_raw_uri_outside_a_forwarded_route_is_not_forwarded(rendered, case):
    """Every request that is forwarded has a raw path under the route it was forwarded for (MX04)."""
    exp = expected(case)
    routes = rendered[case]["facts"]["routes"]
    port = var(case, "matrix_client_port")
    client = next(v for v in routes["vhosts"] if v["name"] == "client")
    forwarded = [r for r in client["routes"] if r["action"] == "forward"]
    import re
    candidates = _issue_18_spellings(exp) + _bypass_spellings(exp) + [
        "/_matrix/client/versions", "/health", "/health?x=1", exp["admin_prefix"] + "/v1/server_version",
        exp["client_prefixes"][1] + "/sso", "/_matrixfoo", "/healthz", "/health/",
        # under /_matrix as received: forwarded raw, the homeserver routes it below /_matrix
        "/_matrix/client/%2E%2E%2F%2E%2E%2F" + exp["admin_prefix"][1:] + "/v1/x",
    ]
    allowed = [str(ipaddress.ip_network(n).network_address + 1) for n in var(case, "matrix_admin_allowed_networks")]
    for path in candidates:
        for source in ["203.0.113.9"] + allowed:
            out = run(rendered[case], port, request(case, path, source=source, port=port))
            if out.table != "mxedge_homeserver":
                continue
            raw = path.split("?")[0]
            assert any(re.match(r["match"]["raw_regex"], raw) and (not r["allow_sources"] or any(
                ipaddress.ip_address(source) in ipaddress.ip_network(n) for n in r["allow_sources"])) for r in forwarded), \
                (path, source)


# --------------------------------------------------------------------------
# The contract: behaviour IDs, and no Matrix path in the role
# --------------------------------------------------------------------------

# What relayd implements of docs/contract.md, whatever the variables (MX12, port 80 for ACME,
# does not apply: matrix_tls_source=acme is refused in preflight).
RELAYD_ALWAYS = {"MX04", "MX05", "MX06", "MX07", "MX08", "MX09", "MX10", "MX11"}


@ALL
def test_every_behaviour_that_applies_is_named_in_a_comment(rendered, case):
    routes = rendered[case]["facts"]["routes"]
    applies = set(RELAYD_ALWAYS)
    for vhost in routes["vhosts"]:
        if vhost["tls"]:
            for route in vhost["routes"]:
                applies |= set(route["behaviours"])
    assert "MX12" not in applies
    comments = " ".join(line for line in rendered[case]["text"].splitlines() if line.lstrip().startswith("#"))
    missing = sorted(b for b in applies if b not in comments)
    assert not missing, f"relayd.conf names no comment for {missing}"
    # MX13 and MX14 apply only with their services (matrix_mas_url, matrix_rtc_*_url).
    assert ("MX13" in applies) == bool(var(case, "matrix_mas_url"))
    assert ("MX14" in applies) == bool(var(case, "matrix_rtc_sfu_url") or var(case, "matrix_rtc_jwt_url"))
    for behaviour in {"MX13", "MX14"} - applies:
        assert behaviour not in comments, behaviour
    httpd_comments = " ".join(line for line in rendered[case]["httpd_text"].splitlines() if line.startswith("#"))
    for behaviour in ("MX10", "MX11") + (("MX03",) if any(r["action"] == "static" for v in routes["vhosts"] for r in v["routes"]) else ()):
        assert behaviour in httpd_comments, behaviour


def test_the_behaviour_check_fails_on_a_config_without_the_ids(rendered):
    text = rendered["single_port_delegated"]["text"]
    stripped = "\n".join(line for line in text.splitlines() if "MX06" not in line)
    comments = " ".join(line for line in stripped.splitlines() if line.lstrip().startswith("#"))
    assert "MX06" not in comments  # the check above would report it missing


MATRIX_PATHS = ("/_matrix", "/_synapse", "/_palpo", "/health", "/.well-known/matrix", "well-known/acme")


@pytest.mark.parametrize("directory", ["templates", "tasks", "vars"])
def test_no_matrix_path_in_the_role(directory):
    for path in sorted((ROLE / directory).iterdir()):
        text = path.read_text()
        for fragment in MATRIX_PATHS:
            assert fragment not in text, (path.name, fragment)
