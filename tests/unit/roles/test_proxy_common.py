"""mxedge.matrix.proxy_common, the skeleton every proxy role includes, run for real on localhost.

Preflight: each flavour's preflight (which includes proxy_common's) refuses what it
cannot render or place, naming the variable or routes and the allowed values; the
route-table capabilities are also checked with tables no shared variable can ask for
yet (methods, stickiness, pools of several servers). Publish and prune: the table's
bodies land byte for byte under the flavour's names, and what the table no longer
serves goes, while kept files and the directories of published files stay.
"""

import json

import pytest
import yaml
from relayd_harness import host_failures, run_playbook

BASE = {
    "matrix_server_name": "example.test",
    "matrix_homeserver_fqdn": "matrix.example.test",
    "matrix_tls_certificate": "/etc/ssl/mxedge-test/fullchain.pem",
    "matrix_tls_certificate_key": "/etc/ssl/mxedge-test/privkey.pem",
}

FLAVOUR_PLAYBOOK = """
- name: Run a flavour's preflight, one variable set per host
  hosts: all
  gather_facts: true
  gather_subset: [min, network]
  tasks:
    - name: Pretend another system
      ansible.builtin.set_fact:
        ansible_facts: "{{ ansible_facts | combine({'os_family': mx_os_family}) }}"
      when: mx_os_family is defined
    - name: Run the role's preflight
      ansible.builtin.include_role:
        name: "mxedge.matrix.{{ mx_flavour }}"
        tasks_from: preflight
"""

# host -> (variables, failing task, message fragments)
REFUSED = {
    "caddy_backtick": (
        {"mx_flavour": "caddy", "matrix_well_known_client_extra": {"org.example.note": "a `quoted` word"}},
        "Assert the route table asks only for what the role renders",
        ['"`"', "mxedge.matrix.caddy cannot render", 'a body without "`", "{$"', "matrix_well_known_client_extra"],
    ),
    "haproxy_long_body": (
        {"mx_flavour": "haproxy", "matrix_well_known_client_extra": {"org.example.pad": "x" * 15000}},
        "Assert the route table asks only for what the role renders",
        ["/.well-known/matrix/client", "a body of at most 14336 bytes", "matrix_well_known_client_extra"],
    ),
    # The documents are served inside the client frontend: HAProxy dropped this extra without a word before.
    "haproxy_well_known_inside_client": (
        {"mx_flavour": "haproxy", "matrix_server_name": "matrix.example.test", "haproxy_well_known_vhost_extra": "x"},
        "Assert every per-vhost extra has a listener to go into",
        ["haproxy_well_known_vhost_extra is set", "served inside the client frontend", "haproxy_client_vhost_extra"],
    ),
    "nginx_federation_single_port": (
        {"mx_flavour": "nginx", "matrix_federation_port": 443, "nginx_federation_vhost_extra": "add_header X-F 1;"},
        "Assert every per-vhost extra has a listener to go into",
        ["nginx_federation_vhost_extra is set", "matrix_federation_port == matrix_client_port", "nginx_client_vhost_extra"],
    ),
    "apache_well_known_not_served": (
        {"mx_flavour": "apache", "matrix_well_known_serve": False, "apache_well_known_vhost_extra": "Header set X 1"},
        "Assert every per-vhost extra has a listener to go into",
        ["apache_well_known_vhost_extra is set", "virtual host of its own", "matrix_well_known_serve is false"],
    ),
    "nginx_other_system": (
        {"mx_flavour": "nginx", "mx_os_family": "RedHat"},
        "Assert the host runs a system the role supports",
        ["mxedge.matrix.nginx installs nginx", 'ansible_facts.os_family="RedHat"', "allowed: Debian", "matrix_proxy_flavour"],
    ),
}


@pytest.fixture(scope="module")
def refused(tmp_path_factory):
    out = tmp_path_factory.mktemp("proxy-common-preflight")
    hosts = {name: dict(BASE, **v) for name, (v, _t, _f) in REFUSED.items()}
    returncode, result, _stderr = run_playbook(out, yaml.safe_load(FLAVOUR_PLAYBOOK), hosts)
    assert returncode != 0
    return result


@pytest.mark.parametrize("host", list(REFUSED))
def test_flavour_preflight_refuses_with_a_clear_message(refused, host):
    _variables, task, fragments = REFUSED[host]
    failures = host_failures(refused, host)
    assert len(failures) == 1, failures
    failed_task, message = failures[0]
    message = " ".join(message.split())
    assert failed_task == task, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


CAPABILITIES = {"methods": False, "sticky": [], "balance": ["first"], "pool_servers": 1, "static_body_max": 0,
                "static_body_forbidden": [], "error_body_forbidden": [], "why": {"sticky": "Not rendered yet."}}

