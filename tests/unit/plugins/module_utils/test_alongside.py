"""Conflicts between the Matrix listeners and the operator's own sites (docs/alongside.md)."""

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.mxedge.matrix.plugins.filter.alongside_conflicts import alongside_conflicts
from ansible_collections.mxedge.matrix.plugins.module_utils.alongside import AlongsideError, conflicts
from ansible_collections.mxedge.matrix.plugins.module_utils.matrix_routes import route_table

BASE = {
    "homeserver_flavour": "synapse",
    "homeserver_fqdn": "matrix.example.test",
    "server_name_host": "example.test",
    "client_port": 443,
    "federation_port": 8448,
    "well_known_placement": "separate",
    "well_known_port": 443,
    "well_known_server_body": '{"m.server":"matrix.example.test:443"}',
    "well_known_client_body": '{"m.homeserver":{"base_url":"https://matrix.example.test/"}}',
    "admin_allowed_networks": [],
    "max_body_bytes": 1048576,
    "homeserver_address": "127.0.0.1",
    "homeserver_port": 8008,
    "homeserver_socket": "",
    "acme": False,
    "acme_challenge_address": "127.0.0.1",
    "acme_challenge_port": 8402,
    "http_port": 80,
    "https_redirect_port_suffix": "",
}


def table(**changes):
    return route_table(dict(BASE, **changes))


def site(port, *names, where="/etc/proxy/site:1", default=False):
    return {"port": port, "names": list(names), "default": default, "where": where}


# (case, table changes, operator listeners, share_ports, fragments every message must hold, message count)
CASES = [
    ("nothing of the operator's", {}, [], True, [], 0),
    ("other names on the same port", {}, [site(443, "unrelated.test"), site(80, "*")], True, [], 0),
    ("same name on another port", {}, [site(8443, "matrix.example.test")], True, [], 0),
    ("client name taken", {}, [site(443, "matrix.example.test", where="/etc/x:4")], True,
     ["matrix_homeserver_fqdn on matrix_client_port", "matrix.example.test on port 443", "/etc/x:4"], 1),
    ("name compared case-insensitively", {}, [site(443, "Matrix.Example.Test.")], True, ["matrix.example.test"], 1),
    ("federation listener answers every host", {}, [site(8448, "other.test", where="/etc/y:2")], True,
     ["matrix_federation_port", "every host name on port 8448", "/etc/y:2"], 1),
    ("acme listener on 80 beside the operator's", {"acme": True}, [site(80, "*")], True,
     ["matrix_tls_source=acme", "port 80"], 1),
    ("own well-known while the operator serves the base domain", {}, [site(443, "example.test", "www.example.test")], True,
     ["matrix_well_known_site=operator", "example.test on port 443"], 1),
    ("operator site includes the snippet", {"well_known_site": "operator"}, [site(443, "www.example.test", "example.test")],
     True, [], 0),
    ("snippet without an operator site", {"well_known_site": "operator"}, [site(443, "unrelated.test")], True,
     ["matrix_well_known_site=operator", "example.test on port 443", "matrix_well_known_site=own"], 1),
    ("snippet site on the wrong port", {"well_known_site": "operator"}, [site(8443, "example.test")], True,
     ["no site"], 1),
    ("port not shareable", {"well_known_site": "operator"},
     [site(443, "example.test", "unrelated.test", where="frontend www (/etc/haproxy/haproxy.cfg:20)")], False,
     ["port 443", "frontend www", "cannot share a port"], 1),
    ("port not shareable, other ports free", {"well_known_site": "operator"}, [site(443, "example.test"), site(9000, "*")],
     False, ["port 443"], 1),
]


@pytest.mark.parametrize("changes, listeners, share_ports, fragments, count",
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_conflicts(changes, listeners, share_ports, fragments, count):
    messages = conflicts(listeners, table(**changes), share_ports=share_ports)
    assert len(messages) == count, messages
    for message in messages:
        for fragment in fragments:
            assert fragment in message


def test_snippet_vhost_is_not_a_listener_port():
    own, operator = table(federation_port=443), table(federation_port=443, well_known_site="operator")
    assert [v["snippet"] for v in operator["vhosts"]] == [False, True]
    assert own["ports"] == operator["ports"] == [443]
    separate = table(client_port=8443, federation_port=8448, well_known_site="operator")
    assert separate["ports"] == [8443, 8448]


@pytest.mark.parametrize("bad", [[{"names": ["a"]}], [{"port": "x"}], [{"port": 443, "names": "a"}], ["x"]])
def test_bad_listeners(bad):
    with pytest.raises(AlongsideError):
        conflicts(bad, table())
    with pytest.raises(AnsibleFilterError, match="alongside_conflicts"):
        alongside_conflicts(bad, table())


def test_operator_site_needs_the_separate_placement():
    with pytest.raises(Exception, match="well_known_site operator"):
        table(well_known_placement="client", well_known_site="operator")
