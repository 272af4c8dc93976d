"""Helpers for the end-to-end scenarios: two homeservers behind one proxy flavour.

Tests address hosts by role in the topology (hs1 = example.test, hs2 =
other.test), run HTTP requests with curl *inside* the containers (so the client
address the proxies see is a real container address and name resolution is the
Docker network's), and drive Matrix with matrix-nio from the controller.
"""

import hashlib
import hmac
import json
import os
import pathlib
import re
import socket
import ssl
import subprocess
import sys
import time
import uuid

import pytest
import testinfra.modules.ansible

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "lib"))
from scenario_hosts import CurlClient, runner  # noqa: E402  pylint: disable=wrong-import-position

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
EPHEMERAL = pathlib.Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
PROJECT = pathlib.Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
SCENARIO_DIR = pathlib.Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])
RUNNER = runner(INVENTORY)

# What each flavour's service, config tree and checker are called; used by the
# tests that stop the homeserver and that inject a broken directive.
FLAVOURS = {
    "nginx": {
        "service": "nginx",
        "config_dir": "/etc/nginx",
        "broken": "mxedge_bogus_directive on;",
        "error": 'unknown directive "mxedge_bogus_directive"',
    },
    "apache": {
        "service": "apache2",
        "config_dir": "/etc/apache2",
        "broken": "MxedgeBogusDirective on",
        "error": "MxedgeBogusDirective",
    },
    "caddy": {
        "service": "caddy",
        "config_dir": "/etc/caddy",
        "broken": "mxedge_bogus_directive",
        "error": "mxedge_bogus_directive",
    },
    "haproxy": {
        "service": "haproxy",
        "config_dir": "/etc/haproxy",
        "broken": "mxedge-bogus-keyword",
        "error": "mxedge-bogus-keyword",
    },
}