TABLE_PLAYBOOK = """
- name: Check route tables the shared variables cannot ask for yet
  hosts: all
  gather_facts: false
  roles:
    - mxedge.matrix.matrix
  tasks:
    - name: Change the route table as this host asks (its pools, its first route)
      ansible.builtin.set_fact:
        _matrix_routes: >-
          {{{{ _matrix_routes | combine(mx_change, {{'vhosts': [_matrix_routes.vhosts[0] | combine({{'routes':
               [_matrix_routes.vhosts[0].routes[0] | combine(mx_route_change, recursive=true)] + _matrix_routes.vhosts[0].routes[1:]}})]
               + _matrix_routes.vhosts[1:]}}) }}}}
    - name: Run proxy_common's preflight with fixed capabilities
      ansible.builtin.include_role:
        name: mxedge.matrix.proxy_common
        tasks_from: preflight
      vars:
        proxy_common_role: mxedge.matrix.example
        proxy_common_os_fact: os_family
        proxy_common_os_allowed: ["{{{{ ansible_facts['os_family'] }}}}"]
        proxy_common_os_supported: runs anywhere
        proxy_common_vhost_noun: listener
        proxy_common_vhost_extras: []
        proxy_common_capabilities: {capabilities}
"""


def _pool(servers, balance="first"):
    return {"name": "homeserver", "health_path": "/health", "balance": balance, "fallback": None,
            "servers": [{"name": f"s{i}", "endpoint": f"127.0.0.1:{8008 + i}", "address": "127.0.0.1", "port": 8008 + i,
                         "socket": ""} for i in range(servers)]}


# host -> (change to the route table, change to its first route, message fragments); "fine" passes.
TABLES = {
    "several_servers": ({"upstreams": [_pool(2)]}, {}, ["upstream pools of several servers (homeserver)",
                                                        "pools of at most 1 server(s)"]),
    "balance": ({"upstreams": [_pool(1, "least_conn")]}, {}, ["balancing by least_conn (homeserver)", "balancing by first"]),
    "methods": ({}, {"match": {"methods": ["GET"]}}, ["routes restricted to some methods (", "allowed is routes for any method"]),
    "sticky": ({}, {"policy": {"sticky": "user"}}, ["stickiness (", "allowed is no sticky route. Not rendered yet."]),
    "fine": ({}, {}, []),
}


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    out = tmp_path_factory.mktemp("proxy-common-tables")
    hosts = {name: dict(BASE, mx_change=change, mx_route_change=route) for name, (change, route, _f) in TABLES.items()}
    _returncode, result, _stderr = run_playbook(out, yaml.safe_load(TABLE_PLAYBOOK.format(capabilities=json.dumps(CAPABILITIES))), hosts)
    return result


@pytest.mark.parametrize("host", list(TABLES))
def test_capabilities_refuse_what_the_flavour_cannot_render(tables, host):
    failures = host_failures(tables, host)
    fragments = TABLES[host][2]
    if not fragments:
        assert not failures and tables["stats"][host]["failures"] == 0, failures
        return
    assert [task for task, _message in failures] == ["Assert the route table asks only for what the role renders"]
    message = " ".join(failures[0][1].split())
    assert "mxedge.matrix.example cannot render" in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


PUBLISH_PLAYBOOK = """
- name: Publish the route table's bodies into a scratch tree, then prune it
  hosts: all
  gather_facts: false
  roles:
    - mxedge.matrix.matrix
  vars:
    mx_documents:
      static_dir: "{out}/www/static"
      static_name: [vhost, id]
      static_separator: "-"
      error_dir: "{out}/www/errors"
      error_suffix: .json
      group: root
      notify: []
      prune: ["{out}/www"]
      keep: ["{out}/www/errors/400"]
      remove: ["{out}/old"]
  tasks:
    - name: Publish
      ansible.builtin.include_role:
        name: mxedge.matrix.proxy_common
        tasks_from: publish
      vars:
        proxy_common_documents: "{{{{ mx_documents }}}}"
    - name: Leave stale files, a stale directory, a kept file and a path of an earlier release
      ansible.builtin.shell: |
        mkdir -p {out}/www/old-layout/deep {out}/old
        touch {out}/www/old-layout/deep/file {out}/www/static/client-gone {out}/www/errors/400 {out}/www/.hidden
      changed_when: true
    - name: Prune
      ansible.builtin.include_role:
        name: mxedge.matrix.proxy_common
        tasks_from: prune
      vars:
        proxy_common_documents: "{{{{ mx_documents }}}}"
    - name: Record the table
      ansible.builtin.copy:
        dest: "{out}/table.json"
        content: "{{{{ _matrix_routes | to_json }}}}"
        mode: "0644"
"""


def test_publish_and_prune(tmp_path):
    host = dict(BASE, matrix_extra_routes=[{"vhost": "well_known", "id": "support", "kind": "exact",
                                            "path": "/.well-known/matrix/support", "action": "static", "body": '{"a":"$x"}'}])
    returncode, result, stderr = run_playbook(tmp_path / "run", yaml.safe_load(PUBLISH_PLAYBOOK.format(out=tmp_path)),
                                              {"publish": host})
    assert returncode == 0, (host_failures(result, "publish"), stderr[-2000:])
    table = json.loads((tmp_path / "table.json").read_text())
    expected = {f"www/static/{vhost['name']}-{route['id']}": route["body"]
                for vhost in table["vhosts"] for route in vhost["routes"] if route["action"] == "static"}
    expected.update({f"www/errors/{status}.json": error["body"] for status, error in table["errors"].items()})
    assert "www/static/well_known-support" in expected
    found = {str(p.relative_to(tmp_path)): p.read_text() for p in (tmp_path / "www").rglob("*") if p.is_file()}
    assert found == dict(expected, **{"www/errors/400": ""})
    assert sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "www").iterdir()) == ["www/errors", "www/static"]
    assert not (tmp_path / "old").exists()
