"""The route table: which route answers which path on which listener, for each shape of deployment."""

import json

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.mxedge.matrix.plugins.filter import route_table as route_table_plugin
from ansible_collections.mxedge.matrix.plugins.module_utils.matrix_routes import (
    BEHAVIOURS,
    ERRORS,
    RouteTableError,
    check_table,
    error_document,
    raw_regex,
    route_table,
    routes_to,
)

import re

BASE = {
    "homeserver_flavour": "synapse",
    "homeserver_fqdn": "matrix.example.test",
    "server_name_host": "example.test",
    "client_port": 443,
    "federation_port": 8448,
    "well_known_placement": "separate",
    "well_known_port": 443,
    "well_known_server_body": '{"m.server":"matrix.example.test:8448"}',
    "well_known_client_body": '{"m.homeserver":{"base_url":"https://matrix.example.test/"}}',
    "admin_allowed_networks": [],
    "max_body_bytes": 8 * 1048576,
    "homeserver_address": "127.0.0.1",
    "homeserver_port": 8008,
    "homeserver_socket": "",
    "acme": False,
    "acme_challenge_address": "127.0.0.1",
    "acme_challenge_port": 8402,
    "http_port": 80,
    "https_redirect_port_suffix": "",
}

# Deployment shapes: name -> overrides of BASE.
SHAPES = {
    "delegated_two_ports": {},
    "single_port_delegated": {"federation_port": 443},
    "same_host_well_known_on_client": {"server_name_host": "matrix.example.test", "well_known_placement": "client"},
    "well_known_on_federation": {"server_name_host": "matrix.example.test", "client_port": 8443,
                                 "federation_port": 443, "well_known_placement": "federation"},
    "no_well_known": {"server_name_host": "other.test", "homeserver_fqdn": "other.test", "well_known_placement": "none"},
    "palpo_socket": {"homeserver_flavour": "palpo", "homeserver_socket": "/run/palpo/palpo.sock"},
    "admin_allow_listed": {"admin_allowed_networks": ["10.0.0.0/8", "2001:db8::/32"]},
    "acme": {"acme": True},
    "mas_and_rtc": {"services": {
        "mas": {"host": "auth.example.test", "port": 443, "upstream_address": "127.0.0.1", "upstream_port": 8080},
        "rtc_jwt": {"host": "rtc-jwt.example.test", "port": 443, "upstream_address": "hs.internal", "upstream_port": 8081},
        "rtc_sfu": {"host": "sfu.example.test", "port": 8443, "upstream_address": "::1", "upstream_port": 7880},
    }},
}


def table(shape):
    return route_table(dict(BASE, **SHAPES[shape]))


def vhost_names(result):
    return [v["name"] for v in result["vhosts"]]


@pytest.mark.parametrize(
    "shape,vhosts",
    [
        ("delegated_two_ports", ["client", "federation", "well_known"]),
        ("single_port_delegated", ["client", "well_known"]),
        ("same_host_well_known_on_client", ["client", "federation"]),
        ("well_known_on_federation", ["client", "federation"]),
        ("no_well_known", ["client", "federation"]),
        ("acme", ["client", "federation", "well_known", "http"]),
        ("mas_and_rtc", ["client", "federation", "well_known", "mas", "rtc_jwt", "rtc_sfu"]),
    ],
)
def test_listeners_for_each_shape(shape, vhosts):
    assert vhost_names(table(shape)) == vhosts


