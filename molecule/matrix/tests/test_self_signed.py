"""matrix_tls_source=self_signed through nginx on hs1 (converge.yml's second play).

nginx serves the certificate mxedge.matrix.tls made: self-signed, for both names,
and it verifies with itself as the only trust anchor. The idempotence step has
already shown that a re-run keeps it; here a run with other names replaces it, and
a run with the original names brings those back.
"""

import json
import os
import subprocess
import sys

import pytest
import testinfra

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
SCENARIO = os.environ["MOLECULE_SCENARIO_DIRECTORY"]
HOST = testinfra.get_host(f"ansible://matrix-hs1?ansible_inventory={INVENTORY}")
TLS = "/etc/mxedge-matrix/tls/matrix.example.test"
NAMES = ["matrix.example.test", "example.test"]


def _served_certificate(name):
    """The PEM nginx serves for `name` on hs1:443, verified with the installed certificate as the only CA."""
    out = HOST.run(
        f"echo | openssl s_client -connect 127.0.0.1:443 -servername {name} -CAfile {TLS}.crt -verify_return_error "
        f"-verify_hostname {name} 2>/dev/null | openssl x509"
    )
    assert out.rc == 0, out.stderr
    return out.stdout


def _sans(pem):
    text = HOST.run(f"printf '%s' '{pem}' | openssl x509 -noout -ext subjectAltName").stdout
    return sorted(part.strip()[4:] for part in text.split("\n", 1)[1].split(",") if part.strip().startswith("DNS:"))


def test_files_and_modes():
    for suffix, mode in ((".crt", 0o644), (".key", 0o640), (".pem", 0o640)):
        file = HOST.file(TLS + suffix)
        assert (file.user, file.group, file.mode) == ("root", "root", mode), suffix
    assert HOST.file(TLS + ".pem").content == HOST.file(TLS + ".crt").content + HOST.file(TLS + ".key").content


def test_nginx_serves_it_for_both_names():
    installed = HOST.check_output(f"openssl x509 -in {TLS}.crt")
    for name in NAMES:
        served = _served_certificate(name)
        assert served.strip() == installed.strip()
        assert _sans(served) == sorted(NAMES)
    subject, issuer = (HOST.check_output(f"openssl x509 -in {TLS}.crt -noout -{part}") for part in ("subject", "issuer"))
    assert subject.split("=", 1)[1] == issuer.split("=", 1)[1]  # self-signed


def test_no_port_80_listener_without_acme():
    # Debian's default site keeps port 80 (self_signed needs no challenge listener).
    assert HOST.file("/etc/nginx/sites-enabled/default").exists


def _converge(extra_vars):
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0")
    return subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", INVENTORY, "--limit", "matrix-hs1",
         "-e", json.dumps(extra_vars), os.path.join(SCENARIO, "converge.yml")],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )


@pytest.mark.parametrize("server_name", ["renamed.example.test", "example.test"])
def test_new_names_make_a_new_certificate(server_name):
    before = HOST.check_output(f"openssl x509 -in {TLS}.crt -noout -serial")
    proc = _converge({"matrix_server_name": server_name})
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert HOST.check_output(f"openssl x509 -in {TLS}.crt -noout -serial") != before
    names = ["matrix.example.test", server_name]
    assert _sans(_served_certificate(server_name)) == sorted(names)