class Node(CurlClient):
    """One homeserver host of the topology, with its inventory variables; its curl resolves names as the host does."""

    def __init__(self, group):
        (name,) = RUNNER.get_hosts(group)
        super().__init__(name, INVENTORY, ())

    @property
    def server_name(self):
        return self.vars["matrix_server_name"]

    @property
    def fqdn(self):
        return self.vars.get("matrix_homeserver_fqdn", self.server_name)

    def homeserver_local(self, path, *args):
        """curl the homeserver's own listener, bypassing the proxy."""
        socket_path = self.vars.get("matrix_homeserver_socket", "")
        if socket_path:
            return self.curl(f"http://localhost{path}", "--unix-socket", socket_path, *args)
        address = self.vars.get("matrix_homeserver_address", "127.0.0.1")
        port = self.vars.get("matrix_homeserver_port", 8008)
        return self.curl(f"http://{address}:{port}{path}", *args)

    def register(self, user, password):
        """Register a user with the shared secret (Synapse's admin register API, on loopback)."""
        status, _headers, body = self.homeserver_local("/_synapse/admin/v1/register")
        assert status == 200, body
        nonce = json.loads(body)["nonce"]
        secret = self.vars["homeserver_registration_shared_secret"].encode()
        mac = hmac.new(secret, digestmod=hashlib.sha1)
        mac.update(b"\x00".join([nonce.encode(), user.encode(), password.encode(), b"notadmin"]))
        payload = json.dumps({"nonce": nonce, "username": user, "password": password, "admin": False, "mac": mac.hexdigest()})
        status, _headers, body = self.homeserver_local(
            "/_synapse/admin/v1/register", "-X", "POST", "-H", "Content-Type: application/json", "--data", payload
        )
        assert status == 200 or b"User ID already taken" in body, body

    def login_to(self, server, user, password):
        """Log in to `server` through its proxy, from this host; returns an access token."""
        payload = json.dumps({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password})
        status, _headers, body = self.curl(
            f"{server.base_url}_matrix/client/v3/login", "-X", "POST", "-H", "Content-Type: application/json", "--data", payload
        )
        assert status == 200, body
        return json.loads(body)["access_token"]

    @property
    def base_url(self):
        port = int(self.vars.get("matrix_client_port", 443))
        return f"https://{self.fqdn}/" if port == 443 else f"https://{self.fqdn}:{port}/"

    def service_pid(self, service):
        return self.host.check_output(f"systemctl show -p MainPID --value {service}")

    def wait_until(self, predicate, timeout=90, step=1.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(step)
        return False


@pytest.fixture(scope="session")
def hs1():
    return Node("hs_example")


@pytest.fixture(scope="session")
def hs2():
    return Node("hs_other")


@pytest.fixture(scope="session")
def flavour(hs1):
    return FLAVOURS[hs1.vars["matrix_proxy_flavour"]] | {"name": hs1.vars["matrix_proxy_flavour"]}


@pytest.fixture(scope="session")
def homeserver_service():
    """The unit the homeserver role installs (named after the flavour: synapse)."""
    return "synapse"


@pytest.fixture(scope="session")
def homeserver_log():
    """The log the homeserver role configures (homeserver_log_dir default)."""
    return "/var/log/synapse/homeserver.log"


@pytest.fixture(scope="session")
def test_ca():
    return str(EPHEMERAL / "pki" / "ca.crt")


@pytest.fixture(scope="session")
def module_utils():
    """The collection's own delegation logic, imported from this checkout."""
    sys.path.insert(0, str(PROJECT / ".cache" / "collections"))
    from ansible_collections.mxedge.matrix.plugins.module_utils import matrix_names  # noqa: PLC0415

    return matrix_names


@pytest.fixture(scope="session")
def federation_utils(module_utils):
    """The federation_check module's logic (probe paths, resolution), from this checkout."""
    from ansible_collections.mxedge.matrix.plugins.module_utils import federation  # noqa: PLC0415

    return federation


# Where prepare installs the test CA on every host (playbooks/tasks/test_ca_install.yml).
HOST_CA_PATH = "/usr/local/share/ca-certificates/mxedge-test-ca.crt"


def federation_check(node, server_name, **options):
    """Run mxedge.matrix.federation_check on `node`; returns (failed, result dict).

    The module is read-only, so it runs for real (check=False) like in a playbook.
    """
    args = {"server_name": server_name, "ca_path": HOST_CA_PATH, "timeout": 10}
    args.update(options)
    try:
        result = node.host.ansible("mxedge.matrix.federation_check", json.dumps(args), check=False)
    except testinfra.modules.ansible.AnsibleException as error:
        return True, error.result
    # testinfra reads the result from `ansible --tree`, which (ansible-core 2.19) may not
    # carry the "failed" key of a failed task: the module's own verdict says it too.
    return bool(result.get("failed")) or result.get("passed") is False, result


@pytest.fixture(scope="session")
def ssl_context(test_ca):
    return ssl.create_default_context(cafile=test_ca)


def run_converge(extra_vars, limit, check_mode=False):
    """Run the scenario's converge playbook again, as Molecule does, with extra vars.

    With check_mode, as an operator previews a change: --check --diff.
    """
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0")
    playbook = (SCENARIO_DIR / ".." / "shared" / "converge.yml").resolve()
    command = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", INVENTORY, "--limit", limit,
               "-e", json.dumps(extra_vars), str(playbook)]
    if check_mode:
        command += ["--check", "--diff"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)


_RECAP = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)


def play_recap(output):
    """Host -> counts (ok, changed, unreachable, failed) from ansible-playbook's PLAY RECAP."""
    return {
        match["host"]: {key: int(match[key]) for key in ("ok", "changed", "unreachable", "failed")}
        for match in _RECAP.finditer(output)
    }