# (shape, vhost, normalised path) -> (route id or None for the fallback, action)
ROUTING = [
    ("delegated_two_ports", "client", "/_matrix/client/versions", "api-matrix", "forward"),
    ("delegated_two_ports", "client", "/_matrix", "api-matrix", "forward"),
    ("delegated_two_ports", "client", "/_matrixfoo", None, None),
    ("delegated_two_ports", "client", "/_synapse/client/oidc/callback", "api-synapse-client", "forward"),
    ("delegated_two_ports", "client", "/_synapse/admin/v1/users", "admin-synapse-admin", "refuse"),
    ("delegated_two_ports", "client", "/health", "health", "forward"),
    ("delegated_two_ports", "client", "/health/x", None, None),
    ("delegated_two_ports", "client", "/.well-known/matrix/server", None, None),
    ("delegated_two_ports", "federation", "/_matrix/federation/v1/version", "federation-matrix", "forward"),
    ("delegated_two_ports", "federation", "/_synapse/client/x", None, None),
    ("delegated_two_ports", "federation", "/_synapse/admin/v1/users", "admin-synapse-admin", "refuse"),
    ("delegated_two_ports", "federation", "/health", None, None),
    ("delegated_two_ports", "well_known", "/.well-known/matrix/server", "well-known-server", "static"),
    ("delegated_two_ports", "well_known", "/.well-known/matrix/client", "well-known-client", "static"),
    ("delegated_two_ports", "well_known", "/.well-known/matrix/support", None, None),
    ("delegated_two_ports", "well_known", "/_matrix/client/versions", None, None),
    ("same_host_well_known_on_client", "client", "/.well-known/matrix/client", "well-known-client", "static"),
    ("well_known_on_federation", "federation", "/.well-known/matrix/server", "well-known-server", "static"),
    ("well_known_on_federation", "client", "/.well-known/matrix/server", None, None),
    ("palpo_socket", "client", "/_palpo/client/x", "api-palpo-client", "forward"),
    ("palpo_socket", "client", "/_palpo/admin/x", "admin-palpo-admin", "refuse"),
    ("palpo_socket", "client", "/_synapse/admin/x", None, None),
    ("admin_allow_listed", "client", "/_synapse/admin/v1/users", "admin-synapse-admin", "forward"),
    ("admin_allow_listed", "federation", "/_synapse/admin/v1/users", "admin-synapse-admin", "refuse"),
    ("acme", "http", "/.well-known/acme-challenge/token", "acme-challenge", "forward"),
    ("acme", "http", "/_matrix/client/versions", None, None),
    ("mas_and_rtc", "client", "/_matrix/client/v3/login", "mas-v3-login", "forward"),
    ("mas_and_rtc", "client", "/_matrix/client/v3/login/sso/redirect/oidc", "mas-v3-login", "forward"),
    ("mas_and_rtc", "client", "/_matrix/client/api/v1/logout", "mas-api-v1-logout", "forward"),
    ("mas_and_rtc", "client", "/_matrix/client/r0/logout/all", "mas-r0-logout", "forward"),
    ("mas_and_rtc", "client", "/_matrix/client/unstable/refresh", "mas-unstable-refresh", "forward"),
    ("mas_and_rtc", "client", "/_matrix/client/v3/loginx", "api-matrix", "forward"),
    ("mas_and_rtc", "client", "/_matrix/client/v3/register", "api-matrix", "forward"),
    ("mas_and_rtc", "client", "/_synapse/mas/is_localpart_available", None, None),
    ("mas_and_rtc", "federation", "/_matrix/client/v3/login", "federation-matrix", "forward"),
    ("mas_and_rtc", "federation", "/_matrix/federation/v1/openid/userinfo", "federation-matrix", "forward"),
    ("mas_and_rtc", "mas", "/", "mas", "forward"),
    ("mas_and_rtc", "mas", "/oauth2/token", "mas", "forward"),
    ("mas_and_rtc", "rtc_jwt", "/sfu/get", "rtc-jwt", "forward"),
    ("mas_and_rtc", "rtc_sfu", "/rtc", "rtc-sfu", "forward"),
    ("delegated_two_ports", "client", "/_matrix/client/v3/login", "api-matrix", "forward"),
]


@pytest.mark.parametrize("shape,vhost,path,route_id,action", ROUTING, ids=[f"{r[0]}:{r[1]}:{r[2]}" for r in ROUTING])
def test_which_route_answers(shape, vhost, path, route_id, action):
    route = routes_to(table(shape), vhost, path)
    assert (route and route["id"], route and route["action"]) == (route_id, action)


