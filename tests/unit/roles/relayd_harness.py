"""Run ansible-playbook on localhost (connection local) for the relayd tests.

The collection is made visible as mxedge.matrix through a throw-away
collections tree whose only entry links to this checkout, so the tests need
neither the bootstrap's .cache nor Galaxy. Results come from the json stdout
callback: per host, the failed task's message, and the recap counters.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
ROLE = REPO / "roles" / "relayd"


def ansible_playbook():
    candidate = Path(sys.executable).with_name("ansible-playbook")
    if candidate.exists():
        return str(candidate)
    return shutil.which("ansible-playbook")


def collections_tree(base: Path) -> Path:
    tree = base / "collections"
    link = tree / "ansible_collections" / "mxedge" / "matrix"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(REPO)
    return tree


def run_ansible(base: Path, plays: list, hosts: dict, group_vars: dict | None = None, options=(), timeout: int = 600):
    """Run ``plays`` against ``hosts`` ({name: hostvars}), all local, with ansible-playbook ``options``.
    ``group_vars`` go to the group "all" (below host variables in precedence).
    Returns (returncode, parsed json callback output, the finished process)."""
    base.mkdir(parents=True, exist_ok=True)
    inventory = {
        "all": {
            "hosts": hosts,
            "vars": dict(group_vars or {}, ansible_connection="local", ansible_python_interpreter=sys.executable),
        }
    }
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
    return proc.returncode, result, proc


def run_playbook(base: Path, plays: list, hosts: dict, group_vars: dict | None = None, timeout: int = 600):
    """run_ansible without options; returns (returncode, parsed json callback output, stderr)."""
    returncode, result, proc = run_ansible(base, plays, hosts, group_vars, timeout=timeout)
    return returncode, result, proc.stderr


def host_failures(result, host):
    """(task name, message) of every failed task result of ``host``."""
    out = []
    for play in result.get("plays", []):
        for task in play.get("tasks", []):
            res = task.get("hosts", {}).get(host)
            if res and res.get("failed"):
                message = res.get("msg", "")
                # A loop: the messages of the failed items.
                items = [item.get("msg", "") for item in res.get("results", []) if item.get("failed")]
                if items:
                    message = " | ".join(items)
                # The json callback prefixes role tasks with "<role> : ".
                out.append((task["task"]["name"].split(" : ", 1)[-1], message))
    return out


def host_task_names(result, host, status=("ok", "changed")):
    names = []
    for play in result.get("plays", []):
        for task in play.get("tasks", []):
            res = task.get("hosts", {}).get(host)
            if res is None or res.get("failed") or res.get("skipped"):
                continue
            names.append(task["task"]["name"].split(" : ", 1)[-1])
    return names
