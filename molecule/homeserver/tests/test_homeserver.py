"""The homeserver role on Debian 12 (SQLite, TCP on loopback) and Debian 13
(local PostgreSQL, UNIX socket, forward proxy in the environment).

Every request is made from inside the containers with curl, over the listener
the role configured (TCP or the UNIX socket).
"""

import hashlib
import hmac
import json
import os
import shlex
import time
import uuid

import pytest
import testinfra
import testinfra.utils.ansible_runner

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY)
testinfra_hosts = RUNNER.get_hosts("homeservers")

CONFIG_DIR = "/etc/synapse"
PORT = 8008


def _vars(host):
    return host.ansible.get_variables()


def _socket(host):
    return _vars(host).get("matrix_homeserver_socket", "")


def _other(host):
    """The other container of the scenario, as a testinfra host."""
    me = _vars(host)["inventory_hostname"]
    name = next(h for h in testinfra_hosts if h != me)
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


def _curl(host, path, *args, client="127.0.0.1"):
    """curl a homeserver path over the configured listener, as a proxy would
    (X-Forwarded-For set: Synapse's login needs a client IP, which a UNIX socket
    peer does not have); returns (status, body)."""
    sock = _socket(host)
    base = f"--unix-socket {shlex.quote(sock)} http://localhost" if sock else f"http://127.0.0.1:{PORT}"
    cmd = (
        f"curl -sS --max-time 20 -o /dev/stdout -w '\\n%{{http_code}}' -H 'X-Forwarded-For: {client}' "
        f"{' '.join(args)} {base}{path}"
    )
    out = host.check_output(cmd)
    body, _newline, status = out.rpartition("\n")
    return int(status), body


def _post_json(host, path, payload, *args):
    data = shlex.quote(json.dumps(payload))
    return _curl(host, path, "-X POST -H 'Content-Type: application/json'", f"--data {data}", *args)


def test_service_active_and_enabled(host):
    service = host.service("synapse")
    assert service.is_running
    assert service.is_enabled


def test_health_and_client_versions(host):
    status, body = _curl(host, "/health")
    assert (status, body) == (200, "OK")
    status, body = _curl(host, "/_matrix/client/versions")
    assert status == 200
    assert "v1.11" in json.loads(body)["versions"]


def test_register_with_shared_secret_and_log_in(host):
    secret = host.file(f"{CONFIG_DIR}/registration_shared_secret").content_string.strip()
    configured = _vars(host).get("homeserver_registration_shared_secret", "")
    if configured:
        assert secret == configured
    else:
        assert len(secret) >= 32

    status, body = _curl(host, "/_synapse/admin/v1/register")
    assert status == 200, body
    nonce = json.loads(body)["nonce"]
    user, password = f"alice{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    mac = hmac.new(secret.encode(), b"\x00".join([nonce.encode(), user.encode(), password.encode(), b"notadmin"]), hashlib.sha1)
    status, body = _post_json(
        host,
        "/_synapse/admin/v1/register",
        {"nonce": nonce, "username": user, "password": password, "admin": False, "mac": mac.hexdigest()},
    )
    assert status == 200, body
    server_name = _vars(host)["matrix_server_name"]
    assert json.loads(body)["user_id"] == f"@{user}:{server_name}"

    status, body = _post_json(
        host,
        "/_matrix/client/v3/login",
        {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password},
    )
    assert status == 200, body
    token = json.loads(body)["access_token"]
    status, body = _curl(host, "/_matrix/client/v3/account/whoami", f"-H 'Authorization: Bearer {token}'")
    assert status == 200 and json.loads(body)["user_id"] == f"@{user}:{server_name}"