@pytest.mark.parametrize(
    "kind,path,uri,matches",
    [
        ("prefix", "/_matrix", "/_matrix/client/versions", True),
        ("prefix", "/_matrix", "/_matrix", True),
        ("prefix", "/_matrix", "/_matrix?x=1", True),
        ("prefix", "/_matrix", "/_matrixx", False),
        ("prefix", "/_matrix", "/_synapse/admin/%2E%2E%2F%2E%2E%2F_matrix/client/versions", False),
        ("prefix", "/_matrix", "//_matrix/client/versions", False),
        ("exact", "/health", "/health", True),
        ("exact", "/health", "/health?probe=1", True),
        ("exact", "/health", "/health/", False),
        ("exact", "/health", "/_synapse/admin/v2/users/%2E%2E%2F%2E%2E%2F%2E%2E%2F%2E%2E%2Fhealth", False),
        ("exact", "/.well-known/matrix/server", "/.well-known/matrix/server", True),
        ("exact", "/.well-known/matrix/server", "/.well-known/matrixXserver", False),
        ("prefix", "/", "/", True),
        ("prefix", "/", "/rtc?access_token=x", True),
        ("prefix", "/", "//a/%2F/../b", True),
        ("prefix", "/", "rtc", False),
        ("prefix", "/_matrix/client/v3/login", "/_matrix/client/v3/login/sso/redirect?x=1", True),
        ("prefix", "/_matrix/client/v3/login", "/_matrix/client/v3/loginx", False),
    ],
)
def test_raw_regex_admits_only_uris_under_the_route(kind, path, uri, matches):
    assert bool(re.search(raw_regex(kind, path), uri)) is matches


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_forward_route_checks_the_raw_uri_and_names_its_behaviours(shape):
    for vhost in table(shape)["vhosts"]:
        for route in vhost["routes"]:
            assert route["match"]["raw_regex"].startswith("^"), route["id"]
            assert route["behaviours"] and set(route["behaviours"]) <= set(BEHAVIOURS), route["id"]


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_fallbacks_are_matrix_errors(shape):
    for vhost in table(shape)["vhosts"]:
        if vhost["tls"]:
            assert vhost["fallback"]["status"] == 404
            assert json.loads(vhost["fallback"]["body"]) == {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}
        else:
            assert vhost["fallback"]["redirect"] == "https"


@pytest.mark.parametrize("status", sorted(ERRORS))
def test_error_documents_are_canonical_matrix_json(status):
    document = error_document(status)
    assert document["body"] == json.dumps({"errcode": document["errcode"], "error": document["error"]},
                                          sort_keys=True, separators=(",", ":"))
    assert ("retry_after" in document) is (status >= 502)


def test_admin_allow_list_refuses_others_with_forbidden():
    route = routes_to(table("admin_allow_listed"), "client", "/_synapse/admin")
    assert route["allow_sources"] == ["10.0.0.0/8", "2001:db8::/32"]
    assert route["refuse"]["errcode"] == "M_FORBIDDEN"


@pytest.mark.parametrize(
    "shape,upstream_endpoint",
    [("delegated_two_ports", "127.0.0.1:8008"), ("palpo_socket", "/run/palpo/palpo.sock")],
)
def test_one_homeserver_pool(shape, upstream_endpoint):
    pools = table(shape)["upstreams"]
    assert [p["name"] for p in pools] == ["homeserver"]
    assert [s["endpoint"] for s in pools[0]["servers"]] == [upstream_endpoint]


def test_ipv6_upstream_is_bracketed_once():
    pool = route_table(dict(BASE, homeserver_address="[::1]"))["upstreams"][0]
    assert pool["servers"][0]["endpoint"] == "[::1]:8008"
    assert pool["servers"][0]["address"] == "::1"


