"""Check mode on a host where nothing is installed yet.

hs2 has only had the shared contract applied (converge.yml), so it is what an
operator previews before a first deployment. `ansible-playbook --check` of the
real entry point must run to the end for every proxy flavour, report the
changes a real run would make, and leave the host exactly as it was: the same
packages, users, units and files.
"""

import pytest
import testinfra
from conftest import INVENTORY, run_site

HOST_NAME = "matrix-hs2"
HOST = testinfra.get_host(f"ansible://{HOST_NAME}?ansible_inventory={INVENTORY}")

# Everything a real run would change: packages, accounts, units, and the trees the
# roles write to (systemd's timer stamps and the journal move on their own).
FINGERPRINT = r"""
{ dpkg-query -W -f='${Package} ${Version} ${Status}\n'; getent passwd; getent group;
  systemctl list-unit-files --no-legend --no-pager;
  find /etc /opt /srv /usr/local /var/lib /var/log /var/www -xdev \
    \( -path /var/lib/systemd -o -path /var/log/journal \) -prune -o -printf '%p %m %u %g %s %T@\n' 2>/dev/null | sort;
} | sha256sum
"""

# Each flavour once; the certificate sources the collection makes itself (a
# fresh host has no operator files), and the local PostgreSQL once.
CASES = [
    ("nginx", {"matrix_tls_source": "self_signed", "homeserver_database": "postgresql"}),
    ("apache", {"matrix_tls_source": "acme"}),
    ("caddy", {"matrix_tls_source": "acme"}),
    ("haproxy", {"matrix_tls_source": "acme"}),
]


@pytest.mark.parametrize(("flavour", "extra"), CASES, ids=[flavour for flavour, _extra in CASES])
def test_check_mode_on_a_fresh_host_reports_and_changes_nothing(flavour, extra):
    assert HOST.run("test -e /etc/synapse").rc != 0, "hs2 is no longer a fresh host"
    before = HOST.check_output(FINGERPRINT)
    extra_vars = {"matrix_proxy_flavour": flavour, "matrix_acme_email": "hostmaster@other.test", **extra}
    proc, report = run_site(extra_vars, limit=HOST_NAME, check_mode=True)
    counts = report["stats"][HOST_NAME]
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert counts["failures"] == 0 and counts["unreachable"] == 0, counts
    # A first deployment: at least the packages, the homeserver's files and the proxy's configuration.
    assert counts["changed"] >= 10, counts
    assert HOST.check_output(FINGERPRINT) == before
