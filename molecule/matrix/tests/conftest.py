"""Helpers of the matrix scenario's tests: the collection's real entry point, run again."""

import json
import os
import subprocess
import sys

import pytest

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
PROJECT = os.environ["MOLECULE_PROJECT_DIRECTORY"]


def run_site(extra_vars, limit="homeservers", check_mode=False):
    """Run playbooks/site.yml on `limit`; returns (process, the json callback's report)."""
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_FORCE_COLOR="0")
    command = [
        os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
        "-i", INVENTORY, "--limit", limit,
        "-e", json.dumps({"mxedge_matrix_hosts": "homeservers", **extra_vars}),
        os.path.join(PROJECT, "playbooks", "site.yml"),
    ]
    if check_mode:
        command.append("--check")
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    try:
        return proc, json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"ansible-playbook did not run its plays: {proc.stderr[-2000:]}")