def test_federation_listener_answers_for_the_server_name_without_delegation():
    federation = table("no_well_known")["vhosts"][1]
    assert federation["hosts"] == ["other.test"] and federation["any_host"]


def test_ports_are_the_tls_listeners():
    assert table("acme")["ports"] == [443, 8448]
    assert table("single_port_delegated")["ports"] == [443]


@pytest.mark.parametrize(
    "override,words",
    [
        ({"homeserver_flavour": "dendrite"}, "homeserver_flavour must be one of"),
        ({"well_known_placement": "elsewhere"}, "well_known_placement must be"),
        ({"admin_allowed_networks": "10.0.0.0/8"}, "'admin_allowed_networks' must be list"),
        ({"homeserver_address": "", "homeserver_socket": ""}, "homeserver_address and homeserver_port"),
        ({"homeserver_port": 70000}, "homeserver_address and homeserver_port"),
    ],
)
def test_bad_input_names_the_key(override, words):
    with pytest.raises(RouteTableError, match=re.escape(words)):
        route_table(dict(BASE, **override))


def test_missing_key_is_named():
    spec = dict(BASE)
    del spec["client_port"]
    with pytest.raises(RouteTableError, match="no 'client_port'"):
        route_table(spec)


@pytest.mark.parametrize(
    "mutate,words",
    [
        (lambda t: t["vhosts"][0]["routes"].append(dict(t["vhosts"][0]["routes"][1])), "appears twice"),
        (lambda t: t["vhosts"][0]["routes"][1].update(upstream="workers"), "unknown upstream 'workers'"),
        (lambda t: t["vhosts"][0]["routes"].insert(0, dict(t["vhosts"][0]["routes"][1], id="catch-all",
                                                           match=dict(kind="prefix", path="/_matrix", methods=[]))),
         "is never reached"),
    ],
)
def test_inconsistent_tables_are_refused(mutate, words):
    result = table("delegated_two_ports")
    mutate(result)
    with pytest.raises(RouteTableError, match=words):
        check_table(result)


def test_filter_wraps_errors():
    route_table_filter = route_table_plugin.FilterModule().filters()["route_table"]
    assert list(route_table_plugin.FilterModule().filters()) == ["route_table"]
    with pytest.raises(AnsibleFilterError, match="^route_table: "):
        route_table_filter(dict(BASE, homeserver_flavour="x"))
    assert route_table_filter(BASE) == route_table(BASE)


EXTRA = [
    {"vhost": "client", "id": "no-media-config", "kind": "exact", "path": "/_matrix/media/v3/config", "action": "refuse", "status": 403},
    {"vhost": "well_known", "id": "support", "kind": "exact", "path": "/.well-known/matrix/support", "action": "static",
     "body": '{"contacts":[]}'},
    {"vhost": "federation", "id": "metrics", "kind": "prefix", "path": "/_synapse/metrics", "action": "forward"},
]


def test_extra_routes_join_their_vhost_in_order():
    result = route_table(dict(BASE, extra_routes=EXTRA[1:]))
    assert routes_to(result, "well_known", "/.well-known/matrix/support")["body"] == '{"contacts":[]}'
    federation = [r["id"] for r in result["vhosts"][1]["routes"]]
    assert federation[-1] == "metrics"
    assert routes_to(result, "federation", "/_synapse/metrics/x")["upstream"] == "homeserver"


def test_an_extra_route_behind_a_broader_one_is_refused():
    with pytest.raises(RouteTableError, match="no-media-config is never reached, api-matrix matches first"):
        route_table(dict(BASE, extra_routes=EXTRA[:1]))


