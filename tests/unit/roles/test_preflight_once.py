"""Each role's preflight runs once per run for the same inputs.

playbooks/site.yml runs every role's preflight in its first play; when a role then
runs (tasks/main.yml), it skips its preflight if this run has already passed it on
this host with the same digest of the matrix_* and the role's own variables
(_<role>_preflight_digest, recorded as _<role>_preflight_passed at the end of
tasks/preflight.yml). Shown for the homeserver's preflight, run for real on
localhost: the digest a pass records is the one the role computes again for the
same values, and a changed variable changes it, so the checks run again. Every
role applies the same guard (checked in its files).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from homeserver_harness import run, task_result
from relayd_harness import ansible_playbook, host_failures

REPO = Path(__file__).resolve().parents[3]
ROLES = ["homeserver", "tls", "nginx", "apache", "caddy", "haproxy", "relayd"]

COMMON = {
    "matrix_server_name": "example.test",
    "matrix_tls_certificate": "/dev/null",
    "matrix_tls_certificate_key": "/dev/null",
}


@pytest.mark.parametrize("role", ROLES)
def test_every_role_guards_its_preflight_with_the_digest(role):
    tasks = yaml.safe_load((REPO / "roles" / role / "tasks" / "main.yml").read_text())
    (include,) = [task for task in tasks if task.get("ansible.builtin.include_tasks", {}).get("file") == "preflight.yml"]
    assert include["when"] == f"_{role}_preflight_passed | default('') != _{role}_preflight_digest"
    assert tasks.index(include) == 0, "the preflight comes before anything that changes the host"
    last = yaml.safe_load((REPO / "roles" / role / "tasks" / "preflight.yml").read_text())[-1]
    assert last["ansible.builtin.set_fact"] == {f"_{role}_preflight_passed": f"{{{{ _{role}_preflight_digest }}}}"}
    digest = yaml.safe_load((REPO / "roles" / role / "vars" / "main.yml").read_text())[f"_{role}_preflight_digest"]
    assert f"'^(matrix|{role})_'" in digest and "_matrix_checked_digest" in digest


@pytest.mark.skipif(ansible_playbook() is None, reason="ansible-playbook is not installed")
def test_the_same_inputs_skip_the_checks_and_a_changed_one_runs_them(tmp_path):
    plays = [{
        "name": "preflight, then the role's own condition",
        "hosts": "all",
        "gather_facts": True,
        "tasks": [
            {"name": "Preflight", "ansible.builtin.include_role": {
                "name": "mxedge.matrix.homeserver", "tasks_from": "preflight", "public": True}},
            {"name": "Change an input", "ansible.builtin.set_fact": {"homeserver_extra_config": {"x_mxedge_test": 1}},
             "when": "inventory_hostname == 'changed'"},
            {"name": "Would the role run its preflight again",
             "ansible.builtin.debug": {"msg": "{{ _homeserver_preflight_passed | default('') != _homeserver_preflight_digest }}"}},
        ],
    }]
    hosts = {"same": dict(COMMON), "changed": dict(COMMON)}
    returncode, result, output = run(tmp_path, plays, hosts)
    assert returncode == 0, (host_failures(result, "same"), host_failures(result, "changed"), output[-3000:])
    assert task_result(result, "same", "Would the role run its preflight again")["msg"] is False
    assert task_result(result, "changed", "Would the role run its preflight again")["msg"] is True