def assert_check_mode_reports_no_change(*nodes):
    """--check --diff of the converge playbook on converged `nodes`: it runs through and reports 0 changed."""
    proc = run_converge({}, "homeservers", check_mode=True)
    recap = play_recap(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    for node in nodes:
        assert recap[node.name]["failed"] == 0 and recap[node.name]["changed"] == 0, proc.stdout[-3000:]


def resolve_map(*nodes):
    """Host name -> container address, for clients running on the controller."""
    mapping = {}
    for node in nodes:
        for name in (node.server_name.split(":")[0], node.fqdn):
            mapping[name] = node.ip
    return mapping


def port_open(ip, port):
    with socket.socket() as sock:
        sock.settimeout(3)
        return sock.connect_ex((ip, port)) == 0


# --- state the end-to-end tests share, as fixtures: any test runs alone or in any order ---

PASSWORD = "mxedge-e2e-password"

# Long-polls started in this session; whatever stops the homeserver waits for them first.
_LONG_POLLS = []


class LongPoll:
    """A /sync with a 65 s timeout from hs2 to hs1, running in the background on hs2.

    Started by the `long_poll` fixture on first use; `result()` waits for its end
    (at most 150 s) and keeps what it found, for every test that asks.
    """

    TIMEOUT_MS = 65000
    # Nothing may wake this sync early: the user has no rooms, and presence
    # (which Synapse updates on its own timers) is filtered out.
    QUERY = "set_presence=offline&filter=%7B%22presence%22%3A%7B%22not_types%22%3A%5B%22%2A%22%5D%7D%7D"

    def __init__(self, hs1, hs2):
        self.hs1, self.hs2 = hs1, hs2
        # A marker of its own: a poll left running by an earlier session cannot answer for this one.
        self.marker = f"/tmp/mxedge-sync65-{uuid.uuid4().hex}"
        self.initial_status = None
        self._result = None

    def start(self):
        hs1, hs2 = self.hs1, self.hs2
        hs1.register("sleeper", PASSWORD)
        token = hs2.login_to(hs1, "sleeper", PASSWORD)
        status, _headers, body = hs2.curl(
            f"{hs1.base_url}_matrix/client/v3/sync?timeout=0&{self.QUERY}", "-H", f"Authorization: Bearer {token}"
        )
        self.initial_status = status
        assert status == 200, body
        since = json.loads(body)["next_batch"]
        url = f"{hs1.base_url}_matrix/client/v3/sync?timeout={self.TIMEOUT_MS}&since={since}&{self.QUERY}"
        marker = self.marker
        hs2.host.run(
            f"setsid nohup sh -c \"curl -sS --max-time 150 -o {marker}.body "
            f"-w '%{{http_code}} %{{time_total}}' -H 'Authorization: Bearer {token}' '{url}' > {marker}.status.tmp; "
            f"mv {marker}.status.tmp {marker}.status\" >/dev/null 2>&1 &"
        )

    def result(self):
        """(status, seconds, body) of the finished long-poll; waits for it."""
        if self._result is None:
            hs2 = self.hs2
            assert hs2.wait_until(lambda: hs2.host.file(f"{self.marker}.status").exists, 150, 2), (
                "the long-poll did not end within 150 s"
            )
            status, seconds = hs2.host.file(f"{self.marker}.status").content_string.split()
            body = hs2.host.file(f"{self.marker}.body").content_string if hs2.host.file(f"{self.marker}.body").exists else ""
            self._result = (status, float(seconds), body)
            hs2.host.run(f"rm -f {self.marker}.*")
        return self._result


@pytest.fixture(scope="session")
def long_poll(hs1, hs2):
    """The 65 s /sync, started on first use (so the first test to ask starts it early)."""
    poll = LongPoll(hs1, hs2)
    poll.start()
    _LONG_POLLS.append(poll)
    return poll


class Outage:
    """hs1's homeserver stopped (by the `homeserver_down` fixture); the proxy untouched."""

    def __init__(self, hs1, hs2, service, proxy_service):
        self.hs1, self.hs2, self.service = hs1, hs2, service
        self.proxy_pid = hs1.service_pid(proxy_service)
        self.restored = False

    def restore(self):
        """Start the homeserver again and wait until it answers through the proxy (at most 120 s)."""
        self.restored = True
        self.hs1.host.check_output(f"systemctl start {self.service}")
        url = f"{self.hs1.base_url}_matrix/client/versions"
        assert self.hs1.wait_until(lambda: self.hs2.curl(url)[0] == 200, 120), (
            "the homeserver did not answer through the proxy within 120 s of its start"
        )


@pytest.fixture
def homeserver_down(hs1, hs2, flavour, homeserver_service):
    """hs1's homeserver stopped for one test, started again (and answering) after it.

    A long-poll started earlier in the session is waited for first: stopping the
    homeserver would cut it.
    """
    for poll in _LONG_POLLS:
        poll.result()
    outage = Outage(hs1, hs2, homeserver_service, flavour["service"])
    hs1.host.check_output(f"systemctl stop {homeserver_service}")
    try:
        yield outage
    finally:
        if not outage.restored:
            outage.restore()


@pytest.fixture(scope="session")
def federation_users(hs1, hs2):
    """alice on hs1 and bob on hs2, registered (again: registering is idempotent here)."""
    hs1.register("alice", PASSWORD)
    hs2.register("bob", PASSWORD)
    return {"alice": hs1, "bob": hs2}


@pytest.fixture(scope="session")
def upload_token(hs1, hs2):
    """An access token on hs1 for `uploader`, obtained from hs2 through the proxy."""
    hs1.register("uploader", PASSWORD)
    return hs2.login_to(hs1, "uploader", PASSWORD)