@pytest.mark.parametrize(
    "item,words",
    [
        ({"vhost": "client", "id": "x", "kind": "exact", "path": "/x"}, "lacks action"),
        ({"vhost": "client", "id": "x", "kind": "exact", "path": "x", "action": "refuse"}, "must start with /"),
        ({"vhost": "http", "id": "x", "kind": "exact", "path": "/x", "action": "refuse"}, "vhost 'http' is not served here"),
        ({"vhost": "client", "id": "x", "kind": "prefix", "path": "/x", "action": "static", "body": "{}"}, "kind exact"),
        ({"vhost": "client", "id": "x", "kind": "exact", "path": "/x", "action": "refuse", "status": 418}, "no Matrix error"),
        ({"vhost": "client", "id": "x", "kind": "exact", "path": "/x", "action": "forward", "upstream": "mas"}, "unknown upstream 'mas'"),
        ({"vhost": "client", "id": "x", "kind": "exact", "path": "/x", "action": "refuse", "behaviours": ["MX99"]}, "unknown behaviour IDs"),
        ({"vhost": "client", "id": "x", "kind": "prefix", "path": "/x", "action": "forward", "timeout": "tunnel"},
         "the homeserver has none"),
    ],
)
def test_bad_extra_routes_name_the_route(item, words):
    with pytest.raises(RouteTableError, match=re.escape(words)):
        route_table(dict(BASE, extra_routes=[item]))


@pytest.mark.parametrize(
    "shape,client,admin",
    [("delegated_two_ports", ["/_matrix", "/_synapse/client"], ["/_synapse/admin"]),
     ("palpo_socket", ["/_matrix", "/_palpo/client"], ["/_palpo/admin"])],
)
def test_paths_are_the_flavour_layout_the_routes_use(shape, client, admin):
    result = table(shape)
    assert (result["paths"]["client"], result["paths"]["admin"], result["paths"]["health"]) == (client, admin, "/health")
    routed = {r["match"]["path"] for v in result["vhosts"] for r in v["routes"]}
    assert set(client + admin + ["/health"]) <= routed


def test_services_have_their_pools_hosts_and_timeouts():
    """MX13 MX14: one listener per service on its own host, routed whole to its own pool; the SFU gets the tunnel class."""
    result = table("mas_and_rtc")
    pools = {pool["name"]: pool for pool in result["upstreams"]}
    assert [s["endpoint"] for s in pools["mas"]["servers"]] == ["127.0.0.1:8080"]
    assert [s["endpoint"] for s in pools["rtc_jwt"]["servers"]] == ["hs.internal:8081"]
    assert [s["endpoint"] for s in pools["rtc_sfu"]["servers"]] == ["[::1]:7880"]
    vhosts = {vhost["name"]: vhost for vhost in result["vhosts"]}
    expected = {"mas": ("auth.example.test", 443, "default", "MX13"), "rtc_jwt": ("rtc-jwt.example.test", 443, "default", "MX14"),
                "rtc_sfu": ("sfu.example.test", 8443, "tunnel", "MX14")}
    for name, (host, port, timeout, behaviour) in expected.items():
        vhost = vhosts[name]
        assert (vhost["hosts"], vhost["port"], vhost["tls"], vhost["any_host"]) == ([host], port, True, False)
        (route,) = vhost["routes"]
        assert (route["match"]["path"], route["upstream"], route["policy"]["timeout"]) == ("/", name, timeout)
        assert behaviour in route["behaviours"]
    assert result["ports"] == [443, 8443, 8448]


def test_mas_compat_routes_come_before_the_client_api():
    """MX13: the 12 compatibility prefixes go to MAS, ahead of /_matrix (which would shadow nothing else)."""
    routes = next(v for v in table("mas_and_rtc")["vhosts"] if v["name"] == "client")["routes"]
    ids = [r["id"] for r in routes]
    mas = [r for r in routes if r["id"].startswith("mas-")]
    assert len(mas) == 12 and {r["upstream"] for r in mas} == {"mas"}
    assert max(ids.index(r["id"]) for r in mas) < ids.index("api-matrix")
    assert all(r["match"]["kind"] == "prefix" for r in mas)


