"""Unit tests for roles/tls: the certbot deploy hook and the certbot command line.

One ansible-playbook run (localhost, no certbot, no proxy) derives the shared facts
with the real mxedge.matrix.matrix role per variable set, loads the tls role's
defaults and vars, and renders the deploy hook and certbot's argv. The hook is
then run for real against a fake certbot lineage in a temporary directory, with
the certificate directory pointed there.
"""

import json
import os
import pathlib
import shutil
import stat
import subprocess

import pytest
import yaml
from render import render

ROOT = pathlib.Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles" / "tls"

VARIANTS = {
    "acme_email": {
        "matrix_server_name": "example.test",
        "matrix_homeserver_fqdn": "matrix.example.test",
        "matrix_tls_source": "acme",
        "matrix_acme_directory_url": "https://acme.example.test/dir",
        "matrix_acme_email": "hostmaster@example.test",
        "matrix_acme_challenge_port": 8999,
        "tls_reload_units": [],
        "tls_key_group": "root",
    },
    "acme_no_email_one_name": {
        "matrix_server_name": "other.test",
        "matrix_tls_source": "acme",
        "tls_reload_units": ["caddy"],
        "tls_key_group": "caddy",
    },
    "self_signed": {
        "matrix_server_name": "example.test",
        "matrix_homeserver_fqdn": "matrix.example.test",
        "matrix_tls_source": "self_signed",
        "tls_reload_units": [],
    },
}

