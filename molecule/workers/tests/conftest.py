"""Helpers for the workers scenario (docs/workers.md, contract MX16).

Requests run with curl on the main process's host (workers-hs), addressed to
one proxy with ``--resolve``; which Synapse process served a request is read
from the processes' own logs (each request carries a unique marker in its query
string, which Synapse's access log prints): ``homeserver.log`` is the main
process's, ``<worker>.log`` each worker's, on both homeserver hosts.
"""

import hashlib
import hmac
import json
import os
import pathlib
import shlex
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "molecule" / "shared" / "lib"))
from scenario_hosts import CurlClient, Host, marker, proxies_by_flavour, runner  # noqa: E402  pylint: disable=wrong-import-position

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
EPHEMERAL = pathlib.Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
SCENARIO = pathlib.Path(__file__).resolve().parents[1]
RUNNER = runner(INVENTORY)

FLAVOURS = ("nginx", "apache", "caddy", "haproxy")
CLIENT_HOST = "matrix.example.test"
PUBLIC_NAMES = ("example.test", CLIENT_HOST)
PASSWORD = "mxedge-workers-password"
LOG_DIR = "/var/log/synapse"
__all__ = ["marker"]  # shared helper, imported by the tests from here


class Client(CurlClient):
    """workers-hs: the main process's host, also the curl client of the proxies."""

    def __init__(self, name):
        super().__init__(name, INVENTORY, PUBLIC_NAMES)

    def register(self, user):
        """Register user@example.test with the shared secret, on the main process's own listener."""
        local = "http://hs.internal:8008/_synapse/admin/v1/register"
        status, _headers, body = self.curl(local)
        assert status == 200, body
        nonce = json.loads(body)["nonce"]
        secret = self.vars["homeserver_registration_shared_secret"].encode()
        mac = hmac.new(secret, digestmod=hashlib.sha1)
        mac.update(b"\x00".join([nonce.encode(), user.encode(), PASSWORD.encode(), b"notadmin"]))
        payload = json.dumps({"nonce": nonce, "username": user, "password": PASSWORD, "admin": False, "mac": mac.hexdigest()})
        status, _headers, body = self.curl(local, "-X", "POST", "-H", "Content-Type: application/json", "--data", payload)
        assert status == 200 or b"User ID already taken" in body, body

    def login(self, user, proxy_ip, count=1):
        """count access tokens for user@example.test, logged in through the proxy at proxy_ip (one token: a string)."""
        payload = json.dumps({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
                              "password": PASSWORD})
        request = (f"https://{CLIENT_HOST}/_matrix/client/v3/login",
                   ["-X", "POST", "-H", "Content-Type: application/json", "--data", payload])
        results = self.curl_many([request] * count, proxy_ip=proxy_ip)
        assert all(status == 200 for status, _headers, _body in results), [body for _status, _headers, body in results]
        tokens = [json.loads(body)["access_token"] for _status, _headers, body in results]
        return tokens[0] if count == 1 else tokens


class Deployment:
    """The worker deployment's processes and their logs, on both homeserver hosts."""

    def __init__(self, hs, hsw):
        self.hosts = (hs, hsw)
        self.workers = hs.vars["matrix_workers"]
        self.by_host = {hs.name: hs, hsw.name: hsw}

    def served_by(self, marker):
        """The processes (worker names, 'main') whose access log has a request carrying marker."""
        return self.served_by_many([marker])[marker]

    def served_by_many(self, markers):
        """{marker: the processes whose access log has a request carrying it}, one command per host."""
        found = {marker: set() for marker in markers}
        patterns = " ".join(f"-e {shlex.quote(marker)}" for marker in markers)
        for host in self.hosts:
            out = host.run(f"grep -oF {patterns} {LOG_DIR}/*.log").stdout
            for line in out.splitlines():
                path, _sep, marker = line.rpartition(":")
                stem = pathlib.PurePosixPath(path).stem
                found[marker].add("main" if stem == "homeserver" else stem)
        return found

    def pool(self, kind):
        return {w["name"] for w in self.workers if w["type"] == kind}

    def set_state(self, kind, state):
        """Start or stop every worker of a type, on its host."""
        for worker in self.workers:
            if worker["type"] == kind:
                host = self.by_host[worker["host"]]
                host.run(f"systemctl {state} synapse-worker@{worker['name']}")


def with_marker(path, mark):
    return f"{path}{'&' if '?' in path else '?'}mxprobe={mark}"


def wait_until(predicate, timeout=60, step=1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


@pytest.fixture(scope="session")
def hs():
    return Client("workers-hs")


@pytest.fixture(scope="session")
def hsw():
    return Host("workers-hsw", INVENTORY)


@pytest.fixture(scope="session")
def other():
    return Host("workers-other", INVENTORY)


@pytest.fixture(scope="session")
def deployment(hs, hsw):
    return Deployment(hs, hsw)


@pytest.fixture(scope="session")
def proxies():
    """Flavour -> proxy host."""
    return proxies_by_flavour(INVENTORY, "workers_proxies", FLAVOURS)


@pytest.fixture(scope="session")
def test_ca():
    return str(EPHEMERAL / "pki" / "ca.crt")


@pytest.fixture(scope="session")
def prober(hs, proxies):
    """Registered user 'prober' with one access token per flavour (logged in through that flavour's proxy)."""
    hs.register("prober")
    return {flavour: hs.login("prober", proxy.ip) for flavour, proxy in proxies.items()}


@pytest.fixture(scope="session")
def probe_room(hs, proxies, prober):
    """A room of prober's, created through the nginx proxy."""
    status, _headers, body = hs.curl(f"https://{CLIENT_HOST}/_matrix/client/v3/createRoom", "-X", "POST",
                                     "-H", f"Authorization: Bearer {prober['nginx']}", "-H", "Content-Type: application/json",
                                     "--data", "{}", proxy_ip=proxies["nginx"].ip)
    assert status == 200, body
    return json.loads(body)["room_id"]