@pytest.mark.parametrize(
    "services,words",
    [
        ({"keycloak": {"host": "a.test", "port": 443, "upstream_address": "x", "upstream_port": 1}}, "unknown services"),
        ({"mas": {"host": "a.test", "port": 443, "upstream_address": "x"}}, "lacks upstream_port"),
        ({"mas": {"host": "a.test", "port": 70000, "upstream_address": "x", "upstream_port": 1}}, "1-65535"),
        ({"mas": {"host": "matrix.example.test", "port": 443, "upstream_address": "x", "upstream_port": 1}},
         "both answer matrix.example.test on port 443"),
        (["mas"], "must be a dict"),
    ],
)
def test_bad_services_are_named(services, words):
    with pytest.raises(RouteTableError, match=re.escape(words)):
        route_table(dict(BASE, services=services))


# --- worker pools (issue 20): endpoint classes of synapse_workers, routed by regex ---

def _workers_table(layout="one_of_each", **overrides):
    from ansible_collections.mxedge.matrix.plugins.module_utils import synapse_workers  # pylint: disable=import-outside-toplevel

    workers = synapse_workers.expand_layout(layout, ["hs1", "hs2"])
    pools = synapse_workers.worker_pools(workers, {"hs1": "10.0.0.1", "hs2": "10.0.0.2"})
    return route_table(dict(BASE, worker_pools=pools, **overrides))


# (listener, normalised path, route id) with the one_of_each layout, on two ports.
WORKER_ROUTING = [
    ("client", "/_matrix/client/v3/sync", "workers-sync"),
    ("client", "/_matrix/client/r0/sync", "workers-sync"),
    ("client", "/_matrix/client/v3/syncx", "api-matrix"),
    ("client", "/_matrix/client/v3/rooms/!r:example.test/send/m.room.message/t1", "workers-event-creation"),
    ("client", "/_matrix/client/v3/rooms/!r:example.test/messages", "workers-room-messages"),
    ("client", "/_matrix/client/v3/rooms/!r:example.test/typing/@a:example.test", "workers-typing"),
    ("client", "/_matrix/client/v3/sendToDevice/m.room.encrypted/t1", "workers-to-device"),
    ("client", "/_matrix/client/v3/keys/upload", "workers-device-lists"),
    ("client", "/_matrix/client/versions", "workers-client-reader"),
    ("client", "/_matrix/client/v1/media/download/example.test/abc", "workers-media"),
    ("client", "/_matrix/media/v3/upload", "workers-media"),
    ("client", "/_matrix/client/v3/logout", "api-matrix"),
    ("client", "/_synapse/admin/v1/users", "admin-synapse-admin"),
    ("federation", "/_matrix/federation/v1/send/txn1", "workers-federation-inbound"),
    ("federation", "/_matrix/federation/v1/version", "workers-federation-reader"),
    ("federation", "/_matrix/federation/v1/media/download/abc", "workers-media"),
    ("federation", "/_matrix/federation/v1/openid/userinfo", "federation-matrix"),
    ("federation", "/_matrix/client/v3/sync", "federation-matrix"),
]


@pytest.mark.parametrize("listener,path,route_id", WORKER_ROUTING, ids=[f"{r[0]}:{r[1]}" for r in WORKER_ROUTING])
def test_worker_routes_answer_their_classes(listener, path, route_id):
    route = routes_to(_workers_table(), listener, path)
    assert route and route["id"] == route_id


def test_worker_pools_fall_back_to_the_main_process_and_keep_stickiness():
    result = _workers_table("readers")
    pools = {pool["name"]: pool for pool in result["upstreams"]}
    sync = pools["workers_sync"]
    assert [s["endpoint"] for s in sync["servers"]] == ["10.0.0.1:18101", "10.0.0.2:18101"]
    assert (sync["balance"], sync["fallback"], sync["health_path"]) == ("roundrobin", "homeserver", "/health")
    assert pools["workers_client_reader"]["balance"] == "first"
    routes = {r["id"]: r for v in result["vhosts"] for r in v["routes"]}
    assert routes["workers-sync"]["policy"]["sticky"] == "user"
    assert routes["workers-federation-inbound"]["policy"]["sticky"] == "source"
    assert routes["workers-sync"]["match"]["path"] == "/_matrix/client/"
    assert routes["workers-federation-inbound"]["match"]["path"] == "/_matrix/federation/v1/send/"