def test_access_log_records_request_id_and_client(host):
    """x_forwarded: the client address comes from X-Forwarded-For;
    request_id_header: the request id is the proxy's X-Request-ID."""
    request_id = f"mxedge-{uuid.uuid4().hex}"
    status, _body = _curl(host, "/_matrix/client/versions", f"-H 'X-Request-ID: {request_id}'", client="192.0.2.77")
    assert status == 200
    for _attempt in range(20):
        lines = host.run(f"grep -F {request_id} /var/log/synapse/homeserver.log").stdout.splitlines()
        if lines:
            break
        time.sleep(0.5)
    assert lines, "request id not in homeserver.log"
    access = [line for line in lines if "synapse.access.http" in line and "/_matrix/client/versions" in line]
    assert access, lines
    assert f"-{request_id} - 192.0.2.77 - " in access[0]  # "GET-<request id> - <client> - "


def test_listeners(host):
    sock = _socket(host)
    tcp = host.check_output("ss -Hltn")
    if sock:
        assert f":{PORT} " not in tcp
        assert host.file(sock).is_socket
        assert host.file(sock).mode == 0o666
    else:
        listening = [line.split()[3] for line in tcp.splitlines()]
        assert f"127.0.0.1:{PORT}" in listening
        assert not [addr for addr in listening if addr.endswith(f":{PORT}") and addr != f"127.0.0.1:{PORT}"]


def test_listener_not_reachable_from_the_other_container(host):
    """The homeserver binds loopback (or a socket): its port refuses connections
    from the other container, which does reach the host (refused, not timed out
    or unresolved)."""
    me = host.check_output("hostname -I").split()[0]
    other = _other(host)
    result = other.run(f"curl -sS --max-time 5 -o /dev/null http://{me}:{PORT}/health")
    assert result.rc == 7, (result.rc, result.stderr)  # 7 = could not connect (refused)
    assert "refused" in result.stderr.lower() or "failed to connect" in result.stderr.lower()


def test_no_restart_and_no_key_rotation_since_converge(host):
    """converge recorded MainPID, start time and signing key checksum; the
    idempotence run rewrote the same file with changed=0 and the side effect
    (a rejected config) left them as they were."""
    recorded = host.file("/root/homeserver-identity").content_string.strip()
    now = host.check_output(
        "systemctl show --property MainPID --property ExecMainStartTimestampMonotonic synapse && sha256sum /etc/synapse/signing.key"
    ).strip()
    assert recorded == now
    assert "MainPID=0" not in now


@pytest.mark.parametrize(
    "path,user,group,mode",
    [
        (CONFIG_DIR, "root", "synapse", 0o750),
        ("/var/lib/synapse", "synapse", "synapse", 0o700),
        ("/var/lib/synapse/media_store", "synapse", "synapse", 0o700),
        ("/var/log/synapse", "synapse", "synapse", 0o750),
        (f"{CONFIG_DIR}/homeserver.yaml", "root", "synapse", 0o640),
        (f"{CONFIG_DIR}/log_config.yaml", "root", "synapse", 0o640),
        (f"{CONFIG_DIR}/signing.key", "root", "synapse", 0o640),
        (f"{CONFIG_DIR}/registration_shared_secret", "root", "synapse", 0o640),
        (f"{CONFIG_DIR}/macaroon_secret_key", "root", "synapse", 0o640),
        (f"{CONFIG_DIR}/form_secret", "root", "synapse", 0o640),
        (f"{CONFIG_DIR}/environment", "root", "root", 0o600),
        ("/opt/synapse/venv", "root", "root", None),
    ],
)
def test_ownership_and_modes(host, path, user, group, mode):
    f = host.file(path)
    assert f.exists
    assert (f.user, f.group) == (user, group)
    if mode is not None:
        assert f.mode == mode


def test_config_is_generated_from_shared_variables(host):
    cfg = host.check_output(f"cat {CONFIG_DIR}/homeserver.yaml")
    assert cfg.startswith("#")
    v = _vars(host)
    py = "/opt/synapse/venv/bin/python"

    def read(key):
        return host.check_output(f"{py} -m synapse.config read {key} -c {CONFIG_DIR}/homeserver.yaml").splitlines()[-1]

    assert read("server.server_name") == f"server.server_name: {v['matrix_server_name']}"
    assert read("metrics.report_stats") == "metrics.report_stats: False"
    assert read("media.max_upload_size") == f"media.max_upload_size: {int(v['matrix_max_upload_size_mb']) * 1048576}"
    listeners = read("server.listeners")
    assert "x_forwarded=True" in listeners
    assert "request_id_header='X-Request-ID'" in listeners
    if v.get("matrix_homeserver_socket"):
        assert "UnixListenerConfig(path='/run/synapse/synapse.sock'" in listeners
    else:
        assert "bind_addresses=['127.0.0.1']" in listeners
    assert "https://" in read("server.public_baseurl")


