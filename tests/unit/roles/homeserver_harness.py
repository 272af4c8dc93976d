"""Run parts of mxedge.matrix.homeserver with ansible-playbook on localhost.

relayd_harness.run_ansible with ansible-playbook's own options (--check), and the
raw output, so that a test can show a secret never reaches it.
"""

from __future__ import annotations

from pathlib import Path

from relayd_harness import run_ansible


def run(base: Path, plays: list, hosts: dict, *options: str, timeout: int = 600):
    """Run ``plays`` against ``hosts`` ({name: hostvars}), all local, with ansible-playbook ``options``.
    Returns (returncode, parsed json callback output, stdout + stderr)."""
    returncode, result, proc = run_ansible(base, plays, hosts, options=options, timeout=timeout)
    return returncode, result, proc.stdout + proc.stderr


def task_result(result, host, name):
    """The result of the task called ``name`` (without the role prefix) for ``host``, or None."""
    for play in result.get("plays", []):
        for task in play.get("tasks", []):
            if task["task"]["name"].split(" : ", 1)[-1] == name and host in task.get("hosts", {}):
                return task["hosts"][host]
    return None
