"""hs2 (other.test) federates with hs1 (example.test) through an authenticated squid.

hs2 has no direct way to hs1 (nftables on hs2 rejects new connections to hs1's
addresses); its Synapse has http_proxy/https_proxy pointing at squid with basic
authentication and no_proxy naming push.test, a push gateway on the squid host.
hs1 has no proxy and connects to hs2 directly. The tests run in file order: the
wrong-credentials test reconfigures hs2 through the role and restores it last.
"""

import asyncio
import json
import re
import time
import uuid

import pytest
from conftest import converge, resolve_map
from nio import JoinResponse, LoginResponse, RoomCreateResponse
from test_e2e import PASSWORD, _client, _wait_for_message


def _proxy_url(node, password=None):
    v = node.vars
    return f"http://{v['mxedge_test_proxy_user']}:{password or v['mxedge_test_proxy_password']}@squid.test:{v['mxedge_test_proxy_port']}"


def _hs1_addresses(hs2):
    out = hs2.host.check_output("getent ahostsv4 example.test matrix.example.test")
    return {line.split()[0] for line in out.splitlines()}


# --- the topology: squid is hs2's only way to hs1 ---


def test_hs2_cannot_reach_hs1_directly(hs1, hs2):
    assert _hs1_addresses(hs2) == {hs1.ip}
    for url in ("https://matrix.example.test/_matrix/federation/v1/version", "https://example.test/.well-known/matrix/server"):
        started = time.monotonic()
        result = hs2.host.run(f"curl -sS --noproxy '*' --max-time 20 -o /dev/null {url}")
        elapsed = time.monotonic() - started
        assert result.rc == 7, result.stderr  # "Failed to connect": rejected, not timed out
        assert elapsed < 10, f"{url}: took {elapsed:.1f} s to fail"


def test_hs2_reaches_hs1_through_squid_with_credentials(hs2):
    url = "https://matrix.example.test/_matrix/federation/v1/version"
    status, _headers, body = hs2.curl(url, "--proxy", _proxy_url(hs2))
    assert status == 200 and b"Synapse" in body, body
    # Without credentials squid refuses the CONNECT (407).
    result = hs2.host.run(f"curl -sS --max-time 20 -o /dev/null --proxy http://squid.test:3128 {url}")
    assert result.rc != 0 and "407" in result.stderr, result.stderr


def test_hs1_reaches_hs2_directly(hs1):
    status, _headers, body = hs1.curl("https://other.test:8448/_matrix/federation/v1/version")
    assert status == 200 and b"Synapse" in body, body


def test_hs2_homeserver_runs_with_the_proxy_environment(hs2, homeserver_service):
    pid = hs2.service_pid(homeserver_service)
    environ = hs2.host.check_output(f"tr '\\0' '\\n' < /proc/{pid}/environ")
    lines = environ.splitlines()
    assert f"https_proxy={_proxy_url(hs2)}" in lines
    assert f"http_proxy={_proxy_url(hs2)}" in lines
    assert "no_proxy=push.test,localhost,127.0.0.1" in lines


# --- federation through squid, push gateway reached directly ---


async def _story(hs1, hs2, ssl_context):
    mapping = resolve_map(hs1, hs2)
    alice = _client(hs1, "alice", ssl_context, mapping)
    bob = _client(hs2, "bob", ssl_context, mapping)
    result = {}
    try:
        assert isinstance(await alice.login(PASSWORD), LoginResponse)
        assert isinstance(await bob.login(PASSWORD), LoginResponse)
        await alice.sync(timeout=0)
        await bob.sync(timeout=0)

        created = await alice.room_create(invite=[bob.user_id], name="mxedge forward proxy")
        assert isinstance(created, RoomCreateResponse), created
        room_id = result["room_id"] = created.room_id

        # other.test joins over federation, through squid.
        joined = await bob.join(room_id)
        assert isinstance(joined, JoinResponse), joined

        # bob's pusher: Synapse's push client honours no_proxy (push.test).
        pushkey = uuid.uuid4().hex
        pusher = {
            "kind": "http", "app_id": "test.mxedge.forwardproxy", "pushkey": pushkey,
            "app_display_name": "mxedge", "device_display_name": "molecule", "lang": "en",
            "data": {"url": f"http://push.test:{hs2.vars['mxedge_test_push_port']}/_matrix/push/v1/notify",
                     "format": "event_id_only"},
        }
        status, _headers, body = hs2.curl(
            f"{hs2.base_url}_matrix/client/v3/pushers/set", "-X", "POST", "-H", f"Authorization: Bearer {bob.access_token}",
            "-H", "Content-Type: application/json", "--data", json.dumps(pusher))
        assert status == 200, body
        result["pushkey"] = pushkey

        from_bob = f"hello from {hs2.server_name} via squid {uuid.uuid4().hex}"
        await bob.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": from_bob})
        assert await _wait_for_message(alice, room_id, from_bob), "hs1 never received hs2's message"

        from_alice = f"hello from {hs1.server_name} {uuid.uuid4().hex}"
        sent = await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": from_alice})
        result["alice_event_id"] = sent.event_id
        assert await _wait_for_message(bob, room_id, from_alice), "hs2 never received hs1's message"
    finally:
        await alice.close()
        await bob.close()
    return result