def test_worker_routes_go_on_the_client_listener_in_single_port_mode():
    result = _workers_table(federation_port=443)
    client = next(v for v in result["vhosts"] if v["name"] == "client")
    ids = [r["id"] for r in client["routes"]]
    assert "workers-federation-inbound" in ids and ids.count("workers-media") == 1
    assert max(i for i, r in enumerate(ids) if r.startswith("workers-")) < ids.index("api-matrix")


def test_worker_routes_come_after_mas_so_login_stays_with_mas():
    services = SHAPES["mas_and_rtc"]["services"]
    result = _workers_table(services=services)
    assert routes_to(result, "client", "/_matrix/client/v3/login")["id"] == "mas-v3-login"
    assert routes_to(result, "client", "/_matrix/client/v3/register")["id"] == "workers-client-reader"


@pytest.mark.parametrize(
    "patterns,uri,matches",
    [
        (["^/_matrix/client/(r0|v3)/sync$"], "/_matrix/client/v3/sync?since=s1&timeout=30000", True),
        (["^/_matrix/client/(r0|v3)/sync$"], "/_matrix/client/v3/sync", True),
        (["^/_matrix/client/(r0|v3)/sync$"], "/_matrix/client/v3/sync/x", False),
        (["^/_matrix/client/(r0|v3)/sync$"], "/_matrix/client/v3/%73ync", False),
        (["^/_matrix/federation/v1/send/"], "/_matrix/federation/v1/send/txn%2F1", True),
        (["^/_matrix/media/", "^/_matrix/client/v1/media/"], "/_matrix/client/v1/media/config", True),
    ],
)
def test_regex_routes_check_the_raw_uri(patterns, uri, matches):
    """MX04: a regex route admits the raw URI (with its query) only when it matches the patterns as sent."""
    route = route_table(dict(BASE, worker_pools=[{
        "class": "probe", "pool": "workers_probe", "servers": [{"name": "w1", "address": "10.0.0.1", "port": 18101}],
        "sticky": None, "methods": [], "listeners": ["client"], "patterns": patterns}]))
    (probe,) = [r for v in route["vhosts"] for r in v["routes"] if r["id"] == "workers-probe"]
    assert bool(re.search(probe["match"]["raw_regex"], uri)) is matches


@pytest.mark.parametrize(
    "pool,words",
    [
        ({"class": "x"}, "lacks pool"),
        ({"class": "x", "pool": "p", "servers": [], "sticky": None, "methods": [], "listeners": ["client"],
          "patterns": ["^/_matrix/x"]}, "has no servers"),
        ({"class": "x", "pool": "p", "servers": [{"name": "w", "address": "a", "port": 1}], "sticky": None, "methods": [],
          "listeners": ["push"], "patterns": ["^/_matrix/x"]}, "not client or federation"),
        ({"class": "x", "pool": "p", "servers": [{"name": "w", "address": "a", "port": 1}], "sticky": None, "methods": [],
          "listeners": ["client"], "patterns": ["/_matrix/x"]}, "anchored with ^/"),
        ({"class": "x", "pool": "p", "servers": [{"name": "w", "address": "a", "port": 1}], "sticky": None, "methods": [],
          "listeners": ["client"], "patterns": ["^/_matrix/(x"]}, "is not a regular expression"),
        ({"class": "x", "pool": "p", "servers": [{"name": "w", "address": "a", "port": 1}], "sticky": "cookie",
          "methods": [], "listeners": ["client"], "patterns": ["^/_matrix/x"]}, "stickiness 'cookie'"),
    ],
)
def test_bad_worker_pools_are_named(pool, words):
    with pytest.raises(RouteTableError, match=re.escape(words)):
        route_table(dict(BASE, worker_pools=[pool]))
