"""mxedge.matrix.relayd's preflight, run for real by ansible-playbook on localhost.

On this Linux machine the role must refuse to run, with a message that names
the operating system, and change nothing. The OpenBSD-only checks behind that
gate are reached by replacing the gathered facts with OpenBSD ones for a host
(set_fact ansible_facts): the role then fails in its own preflight, or, with
valid values, in install.yml, where it looks for /usr/sbin/relayd. Nothing of
relayd itself runs here.
"""

from __future__ import annotations

import pytest

from relayd_harness import ansible_playbook, host_failures, run_playbook

pytestmark = pytest.mark.skipif(ansible_playbook() is None, reason="ansible-playbook is not installed")

COMMON = {
    "matrix_server_name": "example.test",
    "matrix_homeserver_fqdn": "matrix.example.test",
    "matrix_tls_certificate": "/etc/ssl/mxedge-test.crt",
    "matrix_tls_certificate_key": "/etc/ssl/private/mxedge-test.key",
    "matrix_proxy_mode": "dedicated",
}

# host -> (extra host variables, fake OpenBSD release or None, failing task, message fragments)
CASES = {
    "linux": ({}, None, "Assert the host runs a system the role supports",
              ["runs only on OpenBSD", 'ansible_facts.system="Linux"', "matrix_proxy_flavour"]),
    "old_release": ({}, "7.2", "Assert the OpenBSD release is recent enough",
                    ["OpenBSD 7.4 or later", "runs OpenBSD 7.2"]),
    "unix_socket": ({"matrix_homeserver_socket": "/run/synapse/main.sock"}, "7.6",
                    "Assert the homeserver is reached over TCP",
                    ['matrix_homeserver_socket="/run/synapse/main.sock"', "cannot forward to a UNIX socket",
                     'Allowed with matrix_proxy_flavour=relayd is ""', "127.0.0.1:8008"]),
    # MX15: relayd owns its relayd.conf; alongside (the shared default) is refused, naming the variable.
    "alongside": ({"matrix_proxy_mode": "alongside"}, "7.6", "Assert relayd runs on a proxy host of its own (matrix_proxy_mode=dedicated)",
                  ['matrix_proxy_mode="alongside"', 'allowed with matrix_proxy_flavour=relayd is "dedicated" only']),
    "prefork": ({"relayd_prefork": 40}, "7.6", "Assert relayd_prefork is within relayd's limits",
                ["relayd_prefork=40", "from 1 to 32"]),
    "headerlen": ({"relayd_http_headerlen": 200000}, "7.6", "Assert relayd_http_headerlen is within relayd's limits",
                  ["relayd_http_headerlen=200000", "from 8192 to 131072"]),
    "session_timeout": ({"relayd_session_timeout": 60}, "7.6", "Assert relayd_session_timeout outlasts a /sync long-poll",
                        ["relayd_session_timeout=60", "from 180"]),
    "tunnel_timeout": ({"relayd_tunnel_timeout": 0}, "7.6", "Assert relayd_tunnel_timeout is a number of seconds relayd accepts",
                       ["relayd_tunnel_timeout=0", "from 1 to"]),
    # MX16: relayd cannot route Synapse workers (docs/relayd.md); the shared capability check names the routes.
    "workers": ({"matrix_worker_hosts": {"hs1": "10.0.0.1"},
                 "matrix_workers": [{"name": "sync1", "type": "sync", "host": "hs1", "port": 18101}]},
                "7.6", "Assert the route table asks only for what the role renders",
                ["routes matched by regular expressions", "workers-sync", "mxedge.matrix.relayd cannot render"]),
    # MAS and both MatrixRTC services (MX13, MX14): relayd renders all of them, preflight passes.
    "services": ({"matrix_mas_url": "https://auth.example.test/", "matrix_mas_upstream": "http://127.0.0.1:8080",
                  "matrix_rtc_jwt_url": "https://rtc-jwt.example.test/", "matrix_rtc_jwt_upstream": "http://127.0.0.1:8081",
                  "matrix_rtc_sfu_url": "https://sfu.example.test:7443/", "matrix_rtc_sfu_upstream": "http://127.0.0.1:7880"},
                 "7.6", "Assert relayd and httpd are installed", ["/usr/sbin/relayd", "OpenBSD base system"]),
    "check_timing": ({"relayd_check_timeout": 10000}, "7.6", "Assert the health check timing is one relayd accepts",
                     ["relayd_check_timeout=10000", "global timeout exceeds interval"]),
    "httpd_name": ({"relayd_httpd_service": "httpd"}, "7.6",
                   "Assert the httpd instance has a name and a loopback port of its own",
                   ['relayd_httpd_service="httpd"', 'other than "httpd"']),
    "httpd_port": ({"relayd_httpd_port": 8008}, "7.6",
                   "Assert the httpd instance has a name and a loopback port of its own",
                   ["relayd_httpd_port=8008", "nor matrix_homeserver_port"]),
    "quote": ({"relayd_request_id_value": 'a"b'}, "7.6", "Assert the strings relayd.conf quotes carry no quote or newline",
              ["relayd_request_id_value=", "without double quotes"]),
    "federation_extra": ({"matrix_federation_port": 443, "relayd_federation_relay_extra": "session timeout 900"}, "7.6",
                         "Assert every per-vhost extra has a listener to go into",
                         ["relayd_federation_relay_extra", "matrix_federation_port == matrix_client_port"]),
    "well_known_extra": ({"matrix_well_known_serve": False, "relayd_well_known_protocol_extra": "tcp nodelay"}, "7.6",
                         "Assert every per-vhost extra has a listener to go into",
                         ["relayd_well_known_protocol_extra", "matrix_well_known_serve is"]),
    "listen": ({"relayd_listen_ipv4": ["0.0.0.0:443"]}, "7.6", "Assert the listen addresses are IP literals",
               ["relayd_listen_ipv4", "without brackets or ports"]),
    "sysctl": ({"relayd_sysctl_minimums": {"kern.maxfiles": "lots"}}, "7.6",
               "Assert relayd_sysctl_minimums holds kernel variables and numbers", ["relayd_sysctl_minimums", "non-negative"]),
    "acme": ({"matrix_tls_source": "acme"}, "7.6", "Assert matrix_tls_source is one relayd supports",
             ['matrix_tls_source="acme"', "allowed with matrix_proxy_flavour=relayd are files and self_signed",
              "acme-client(8)"]),
    # self_signed passes preflight: install.yml (before the tls role) finds no relayd on this machine.
    "self_signed": ({"matrix_tls_source": "self_signed"}, "7.6", "Assert relayd and httpd are installed",
                    ["/usr/sbin/relayd", "OpenBSD base system"]),
    # Valid values: preflight passes, install.yml finds no relayd on this machine.
    "valid": ({}, "7.6", "Assert relayd and httpd are installed",
              ["/usr/sbin/relayd", "OpenBSD base system"]),
}


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    base = tmp_path_factory.mktemp("relayd-preflight")
    hosts = {}
    for name, (extra, release, _task, _fragments) in CASES.items():
        hostvars = dict(COMMON)
        hostvars.update(extra)
        if release:
            hostvars["fake_openbsd_release"] = release
        hosts[name] = hostvars
    hosts["preflight_entry"] = dict(COMMON, fake_openbsd_release="7.6")
    fake = {
        "name": "Pretend to be OpenBSD",
        "ansible.builtin.set_fact": {
            "ansible_facts": "{{ ansible_facts | combine({'system': 'OpenBSD', 'os_family': 'OpenBSD', "
                             "'distribution': 'OpenBSD', 'distribution_version': fake_openbsd_release}) }}"},
        "when": "fake_openbsd_release is defined",
    }
    # The preflight-only play first: ansible-playbook stops after a play in which every host failed.
    plays = [
        {"name": "Run only the preflight entry point, as playbooks/site.yml does", "hosts": "preflight_entry",
         "gather_facts": True, "gather_subset": ["min", "network"], "pre_tasks": [fake],
         "tasks": [{"name": "Check the relayd inputs", "ansible.builtin.include_role": {
             "name": "mxedge.matrix.relayd", "tasks_from": "preflight.yml"}}]},
        {"name": "Apply mxedge.matrix.relayd", "hosts": "all:!preflight_entry", "gather_facts": True, "gather_subset": ["min", "network"],
         "pre_tasks": [fake], "roles": ["mxedge.matrix.relayd"]},
    ]
    returncode, result, stderr = run_playbook(base, plays, hosts)
    assert returncode != 0, "every host but preflight_entry must fail"
    return result


@pytest.mark.parametrize("host", list(CASES))
def test_fails_in_the_right_place_with_a_clear_message(outcome, host):
    _extra, _release, task, fragments = CASES[host]
    failures = host_failures(outcome, host)
    assert len(failures) == 1, failures
    failed_task, message = failures[0]
    assert failed_task == task
    for fragment in fragments:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize("host", list(CASES) + ["preflight_entry"])
def test_nothing_changed(outcome, host):
    stats = outcome["stats"][host]
    assert stats["changed"] == 0, stats


def test_preflight_entry_point_passes_with_valid_values(outcome):
    assert host_failures(outcome, "preflight_entry") == []
    assert outcome["stats"]["preflight_entry"]["failures"] == 0