@pytest.fixture(scope="module")
def story(hs1, hs2, ssl_context, squid, homeserver_service):
    """Run the federation story once; returns the room, the squid and push log lines it caused."""
    hs1.register("alice", PASSWORD)
    hs2.register("bob", PASSWORD)
    squid_offset = squid.lines(squid.ACCESS_LOG)
    push_offset = squid.lines(squid.PUSH_LOG)
    result = asyncio.run(_story(hs1, hs2, ssl_context))

    # Synapse pushes asynchronously: wait for the gateway to see alice's event.
    def pushed():
        result["pushes"] = [json.loads(line) for line in squid.since(squid.PUSH_LOG, push_offset)]
        return any(result["alice_event_id"] in push["body"] for push in result["pushes"])

    result["pushed"] = hs2.wait_until(pushed, timeout=60)
    # squid logs a CONNECT when the tunnel closes, and Synapse keeps federation
    # connections open: a restart of hs2's Synapse closes them.
    hs2.host.check_output(f"systemctl restart {homeserver_service}")
    assert hs2.wait_until(lambda: hs2.homeserver_local("/health")[0] == 200, timeout=120, step=2)
    result["squid"] = squid.since(squid.ACCESS_LOG, squid_offset)
    return result


def test_federation_join_and_messages_both_ways_through_squid(story):
    assert story["room_id"]


def test_squid_logged_the_authenticated_connect_to_hs1(story, hs2):
    user = hs2.vars["mxedge_test_proxy_user"]
    tunnels = [line for line in story["squid"] if " CONNECT matrix.example.test:443 " in line]
    assert tunnels, "\n".join(story["squid"])
    # "<time> <client> TCP_TUNNEL/200 CONNECT matrix.example.test:443 <user> HIER_DIRECT/<hs1>"
    assert any(re.search(rf" {re.escape(hs2.ip)} TCP_TUNNEL/200 CONNECT matrix\.example\.test:443 {re.escape(user)} ", line)
               for line in tunnels), "\n".join(tunnels)
    # Every request squid saw from hs2 is authenticated and goes to hs1's names.
    for line in story["squid"]:
        if f" {hs2.ip} " in line and "TCP_DENIED" not in line:
            assert f" {user} " in line, line
            assert re.search(r" CONNECT (matrix\.)?example\.test:(443|8448) ", line), line


def test_no_proxy_host_is_reached_directly(story, hs2):
    assert story["pushed"], f"the push gateway never got alice's event: {story['pushes']}"
    pushes = [push for push in story["pushes"] if story["alice_event_id"] in push["body"]]
    assert all(push["client"] == hs2.ip for push in pushes), pushes
    assert all(push["path"] == "/_matrix/push/v1/notify" for push in pushes), pushes
    assert not [line for line in story["squid"] if "push.test" in line or ":8790" in line], story["squid"]


# --- credentials: only in the root-only environment file, never in Ansible's output ---


def test_proxy_password_only_in_the_root_only_environment_file(hs2, homeserver_log):
    password = hs2.vars["mxedge_test_proxy_password"]
    env = hs2.host.file("/etc/synapse/environment")
    assert (env.user, env.group, env.mode) == ("root", "root", 0o600)
    found = hs2.host.run(f"grep -rlsF {password} /etc /var/log /var/lib/synapse /run /tmp").stdout.split()
    assert found == ["/etc/synapse/environment"], found
    journal = hs2.host.run(f"journalctl --no-pager | grep -cF {password}").stdout.strip()
    assert journal == "0"


# --- wrong credentials: a clear error in the homeserver's log, quickly ---


def _profile(hs2, user_id, timeout=60):
    started = time.monotonic()
    status, _headers, body = hs2.curl(f"{hs2.base_url}_matrix/client/v3/profile/{user_id}", timeout=timeout)
    return status, body, time.monotonic() - started


def test_wrong_proxy_credentials_fail_clearly_and_quickly(hs1, hs2, squid, homeserver_log):
    good = hs2.vars["mxedge_test_proxy_password"]
    wrong = "Wrong-" + uuid.uuid4().hex[:12]
    try:
        # Through the role: the environment file changes, Synapse restarts.
        proc = converge({"mxedge_test_proxy_password": wrong}, hs2.name, "--diff", "-v")
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        assert wrong not in proc.stdout + proc.stderr
        assert good not in proc.stdout + proc.stderr
        # The homeserver role writes its files in one task; its result names what changed.
        (task,) = [block for block in proc.stdout.split("\nTASK [") if block.startswith("mxedge.matrix.homeserver : Write")
                   and "the service environment" in block.split("\n", 1)[0]]
        assert "changed: [" in task and re.search(r"^\s+- /etc/synapse/environment$", task, re.M), task[-4000:]

        log_offset = int(hs2.host.check_output(f"wc -l < {homeserver_log}"))
        squid_offset = squid.lines(squid.ACCESS_LOG)
        status, body, elapsed = _profile(hs2, f"@alice:{hs1.server_name}")
        # The client gets an error answer ("Failed to fetch profile"), not a hang.
        assert status == 502, (status, body)
        assert elapsed < 45, f"the request took {elapsed:.1f} s"

        def logged():
            text = hs2.host.run(f"tail -n +{log_offset + 1} {homeserver_log}").stdout
            return re.search(r"Unexpected status on CONNECT: b?'?407", text) is not None

        assert hs2.wait_until(logged, timeout=30, step=1), hs2.host.run(f"tail -n +{log_offset + 1} {homeserver_log} | tail -40").stdout
        denied = [line for line in squid.since(squid.ACCESS_LOG, squid_offset) if "TCP_DENIED/407 CONNECT" in line]
        assert denied, squid.since(squid.ACCESS_LOG, squid_offset)
    finally:
        # Back to the scenario's credentials through the role, and working again.
        proc = converge({}, hs2.name, "--diff")
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        assert good not in proc.stdout + proc.stderr

    def works():
        return _profile(hs2, f"@alice:{hs1.server_name}", timeout=30)[0] == 200

    assert hs2.wait_until(works, timeout=90, step=3), _profile(hs2, f"@alice:{hs1.server_name}")