def test_systemd_hardening(host):
    props = dict(
        line.split("=", 1)
        for line in host.check_output(
            "systemctl show synapse --property User,ProtectSystem,NoNewPrivileges,PrivateTmp,ProtectHome,ReadWritePaths"
        ).splitlines()
    )
    assert props["User"] == "synapse"
    assert props["ProtectSystem"] == "strict"
    assert props["NoNewPrivileges"] == "yes"
    assert props["PrivateTmp"] == "yes"
    assert "/var/lib/synapse" in props["ReadWritePaths"]
    pid = host.check_output("systemctl show --value --property MainPID synapse")
    assert host.check_output(f"stat -c %U /proc/{pid}") == "synapse"
    # ProtectSystem=strict: the file system the service sees is read-only...
    assert "ro" in host.check_output(f"findmnt -N {pid} -no OPTIONS --target /usr").split(",")
    # ...except the paths it must write.
    assert "rw" in host.check_output(f"findmnt -N {pid} -no OPTIONS --target /var/lib/synapse").split(",")


def test_database(host):
    v = _vars(host)
    if v.get("homeserver_database") == "postgresql":
        out = host.check_output(
            "runuser -u postgres -- psql -tAc \"SELECT pg_encoding_to_char(encoding), datcollate, datctype "
            "FROM pg_database WHERE datname = 'synapse'\""
        )
        assert out == "UTF8|C|C"
        assert int(host.check_output("runuser -u postgres -- psql -d synapse -tAc 'SELECT count(*) FROM users'")) >= 1
        assert not host.file("/var/lib/synapse/homeserver.db").exists
    else:
        db = host.file("/var/lib/synapse/homeserver.db")
        assert db.exists and db.user == "synapse"


def test_forward_proxy_reaches_the_service_environment(host):
    v = _vars(host)
    pid = host.check_output("systemctl show --value --property MainPID synapse")
    environ = host.check_output(f"tr '\\0' '\\n' < /proc/{pid}/environ")
    if v.get("matrix_forward_proxy_https"):
        assert f"https_proxy={v['matrix_forward_proxy_https']}" in environ.splitlines()
        assert f"no_proxy={','.join(v['matrix_forward_proxy_no_proxy'])}" in environ.splitlines()
    else:
        assert "https_proxy=" not in environ


def test_deployed_over_ssh_as_an_unprivileged_user_with_sudo(host):
    """The operator's path: every run after prepare's first play came over SSH as
    "deploy" (key authentication) and reached root, and the database's owner, through
    sudo. hs1 ran without pipelining (modules copied to the deploy user's temporary
    directory, then run by the become user: AnsiballZ files in sudo's log), hs2 with
    it (modules on standard input: none)."""
    v = _vars(host)
    assert (v["ansible_connection"], v["ansible_user"]) == ("ssh", "deploy")
    assert host.check_output("id -u deploy") != "0"
    journal = host.check_output("journalctl --no-pager -o cat _COMM=sshd _COMM=sshd-session _COMM=sudo")
    assert "Accepted publickey for deploy" in journal
    sudo = [line for line in journal.splitlines() if line.lstrip().startswith("deploy :")]
    assert any("USER=root" in line for line in sudo)
    assert any("USER=postgres" in line for line in sudo), "become_user postgres did not go through sudo"
    module_files = [line for line in sudo if "AnsiballZ_" in line]
    if v["ansible_pipelining"]:
        assert not module_files
    else:
        assert any("USER=postgres" in line for line in module_files)
