"""Preflight of the shared contract, run against the scenario's two hosts.

Good input: the derived values are what every proxy needs (checked byte for
byte). Bad input: the real entry point, playbooks/site.yml, stops with a message
naming the variable, and no task reports a change on either host.
"""

import json

import pytest
import testinfra.utils.ansible_runner
from conftest import INVENTORY, run_site

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY).get_hosts("homeservers")

EXPECTED = {
    "hs1": {
        "server_name_host": "example.test",
        "federation_separate": False,
        "public_baseurl": "https://matrix.example.test/",
        "delegation_target": "matrix.example.test:443",
        "well_known_server_body": '{"m.server":"matrix.example.test:443"}',
        "well_known_client_body": '{"m.homeserver":{"base_url":"https://matrix.example.test/"}}',
        "well_known_placement": "separate",
        "tls_ports": [443],
        "client_path_prefixes": ["/_matrix", "/_synapse/client"],
        "admin_path_prefixes": ["/_synapse/admin"],
        "max_body_bytes": 8388608,
        "tls_names": ["matrix.example.test", "example.test"],
    },
    "hs2": {
        "server_name_host": "other.test",
        "federation_separate": True,
        "public_baseurl": "https://other.test/",
        "delegation_target": "other.test:8448",
        "well_known_server_body": '{"m.server":"other.test:8448"}',
        "well_known_client_body": '{"m.homeserver":{"base_url":"https://other.test/"}}',
        "well_known_placement": "none",
        "tls_ports": [443, 8448],
        "client_path_prefixes": ["/_matrix", "/_synapse/client"],
        "admin_path_prefixes": ["/_synapse/admin"],
        "max_body_bytes": 8388608,
        "tls_names": ["other.test"],
    },
}


def test_derived_values(host):
    derived = json.loads(host.file("/root/mxedge-derived.json").content_string)
    expected = EXPECTED[host.check_output("hostname -s")]
    for key, value in expected.items():
        assert derived[key] == value, key
    # IPv6 listeners only where the host has IPv6 (containers here usually do not).
    assert derived["ipv6"] is ("inet6 ::1/128" in host.check_output("ip -6 addr show dev lo 2>/dev/null || true"))


def _failure_messages(report):
    for play in report["plays"]:
        for task in play["tasks"]:
            for result in task["hosts"].values():
                if result.get("failed"):
                    yield task["task"]["name"], str(result.get("msg", "")) + str(result.get("results", ""))


BAD_INPUTS = [
    ("matrix_server_name", "exa mple.test", "matrix_server_name"),
    ("matrix_server_name", "https://example.test", "matrix_server_name"),
    ("matrix_server_name", "[::1", "matrix_server_name"),
    ("matrix_homeserver_fqdn", "matrix.example.test:8448", "matrix_homeserver_fqdn"),
    ("matrix_client_port", 0, "matrix_client_port"),
    ("matrix_federation_port", 65536, "matrix_federation_port"),
    ("matrix_homeserver_flavour", "dendrite", "matrix_homeserver_flavour"),
    ("matrix_tls_source", "letsencrypt", "matrix_tls_source"),
    ("matrix_tls_certificate", "", "matrix_tls_certificate"),
    ("matrix_admin_allowed_networks", ["10.0.0.0/33"], "matrix_admin_allowed_networks"),
    ("matrix_admin_allowed_networks", ["not-a-network"], "matrix_admin_allowed_networks"),
    ("matrix_max_upload_size_mb", 0, "matrix_max_upload_size_mb"),
    ("matrix_identity_server_url", "http://id.example.test", "matrix_identity_server_url"),
    ("matrix_forward_proxy_https", "socks5://proxy.example.test:1080", "matrix_forward_proxy_https"),
    ("matrix_forward_proxy_no_proxy", ["bad host"], "matrix_forward_proxy_no_proxy"),
    ("matrix_homeserver_socket", "run/synapse.sock", "matrix_homeserver_socket"),
    ("matrix_request_id_header", "X Request ID", "matrix_request_id_header"),
    ("matrix_well_known_client_extra", {"m.homeserver": {"base_url": "https://evil.test/"}}, "matrix_well_known_client_extra"),
    ("matrix_proxy_flavour", "traefik", "matrix_proxy_flavour"),
]


