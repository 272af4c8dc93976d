"""Fixtures for the forward_proxy scenario: the shared end-to-end helpers plus the squid host.

The shared conftest (molecule/shared/tests/conftest.py) is loaded from its own
file, not copied; its fixtures and helpers are re-exported here, so that
test_e2e's helpers (imported by the tests) find them under `conftest` too.
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "tests"
sys.path.insert(0, str(SHARED))
_spec = importlib.util.spec_from_file_location("mxedge_shared_conftest", SHARED / "conftest.py")
_shared = importlib.util.module_from_spec(_spec)
sys.modules["mxedge_shared_conftest"] = _shared
_spec.loader.exec_module(_shared)

# Everything the shared conftest defines (fixtures, helpers, constants) is
# re-exported: pytest finds the fixtures here, and test_e2e's
# "from conftest import ..." finds its helpers, whatever the shared file adds.
globals().update({k: v for k, v in vars(_shared).items() if not k.startswith("__")})
RUNNER = _shared.RUNNER
INVENTORY = _shared.INVENTORY
SCENARIO_DIR = _shared.SCENARIO_DIR

sys.path.insert(0, str(SHARED.parent / "lib"))
from scenario_hosts import Host  # noqa: E402  pylint: disable=wrong-import-position


class Squid(Host):
    """The forward proxy host: squid and the push gateway (push.test)."""

    ACCESS_LOG = "/var/log/squid/access.log"
    PUSH_LOG = "/var/log/mxedge-push.log"

    def __init__(self):
        (name,) = RUNNER.get_hosts("forward_proxies")
        super().__init__(name, INVENTORY)

    def lines(self, path):
        """Current number of lines of `path` (0 when it does not exist yet)."""
        out = self.host.run(f"wc -l < {path} 2>/dev/null || echo 0").stdout.strip()
        return int(out or 0)

    def since(self, path, offset):
        """The lines of `path` after the first `offset` ones."""
        return self.host.run(f"tail -n +{offset + 1} {path} 2>/dev/null").stdout.splitlines()


@pytest.fixture(scope="session")
def squid():
    return Squid()


def converge(extra_vars, limit, *args):
    """Run the shared converge playbook like Molecule, with extra vars and ansible-playbook options."""
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    playbook = (SCENARIO_DIR / ".." / "shared" / "converge.yml").resolve()
    command = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", INVENTORY, "--limit", limit,
               *args, str(playbook)]
    if extra_vars:
        command[-1:-1] = ["-e", json.dumps(extra_vars)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
