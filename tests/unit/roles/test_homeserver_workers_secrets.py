"""mxedge.matrix.homeserver's workers_secrets.yml on a host of workers, run by ansible-playbook on localhost.

A host of workers copies the keys and secrets of the main process's host
(homeserver_main_host, here "hs1": this machine too, not in the play, as
under --limit). Before the no_log read, a stat of the same files there names
the ones missing: a real run stops with a message naming them, the host and
what to do; check mode reads nothing and reports what a real run would copy.
Each case host has a homeserver_config_dir of its own under the test's
temporary directory, so the files "on hs1" are files there. No case gets past
the read of the files (a real copy would chown them to the service's group).
"""

from __future__ import annotations

import pytest
from homeserver_harness import run, task_result
from relayd_harness import ansible_playbook, host_failures

pytestmark = pytest.mark.skipif(ansible_playbook() is None, reason="ansible-playbook is not installed")

SECRET = "given-secret-0123456789abcdefghijklmnop"
COMMON = {
    "matrix_server_name": "example.test",
    "matrix_tls_certificate": "/dev/null",
    "matrix_tls_certificate_key": "/dev/null",
    "homeserver_main_host": "hs1",
    "homeserver_database": "postgresql",
    "homeserver_database_host": "db.internal",
    "matrix_worker_hosts": {"hs1": "127.0.0.1", "hs2": "127.0.0.2"},
    "matrix_workers": [{"name": "sync1", "type": "sync", "host": "hs2", "port": 18101}],
}
ALL_FILES = ["signing.key", "registration_shared_secret", "macaroon_secret_key", "form_secret",
             "worker_replication_secret", "redis_password"]
GIVEN = {
    "homeserver_registration_shared_secret": SECRET,
    "homeserver_macaroon_secret_key": SECRET,
    "homeserver_form_secret": SECRET,
    "homeserver_worker_replication_secret": SECRET,
    "homeserver_redis_host": "redis.internal",
}

# host -> (extra variables, files present on hs1, files the message names)
REAL = {
    # hs1 never converged: everything is missing.
    "none": ({}, [], ALL_FILES),
    # hs1 converged before it had workers: the worker secrets are missing.
    "partial": ({}, ALL_FILES[:4], ["worker_replication_secret", "redis_password"]),
    # Secrets given by the operator and an existing Redis are not read from hs1.
    "given": (GIVEN, [], ["signing.key"]),
}
CHECK = "none_check"
STAT_TASK = "Look for the keys and secrets on the main process's host"
ASSERT_TASK = "Assert the main process's host has the keys and secrets to share"
REPORT_TASK = "Report the keys a real run would copy here (check mode, the main process's host has none yet)"


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    base = tmp_path_factory.mktemp("homeserver-workers-secrets")
    hosts = {"hs1": dict(COMMON, homeserver_config_dir=str(base / "hs1"))}
    for name, (extra, present, _missing) in REAL.items():
        config_dir = base / name
        config_dir.mkdir()
        for file in present:
            (config_dir / file).write_text("not a secret\n")
        hosts[name] = dict(COMMON, homeserver_config_dir=str(config_dir), **extra)
    (base / CHECK).mkdir()
    hosts[CHECK] = dict(COMMON, homeserver_config_dir=str(base / CHECK))

    def play(pattern):
        return [{"name": "Share the main process's keys with a host of workers", "hosts": pattern,
                 "gather_facts": True, "gather_subset": ["min", "network"],
                 "tasks": [{"name": "Run workers_secrets.yml", "ansible.builtin.include_role": {
                     "name": "mxedge.matrix.homeserver", "tasks_from": "workers_secrets"}}]}]

    real = run(base / "real", play(":".join(REAL)), hosts)
    check = run(base / "check", play(CHECK), hosts, "--check")
    return base, real, check


@pytest.mark.parametrize("host", list(REAL))
def test_missing_files_are_named_before_the_read(outcome, host):
    base, (returncode, result, output), _check = outcome
    assert returncode != 0
    _extra, present, missing = REAL[host]
    failures = host_failures(result, host)
    assert len(failures) == 1, failures
    failed_task, message = failures[0]
    assert failed_task == ASSERT_TASK
    assert message.startswith("homeserver_main_host hs1 lacks ")
    for file in missing:
        assert str(base / host / file) in message, (file, message)
    for file in set(ALL_FILES) - set(missing):
        assert str(base / host / file) not in message, (file, message)
    assert f"{host} copies the main process's keys and secrets from there" in message
    assert "Converge hs1 first, or include it in the play" in message
    # The stat is not no_log: its results are there to read.
    stats = task_result(result, host, STAT_TASK)
    assert {item["__homeserver_secret_path"]: item["stat"]["exists"] for item in stats["results"]} == dict(
        [(str(base / host / file), False) for file in missing] + [(str(base / host / file), True) for file in present])
    assert result["stats"][host]["changed"] == 0
    assert SECRET not in output


def test_check_mode_reads_nothing_and_reports(outcome):
    base, _real, (returncode, result, _output) = outcome
    assert returncode == 0, result
    assert host_failures(result, CHECK) == []
    assert task_result(result, CHECK, ASSERT_TASK).get("skipped") is True
    report = task_result(result, CHECK, REPORT_TASK)
    assert report["msg"] == f"hs1 has no keys yet; a real run copies its signing key and secrets to {base / CHECK}."
    assert list((base / CHECK).iterdir()) == []
