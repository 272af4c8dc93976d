"""Alongside the operator's proxy (docs/alongside.md, issue 21): nothing of the operator's lost.

hs1's proxy was serving two websites of the operator's over TLS (example.test,
the base domain, and unrelated.test) with global settings of the operator's
before the collection ever ran (prepare: molecule/shared/operator/<flavour>.yml,
then the recorded state under /var/lib/mxedge-test). hs1 converged with
matrix_proxy_mode=alongside and matrix_well_known_site=operator; hs2 with
matrix_proxy_mode=dedicated. Federation through hs1's proxy, with the
well-known documents served from the operator's base-domain website, is what
test_e2e.py proves; here: the operator's side. Removal is the scenario's
side effect (molecule/shared/side_effect.yml).
"""

import difflib
import json

import pytest
from conftest import play_recap, run_converge

STATE = "/var/lib/mxedge-test"


@pytest.fixture(scope="module")
def operator(hs1):
    if "mxedge_test_operator_paths" not in hs1.vars:
        pytest.skip("this scenario prepares no proxy of the operator's (no mxedge_test_operator_paths)")
    return hs1


def _now(node, what, arguments):
    return node.host.check_output(f"mxedge-test-operator-state {what} {' '.join(arguments)}")


def test_operator_websites_answer_as_before(operator):
    """Both websites answer byte for byte as before: status, every header but Date, body."""
    before = json.loads(operator.host.file(f"{STATE}/before.sites.json").content_string)
    now = json.loads(_now(operator, "sites", operator.vars["mxedge_test_operator_urls"]))
    assert now == before
    assert all(response["status"] == 200 for response in now.values()), now


def test_operator_settings_still_in_force(operator):
    """The daemon runs with the operator's global settings (the flavour's probe, as the daemon reports them)."""
    before = operator.host.file(f"{STATE}/before.probe").content_string
    now = operator.host.check_output(f"( {operator.vars['mxedge_test_operator_probe']} )")
    assert now.strip() == before.strip()


def _only_marked_lines_added(before, after):
    """The lines the diff adds all carry the role's mark; a removed line only comes back extended with it."""
    removed, added = [], []
    for line in difflib.ndiff(before.splitlines(), after.splitlines()):
        if line.startswith("- "):
            removed.append(line[2:])
        elif line.startswith("+ "):
            added.append(line[2:])
    foreign = [line for line in added if "mxedge" not in line.lower()]
    unpaired = [line for line in removed if not any(new.startswith(line.rstrip()) and "mxedge" in new.lower() for new in added)]
    return foreign, unpaired, added


def test_operator_files_intact(operator):
    """Every file, link and directory of the operator's is unchanged, but for the role's marked lines in the
    website file the operator consented to (matrix_well_known_site_file); what is new is the role's own (mxedge)."""
    edited = set(operator.vars.get("mxedge_test_operator_edited", []))
    before = dict(line.split(" ", 1) for line in
                  operator.host.file(f"{STATE}/before.manifest").content_string.splitlines())
    now = dict(line.split(" ", 1) for line in _now(operator, "manifest", operator.vars["mxedge_test_operator_paths"]).splitlines())
    gone = sorted(set(before) - set(now))
    changed = sorted(path for path in set(before) & set(now) if before[path] != now[path] and path not in edited)
    # Apache: the modules the role enabled (a2enmod links), recorded by the role in a state file of its
    # own so that remove disables exactly those; links of other modules would be foreign.
    modules_state = operator.vars.get("mxedge_test_operator_modules_state")
    enabled = set(operator.host.file(modules_state).content_string.split()) if modules_state else set()
    own_links = {f"/etc/apache2/mods-enabled/{module}.{kind}" for module in enabled for kind in ("load", "conf")}
    foreign_new = sorted(path for path in set(now) - set(before) if "mxedge" not in path.lower() and path not in own_links)
    assert (gone, changed, foreign_new) == ([], [], [])
    assert edited, "the scenario names the operator's website file the role edits with consent"
    for path in edited:
        saved = f"{STATE}/before/{path.replace('/', '_')}"
        foreign, unpaired, added = _only_marked_lines_added(operator.host.file(saved).content_string,
                                                            operator.host.file(path).content_string)
        assert (foreign, unpaired) == ([], []), path
        assert added, f"{path}: the role's include line is missing (matrix_well_known_site_file consents to it)"


def test_conflict_stops_before_anything_changes(operator):
    """A Matrix host name the operator's site already serves on the same port stops the run in preflight, with a
    message naming the variable and the operator's site; the operator's files and the role's are as before."""
    paths = operator.vars["mxedge_test_operator_paths"]
    before = _now(operator, "manifest", paths)
    proc = run_converge({"matrix_homeserver_fqdn": "unrelated.test"}, operator.name)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    assert "matrix_homeserver_fqdn" in output and "unrelated.test on port 443" in output, output[-3000:]
    recap = play_recap(proc.stdout)
    assert recap[operator.name]["changed"] == 0, output[-3000:]
    assert _now(operator, "manifest", paths) == before
