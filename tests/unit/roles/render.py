"""Render a role's templates with the real roles of the collection, on localhost.

One ansible-playbook run renders many variable sets at once: each set is a host
of a local inventory, and the role's own render playbook (written by the test)
leaves one JSON file per host in the output directory.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]

# MAS and both MatrixRTC services on host names of their own (MX13, MX14): the "services"
# variant of every flavour's render tests. Each flavour sets matrix_rtc_jwt_upstream itself,
# to a DNS name its checker resolves or not, and says why.
SERVICE_VARIABLES = {
    "matrix_server_name": "example.test",
    "matrix_homeserver_fqdn": "matrix.example.test",
    "matrix_mas_url": "https://auth.example.test/",
    "matrix_mas_upstream": "http://127.0.0.1:8080",
    "matrix_rtc_jwt_url": "https://rtc-jwt.example.test/",
    "matrix_rtc_sfu_url": "https://sfu.example.test/",
    "matrix_rtc_sfu_upstream": "http://127.0.0.1:7880",
}

# The molecule scenarios' hs1 alongside an operator's proxy (MX15): single port 443, the
# operator's example.test website includes the role's well-known snippet, with two routes of
# the operator's on it (a static document and a refused prefix). Each flavour adds what its
# pretended operator configuration needs.
OPERATOR_WELL_KNOWN_ROUTES = [
    {"vhost": "well_known", "id": "support", "kind": "exact", "path": "/.well-known/matrix/support",
     "action": "static", "body": '{"contacts":[]}'},
    {"vhost": "well_known", "id": "no-policy", "kind": "prefix", "path": "/.well-known/matrix/policy",
     "action": "refuse", "status": 403},
]
OPERATOR_SITE_VARIABLES = {
    "matrix_server_name": "example.test",
    "matrix_homeserver_fqdn": "matrix.example.test",
    "matrix_federation_port": 443,
    "matrix_proxy_mode": "alongside",
    "matrix_well_known_site": "operator",
    "matrix_extra_routes": OPERATOR_WELL_KNOWN_ROUTES,
}


def collections_path():
    """The sys.path entry under which mxedge.matrix is importable as a collection."""
    for entry in sys.path:
        if (pathlib.Path(entry) / "ansible_collections" / "mxedge" / "matrix" / "roles").is_dir():
            return entry
    pytest.skip("mxedge.matrix is not importable as a collection")
    return None


def ansible_playbook():
    found = shutil.which("ansible-playbook", path=os.path.dirname(sys.executable)) or shutil.which("ansible-playbook")
    if not found:
        pytest.skip("ansible-playbook is not installed")
    return found


def run_playbook(out, playbook, hosts):
    """Run `playbook` (text) for `hosts` ({name: vars}) on localhost, in `out`; the finished process."""
    inventory = {
        name: dict(variables, ansible_connection="local", ansible_python_interpreter=sys.executable)
        for name, variables in hosts.items()
    }
    (out / "inventory.yml").write_text(yaml.safe_dump({"all": {"hosts": inventory}}))
    (out / "render.yml").write_text(playbook)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_path(), ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    env.pop("ANSIBLE_FORCE_COLOR", None)
    return subprocess.run(
        [ansible_playbook(), "-i", str(out / "inventory.yml"), str(out / "render.yml")],
        cwd=out, env=env, capture_output=True, text=True, timeout=300, check=False,
    )


def render(out, playbook, hosts):
    """Run `playbook` (text) for `hosts` ({name: vars}) on localhost; {name: JSON written to out/<name>.json}."""
    proc = run_playbook(out, playbook, hosts)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return {name: json.loads((out / f"{name}.json").read_text()) for name in hosts}
