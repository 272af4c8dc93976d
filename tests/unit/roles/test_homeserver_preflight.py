"""mxedge.matrix.homeserver's preflight entry point, run for real by ansible-playbook on localhost.

Each host of a local inventory is one variable set; the play runs only the
role's preflight entry point (include_role tasks_from: preflight, as
playbooks/site.yml does: the argument spec of the entry point, the matrix
role's checks, then the homeserver's asserts). Nothing is installed; this
machine is the Debian the first assert asks for.

homeserver_redis_password is checked against where the role writes it: the
Redis the role installs (homeserver_redis_host "") reads it unquoted from the
requirepass line of redis.conf (redis.conf.j2), so whitespace, control
characters and quotes are refused; Synapse reads it from redis.password_path
and strips whitespace at both ends, so with an existing Redis only that is
refused. The message names the variable and the rule, never the value.
"""

from __future__ import annotations

import pytest
from homeserver_harness import run, task_result
from relayd_harness import ansible_playbook, host_failures

pytestmark = pytest.mark.skipif(ansible_playbook() is None, reason="ansible-playbook is not installed")

COMMON = {
    "matrix_server_name": "example.test",
    "matrix_tls_certificate": "/dev/null",
    "matrix_tls_certificate_key": "/dev/null",
}
EXISTING = {"homeserver_redis_host": "redis.internal"}
TASK = "Assert homeserver_redis_password can be written where the role puts it"
# Every password below carries this mark: the output must not.
MARK = "zQ9kMark"
OWN_RULE = 'without whitespace, control characters or quotes (" and \')'
EXISTING_RULE = "without whitespace at its start or end"
ARGSPEC_TASK = "Validating arguments against arg spec 'preflight' - Read-only checks of mxedge.matrix.homeserver's variables"

# host -> extra host variables; preflight passes.
ACCEPTED = {
    "default": {},
    "own_printable": {"homeserver_redis_password": MARK + "-S3cret\\x#$%&()*+,./:;<=>?@[]^_`{|}~"},
    "own_unicode": {"homeserver_redis_password": MARK + "-pässwörd-密码"},
    # An existing Redis: Synapse reads the whole file and strips only its ends.
    "existing_inner_space_and_quotes": dict(EXISTING, homeserver_redis_password=MARK + " a \"b\" 'c' d"),
    "existing_backslash": dict(EXISTING, homeserver_redis_password=MARK + "\\n\\t"),
}

# host -> (extra host variables, message fragments)
REFUSED = {
    "own_space": ({"homeserver_redis_password": MARK + " two words"}, [OWN_RULE, "contains whitespace"]),
    "own_tab": ({"homeserver_redis_password": MARK + "\ttab"}, [OWN_RULE, "contains whitespace"]),
    # A newline would start a redis.conf directive of its own.
    "own_newline": ({"homeserver_redis_password": MARK + "\nrename-command CONFIG x"}, [OWN_RULE, "contains whitespace"]),
    "own_trailing_newline": ({"homeserver_redis_password": MARK + "\n"}, [OWN_RULE, "contains whitespace"]),
    "own_nbsp": ({"homeserver_redis_password": MARK + "\u00a0nbsp"}, [OWN_RULE, "contains whitespace"]),
    "own_double_quote": ({"homeserver_redis_password": MARK + '"dq'}, [OWN_RULE, "contains quotes"]),
    "own_single_quote": ({"homeserver_redis_password": MARK + "'sq'"}, [OWN_RULE, "contains quotes"]),
    "own_bell": ({"homeserver_redis_password": MARK + "\x07bell"}, [OWN_RULE, "contains control characters"]),
    "own_nul": ({"homeserver_redis_password": MARK + "\x00nul"}, [OWN_RULE, "contains control characters"]),
    "own_del": ({"homeserver_redis_password": MARK + "\x7fdel"}, [OWN_RULE, "contains control characters"]),
    "own_space_and_quotes": ({"homeserver_redis_password": MARK + ' "two words"'},
                             [OWN_RULE, "contains whitespace and contains quotes"]),
    "own_not_a_string": ({"homeserver_redis_password": 12345678}, [OWN_RULE, "is not a string"]),
    "existing_leading_space": (dict(EXISTING, homeserver_redis_password=" " + MARK), [EXISTING_RULE, "starts or ends with whitespace"]),
    "existing_trailing_tab": (dict(EXISTING, homeserver_redis_password=MARK + "\t"), [EXISTING_RULE, "starts or ends with whitespace"]),
    "existing_trailing_newline": (dict(EXISTING, homeserver_redis_password=MARK + "\n"),
                                  [EXISTING_RULE, "starts or ends with whitespace"]),
}


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    base = tmp_path_factory.mktemp("homeserver-preflight")
    hosts = {name: dict(COMMON, **extra) for name, extra in ACCEPTED.items()}
    hosts.update({name: dict(COMMON, **extra) for name, (extra, _fragments) in REFUSED.items()})
    plays = [{
        "name": "Run only the homeserver's preflight entry point, as playbooks/site.yml does",
        "hosts": "all", "gather_facts": True, "gather_subset": ["min", "network"],
        "tasks": [{"name": "Check the homeserver inputs",
                   "ansible.builtin.include_role": {"name": "mxedge.matrix.homeserver", "tasks_from": "preflight"}}],
    }]
    returncode, result, output = run(base, plays, hosts)
    assert returncode != 0, "the refused hosts must fail"
    return result, output


@pytest.mark.parametrize("host", list(ACCEPTED))
def test_accepted_passes_preflight(outcome, host):
    result, _output = outcome
    assert host_failures(result, host) == []
    assert result["stats"][host]["failures"] == 0
    assert result["stats"][host]["changed"] == 0
    check = task_result(result, host, TASK)
    assert check is not None
    # "" (the default) is generated or means no password: nothing to check.
    assert check.get("skipped", False) == (host == "default"), check


@pytest.mark.parametrize("host", list(REFUSED))
def test_refused_names_the_variable_and_the_rule(outcome, host):
    result, _output = outcome
    _extra, fragments = REFUSED[host]
    failures = host_failures(result, host)
    assert len(failures) == 1, failures
    failed_task, message = failures[0]
    assert failed_task == TASK
    assert message.startswith("homeserver_redis_password breaks its rule: allowed is \"\" or a string ")
    assert message.endswith("(the value itself is not shown).")
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert result["stats"][host]["changed"] == 0


def test_no_password_in_the_output(outcome):
    _result, output = outcome
    assert MARK not in output


@pytest.mark.parametrize("host", list(ACCEPTED) + list(REFUSED))
def test_the_entry_point_validates_its_argument_spec(outcome, host):
    result, _output = outcome
    validation = task_result(result, host, ARGSPEC_TASK)
    assert validation is not None
    assert not validation.get("failed") and not validation.get("skipped"), validation