PLAYBOOK = """
- name: Render the tls role's deploy hook and certbot command for one variable set per host
  hosts: all
  connection: local
  gather_facts: false
  tasks:
    - name: Derive the shared facts with the real matrix role
      ansible.builtin.include_role:
        name: mxedge.matrix.matrix
        public: true
    - name: Load the tls role's vars
      ansible.builtin.include_vars:
        file: {role}/vars/main.yml
    - name: Write the rendered hook and argv
      ansible.builtin.copy:
        dest: "{out}/{{{{ inventory_hostname }}}}.json"
        mode: "0644"
        content: "{{{{ {{'hook': lookup('ansible.builtin.template', '{role}/templates/deploy-hook.sh.j2'),
          'argv': _tls_certbot_argv, 'names': _matrix_tls_names, 'crt': _matrix_tls_certificate_path,
          'key': _matrix_tls_key_path, 'pem': _matrix_tls_bundle_path, 'hook_path': _tls_deploy_hook}} | to_json }}}}"
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("tls-render")
    # The role's defaults under each variant's values (include_vars would override host variables).
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    hosts = {name: dict(defaults, **v, ansible_facts={"lo": {"ipv6": []}, "all_ipv4_addresses": []}) for name, v in VARIANTS.items()}
    return render(out, PLAYBOOK.format(role=ROLE, out=out), hosts)


def test_certbot_command_line(rendered):
    argv = rendered["acme_email"]["argv"]
    assert argv[:3] == ["certbot", "certonly", "--non-interactive"]
    for flag, value in (("--http-01-address", "127.0.0.1"), ("--http-01-port", "8999"),
                        ("--server", "https://acme.example.test/dir"), ("--cert-name", "matrix.example.test"),
                        ("--deploy-hook", "/usr/local/sbin/mxedge-matrix-tls-deploy"), ("--email", "hostmaster@example.test")):
        assert argv[argv.index(flag) + 1] == value, flag
    assert {"--agree-tos", "--standalone"} <= set(argv)
    assert "--register-unsafely-without-email" not in argv
    # The FQDN first: it names the lineage and is the certificate's first name.
    assert [a for a in argv if a.startswith("--domains=")] == ["--domains=matrix.example.test", "--domains=example.test"]


def test_certbot_without_email_and_a_single_name(rendered):
    argv = rendered["acme_no_email_one_name"]["argv"]
    assert "--register-unsafely-without-email" in argv and "--email" not in argv
    assert [a for a in argv if a.startswith("--domains=")] == ["--domains=other.test"]
    assert argv[argv.index("--http-01-port") + 1] == "8402"
    assert argv[argv.index("--server") + 1] == "https://acme-v02.api.letsencrypt.org/directory"


@pytest.mark.parametrize("name", VARIANTS)
def test_hook_is_a_posix_shell_script_with_the_managed_header(rendered, name):
    hook = rendered[name]["hook"]
    lines = hook.splitlines()
    assert lines[0] == "#!/bin/sh" and lines[2] == "# Ansible managed"
    subprocess.run(["sh", "-n"], input=hook, text=True, check=True)
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", "-s", "sh", "-"], input=hook, text=True, check=True)


def test_hook_names_the_units_to_reload(rendered):
    assert "units=caddy\n" in rendered["acme_no_email_one_name"]["hook"]
    assert "key_group=caddy\n" in rendered["acme_no_email_one_name"]["hook"]


def _install_hook(tmp_path, variant):
    """The rendered hook with its paths moved under tmp_path; returns (hook, tls dir)."""
    tls = tmp_path / "tls"
    tls.mkdir()
    text = variant["hook"].replace("/etc/mxedge-matrix/tls", str(tls))
    hook = tmp_path / "hook.sh"
    hook.write_text(text)
    hook.chmod(0o755)
    return hook, tls


def _lineage(tmp_path, cert_name):
    lineage = tmp_path / "live" / cert_name
    lineage.mkdir(parents=True)
    (lineage / "fullchain.pem").write_text("-----BEGIN CERTIFICATE-----\nleaf\n-----END CERTIFICATE-----\n"
                                           "-----BEGIN CERTIFICATE-----\nintermediate\n-----END CERTIFICATE-----\n")
    (lineage / "privkey.pem").write_text("-----BEGIN PRIVATE KEY-----\nkey\n-----END PRIVATE KEY-----\n")
    return lineage


@pytest.mark.skipif(os.geteuid() != 0, reason="the hook sets owners (root)")
def test_hook_installs_the_lineage_atomically_with_the_modes(rendered, tmp_path):
    hook, tls = _install_hook(tmp_path, rendered["acme_email"])
    lineage = _lineage(tmp_path, "matrix.example.test")
    (tls / "matrix.example.test.crt").write_text("placeholder\n")
    subprocess.run([str(hook)], env=dict(os.environ, RENEWED_LINEAGE=str(lineage)), check=True)
    chain, key = (lineage / "fullchain.pem").read_text(), (lineage / "privkey.pem").read_text()
    files = {p.name: p for p in tls.iterdir()}
    # Nothing left behind but the three files (no temporary directory).
    assert sorted(files) == ["matrix.example.test.crt", "matrix.example.test.key", "matrix.example.test.pem"]
    assert files["matrix.example.test.crt"].read_text() == chain
    assert files["matrix.example.test.key"].read_text() == key
    assert files["matrix.example.test.pem"].read_text() == chain + key
    modes = {name: stat.S_IMODE(path.stat().st_mode) for name, path in files.items()}
    assert modes == {"matrix.example.test.crt": 0o644, "matrix.example.test.key": 0o640, "matrix.example.test.pem": 0o640}


def test_hook_ignores_other_lineages_and_needs_one(rendered, tmp_path):
    hook, tls = _install_hook(tmp_path, rendered["acme_email"])
    other = _lineage(tmp_path, "unrelated.example.test")
    subprocess.run([str(hook)], env=dict(os.environ, RENEWED_LINEAGE=str(other)), check=True)
    assert not list(tls.iterdir())
    env = {k: v for k, v in os.environ.items() if k != "RENEWED_LINEAGE"}
    proc = subprocess.run([str(hook)], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "RENEWED_LINEAGE" in proc.stderr
    # --reload with no units to reload: nothing to do, success.
    subprocess.run([str(hook), "--reload"], env=env, check=True)


def test_hook_leaves_a_self_signed_certificate_alone(rendered, tmp_path):
    hook, tls = _install_hook(tmp_path, rendered["self_signed"])
    lineage = _lineage(tmp_path, "matrix.example.test")
    proc = subprocess.run([str(hook)], env=dict(os.environ, RENEWED_LINEAGE=str(lineage)), capture_output=True, text=True, check=True)
    assert not list(tls.iterdir())
    assert "self_signed" in proc.stderr


def test_managed_paths(rendered):
    variant = rendered["acme_email"]
    assert (variant["crt"], variant["key"], variant["pem"]) == tuple(
        f"/etc/mxedge-matrix/tls/matrix.example.test.{ext}" for ext in ("crt", "key", "pem"))
    assert json.dumps(variant["names"]) == '["matrix.example.test", "example.test"]'
