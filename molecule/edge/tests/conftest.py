"""Helpers for the edge scenario: one homeserver host, four proxy hosts (one per flavour).

Requests run with curl on the homeserver host, addressed to one proxy with
``--resolve`` (so the proxy sees a real container address as its client), or
from the controller for the WebSocket tests (aiohttp, with the test CA and SNI).
"""

import base64
import json
import os
import pathlib
import shlex
import uuid

import pytest
import testinfra
import testinfra.utils.ansible_runner

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
EPHEMERAL = pathlib.Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY)

FLAVOURS = ("nginx", "apache", "caddy", "haproxy")
CLIENT_HOST = "matrix.example.test"
MAS_HOST = "auth.example.test"
JWT_HOST = "rtc-jwt.example.test"
SFU_HOST = "sfu.example.test"
PUBLIC_NAMES = ("example.test", CLIENT_HOST, MAS_HOST, JWT_HOST, SFU_HOST)


class Host:
    """One container of the scenario, with its inventory variables."""

    def __init__(self, name):
        self.name = name
        self.host = testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")
        self.vars = RUNNER.get_variables(name)

    @property
    def ip(self):
        return self.host.check_output("hostname -I").split()[0]


class Client(Host):
    """The homeserver host, also the curl client of the proxies."""

    def curl_many(self, proxy_ip, requests, timeout=30):
        """[(url, [curl args])] through the proxy at proxy_ip -> [(status, headers, body bytes)], one remote command."""
        resolve = []
        for name in PUBLIC_NAMES:
            for port in (443, 8448):
                resolve += ["--resolve", f"{name}:{port}:{proxy_ip}"]
        parts = []
        for url, args in requests:
            tag = uuid.uuid4().hex
            body, head = f"/tmp/mx-{tag}.body", f"/tmp/mx-{tag}.head"
            extra = " ".join(shlex.quote(a) for a in list(args) + resolve)
            parts.append(
                f"curl -sS --path-as-is --max-time {timeout} -o {body} -D {head} -w '%{{http_code}}' {extra} "
                f"{shlex.quote(url)}; echo; base64 -w0 {body} 2>/dev/null; echo; base64 -w0 {head} 2>/dev/null; echo; "
                f"rm -f {body} {head}"
            )
        lines = self.host.run("; ".join(parts)).stdout.split("\n")
        results = []
        for index in range(len(requests)):
            status_line, body_b64, head_b64 = lines[3 * index:3 * index + 3]
            headers = {}
            for line in base64.b64decode(head_b64).decode("latin-1").split("\n"):
                if ":" in line:
                    key, value = line.split(":", 1)
                    headers[key.strip().lower()] = value.strip()
            results.append((int(status_line or 0), headers, base64.b64decode(body_b64)))
        return results

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
    hosts = {}
    for name in RUNNER.get_hosts("edge_proxies"):
        host = Host(name)
        hosts[host.vars["matrix_proxy_flavour"]] = host
    assert sorted(hosts) == sorted(FLAVOURS)
    return hosts


@pytest.fixture(scope="session")
def test_ca():
    return str(EPHEMERAL / "pki" / "ca.crt")


def marker():
    return "mx" + uuid.uuid4().hex[:12]
