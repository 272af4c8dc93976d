"""Run parts of mxedge.matrix.homeserver with ansible-playbook on localhost.

Like relayd_harness.run_playbook (whose collections tree and result helpers it
reuses), plus ansible-playbook's own options (--check), and the raw output, so
that a test can show a secret never reaches it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from relayd_harness import REPO, ansible_playbook, collections_tree


def run(base: Path, plays: list, hosts: dict, *options: str, timeout: int = 600):
    """Run ``plays`` against ``hosts`` ({name: hostvars}), all local, with ansible-playbook ``options``.
    Returns (returncode, parsed json callback output, stdout + stderr)."""
    base.mkdir(parents=True, exist_ok=True)
    inventory = {"all": {"hosts": hosts,
                         "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}
    (base / "inventory.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    (base / "playbook.yml").write_text(yaml.safe_dump(plays, sort_keys=False))
    env = dict(os.environ)
    env.update({
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(collections_tree(base)),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
        "ANSIBLE_LOCAL_TEMP": str(base / "tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
    })
    proc = subprocess.run(
        [ansible_playbook(), "-i", str(base / "inventory.yml"), *options, str(base / "playbook.yml")],
        cwd=base, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )
    try:
        result = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"ansible-playbook gave no json (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}") from exc
    return proc.returncode, result, proc.stdout + proc.stderr


def task_result(result, host, name):
    """The result of the task called ``name`` (without the role prefix) for ``host``, or None."""
    for play in result.get("plays", []):
        for task in play.get("tasks", []):
            if task["task"]["name"].split(" : ", 1)[-1] == name and host in task.get("hosts", {}):
                return task["hosts"][host]
    return None