# matrix_tls_source=acme is valid; these ACME settings are not.
BAD_ACME_INPUTS = [
    ({"matrix_acme_directory_url": "http://acme.example.test/directory"}, "matrix_acme_directory_url"),
    ({"matrix_acme_email": "not an address"}, "matrix_acme_email"),
    ({"matrix_acme_challenge_port": 8008}, "matrix_acme_challenge_port"),
    ({"matrix_acme_challenge_port": 80}, "matrix_acme_challenge_port"),
    ({"matrix_client_port": 80}, "matrix_client_port"),
    ({"matrix_homeserver_fqdn": "192.0.2.10"}, "not IP literals"),
]


# One wrong type or choice for every role playbooks/site.yml can run: each role's
# argument spec is checked by its preflight entry point, before the homeserver is
# installed. The homeserver and caddy values are ones only the argument spec
# catches (no assert reads them with these settings), so a run that went on
# would install the homeserver.
BAD_ROLE_INPUTS = [
    ({"homeserver_database_port": "five-four-three-two"}, "homeserver_database_port"),
    ({"homeserver_extra_config": ["enable_registration: true"]}, "homeserver_extra_config"),
    ({"homeserver_log_level": "VERBOSE"}, "homeserver_log_level"),
    ({"nginx_worker_connections": "many"}, "nginx_worker_connections"),
    ({"matrix_proxy_flavour": "apache", "apache_proxy_timeout": "slow"}, "apache_proxy_timeout"),
    ({"matrix_proxy_flavour": "caddy", "caddy_access_log": "sometimes"}, "caddy_access_log"),
    ({"matrix_proxy_flavour": "haproxy", "haproxy_maxconn": "lots"}, "haproxy_maxconn"),
    ({"matrix_proxy_flavour": "relayd", "relayd_health_check": "icmp"}, "relayd_health_check"),
    ({"matrix_tls_source": "self_signed", "tls_self_signed_days": "ten years"}, "tls_self_signed_days"),
    # Half a MAS or MatrixRTC configuration, and a MAS URL with a path (the proxy forwards whole hosts).
    ({"matrix_mas_url": "https://auth.example.test/"}, "matrix_mas_upstream"),
    ({"matrix_rtc_sfu_url": "https://sfu.example.test/", "matrix_rtc_sfu_upstream": "http://127.0.0.1:7880"}, "matrix_rtc_jwt_url"),
    ({"matrix_mas_url": "https://auth.example.test/sso/", "matrix_mas_upstream": "http://127.0.0.1:8080"}, "no path"),
]


def _assert_stops_before_any_change(extra_vars, named):
    proc, report = run_site(extra_vars)
    assert proc.returncode != 0
    stats = report["stats"]
    assert set(stats) == {"matrix-hs1", "matrix-hs2"}
    for name, counts in stats.items():
        assert counts["changed"] == 0, (name, counts)
        assert counts["failures"] >= 1, (name, counts)
    messages = list(_failure_messages(report))
    assert messages, proc.stdout[-2000:]
    assert all(named in message for _task, message in messages), messages
    return proc


@pytest.mark.parametrize(("variable", "value", "named"), BAD_INPUTS, ids=[f"{v}={x!r}" for v, x, _named in BAD_INPUTS])
def test_bad_input_stops_before_any_change(variable, value, named):
    _assert_stops_before_any_change({variable: value}, named)


@pytest.mark.parametrize(("extra", "named"), BAD_ACME_INPUTS, ids=[json.dumps(e) for e, _named in BAD_ACME_INPUTS])
def test_bad_acme_input_stops_before_any_change(extra, named):
    _assert_stops_before_any_change(dict(extra, matrix_tls_source="acme"), named)


@pytest.mark.parametrize(("extra", "named"), BAD_ROLE_INPUTS, ids=[json.dumps(e) for e, _named in BAD_ROLE_INPUTS])
def test_bad_role_input_stops_before_any_change(extra, named):
    _assert_stops_before_any_change(extra, named)


# A secret that breaks its rule: the message names the variable and the rule (no
# no_log hides it), and the value appears nowhere in the output.
@pytest.mark.parametrize("secret", ["short-but-secret-value", "a secret with spaces in it, long enough"])
def test_bad_secret_is_named_and_never_shown(secret):
    proc = _assert_stops_before_any_change({"homeserver_form_secret": secret}, "homeserver_form_secret breaks its rule")
    assert secret not in proc.stdout + proc.stderr
