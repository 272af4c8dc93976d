"""Helpers for the edge scenario: one homeserver host, four proxy hosts (one per flavour).

Requests run with curl on the homeserver host, addressed to one proxy with
``--resolve`` (so the proxy sees a real container address as its client), or
from the controller for the WebSocket tests (aiohttp, with the test CA and SNI).
"""

import json
import os
import pathlib
import shlex
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "lib"))
from scenario_hosts import CurlClient, marker, proxies_by_flavour, runner  # noqa: E402  pylint: disable=wrong-import-position

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
EPHEMERAL = pathlib.Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
RUNNER = runner(INVENTORY)

FLAVOURS = ("nginx", "apache", "caddy", "haproxy")
CLIENT_HOST = "matrix.example.test"
MAS_HOST = "auth.example.test"
JWT_HOST = "rtc-jwt.example.test"
SFU_HOST = "sfu.example.test"
PUBLIC_NAMES = ("example.test", CLIENT_HOST, MAS_HOST, JWT_HOST, SFU_HOST)
__all__ = ["marker"]  # shared helper, imported by the tests from here


class Client(CurlClient):
    """The homeserver host, also the curl client of the proxies."""

    def __init__(self, name):
        super().__init__(name, INVENTORY, PUBLIC_NAMES)

    def records(self, standin, marker):
        """The stand-in's recorded requests whose raw target contains marker."""
        text = self.host.run(f"cat /var/log/standin-{standin}.jsonl 2>/dev/null").stdout
        entries = [json.loads(line) for line in text.splitlines() if line.strip()]
        return [entry for entry in entries if marker in entry["target"]]

    def homeserver_log_has(self, marker):
        return self.host.run(f"grep -rqF {shlex.quote(marker)} /var/log/synapse/").rc == 0


@pytest.fixture(scope="session")
def hs():
    (name,) = RUNNER.get_hosts("edge_homeserver")
    return Client(name)


@pytest.fixture(scope="session")
def proxies():
    """Flavour -> proxy host."""
    return proxies_by_flavour(INVENTORY, "edge_proxies", FLAVOURS)


@pytest.fixture(scope="session")
def test_ca():
    return str(EPHEMERAL / "pki" / "ca.crt")
