"""The forward proxy in the Synapse flavour of roles/homeserver, rendered by Ansible.

One ansible-playbook run (localhost, no Synapse needed) runs the matrix role's
checks and the homeserver role's preflight for each variable set, then renders
the role's own environment file template and log configuration. The tests read
what the unit would get and check that a proxy password never reaches
Ansible's output.
"""

import pathlib

import pytest
import yaml
from render import render

ROOT = pathlib.Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles" / "homeserver"
SECRET = "pr0xy-s3cret"

BASE = {
    "matrix_server_name": "example.test",
    "matrix_tls_certificate": "/dev/null",
    "matrix_tls_certificate_key": "/dev/null",
}

VARIANTS = {
    "none": {},
    "https_with_credentials": {
        "matrix_forward_proxy_https": f"http://mx:{SECRET}@squid.internal:3128",
        "matrix_forward_proxy_http": f"http://mx:{SECRET}@squid.internal:3128",
        "matrix_forward_proxy_no_proxy": ["localhost", "127.0.0.1", ".corp.example", "10.0.0.0/8"],
        "homeserver_log_level": "DEBUG",
    },
    "https_only_info": {
        "matrix_forward_proxy_https": f"https://mx:{SECRET}@proxy.internal:8443/",
    },
    "no_credentials_debug": {
        "matrix_forward_proxy_http": "proxy.internal:3128",
        "homeserver_log_level": "DEBUG",
    },
    "star": {
        "matrix_forward_proxy_https": "http://proxy.internal:3128",
        "matrix_forward_proxy_no_proxy": ["localhost", "*"],
    },
    "quotes": {
        "matrix_forward_proxy_https": "http://m%22x:a%5Cb@proxy.internal:3128",
    },
}

PLAYBOOK = """
- name: Render the homeserver role's forward proxy pieces for one variable set per host
  hosts: all
  connection: local
  gather_facts: false
  tasks:
    - name: Load the homeserver role (defaults, vars, the matrix dependency) and run its preflight
      ansible.builtin.include_role:
        name: mxedge.matrix.homeserver
        tasks_from: preflight
        public: true
    - name: Write the rendered environment file and the log configuration
      ansible.builtin.copy:
        dest: "{out}/{{{{ inventory_hostname }}}}.json"
        mode: "0600"
        content: "{{{{ {{'environment': lookup('ansible.builtin.template', '{role}/templates/environment.j2'),
          'log_config': lookup('ansible.builtin.template', '{role}/templates/log_config.yaml.j2'),
          'credentials': _homeserver_forward_proxy_credentials | bool}} | to_json }}}}"
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("homeserver-forward-proxy")
    hosts = {name: dict(BASE, **variables) for name, variables in VARIANTS.items()}
    return render(out, PLAYBOOK.format(role=ROLE, out=out), hosts)


def _environment(text):
    """systemd EnvironmentFile lines -> {name: value} (double-quoted values, \\ escapes)."""
    result = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, value = line.split("=", 1)
        assert value.startswith('"') and value.endswith('"'), line
        result[name] = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return result


def test_no_proxy_no_variables(rendered):
    assert _environment(rendered["none"]["environment"]) == {}
    assert rendered["none"]["environment"].startswith("#\n# Ansible managed")


def test_variables_as_synapse_reads_them(rendered):
    env = _environment(rendered["https_with_credentials"]["environment"])
    assert env == {
        "http_proxy": f"http://mx:{SECRET}@squid.internal:3128",
        "https_proxy": f"http://mx:{SECRET}@squid.internal:3128",
        "no_proxy": "localhost,127.0.0.1,.corp.example,10.0.0.0/8",
    }
    assert _environment(rendered["https_only_info"]["environment"]) == {
        "https_proxy": f"https://mx:{SECRET}@proxy.internal:8443/",
    }


def test_star_means_no_proxy_at_all(rendered):
    # Python's urllib (Synapse) and reqwest (Palpo) honour '*' only as the whole value.
    assert _environment(rendered["star"]["environment"])["no_proxy"] == "*"


def test_quotes_and_backslashes_survive_systemd_quoting(rendered):
    assert _environment(rendered["quotes"]["environment"])["https_proxy"] == "http://m%22x:a%5Cb@proxy.internal:3128"


def test_debug_log_never_prints_the_proxy_password(rendered):
    # Synapse logs "Using proxy settings: http_proxy=..." at DEBUG from these loggers.
    loggers = yaml.safe_load(rendered["https_with_credentials"]["log_config"])["loggers"]
    assert loggers["synapse.config.server"] == {"level": "INFO"}
    assert loggers["synapse.http.proxyagent"] == {"level": "INFO"}
    assert loggers["synapse.storage.SQL"] == {"level": "INFO"}
    # Without credentials (or below DEBUG) nothing is held back.
    for name in ("no_credentials_debug", "https_only_info", "none"):
        loggers = yaml.safe_load(rendered[name]["log_config"])["loggers"]
        assert loggers == {"synapse.storage.SQL": {"level": "INFO"}}, name
    assert rendered["https_only_info"]["credentials"] is True
    assert rendered["no_credentials_debug"]["credentials"] is False
