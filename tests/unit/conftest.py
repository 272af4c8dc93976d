"""Make the collection importable as ansible_collections.mxedge.matrix in unit tests.

scripts/bootstrap.sh links .cache/collections/ansible_collections/mxedge/matrix to the
checkout. Inside a real ansible_collections/mxedge/matrix tree (ansible-test, an
installed collection) the directory above ansible_collections is used instead.

With --fail-on-skip (scripts/test.sh passes it) a skip fails the run unless its reason is
in ALLOWED_SKIPS below; the run ends with how many checks each daemon ran.
"""

import os
import sys
import tempfile

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _collections_dir():
    parts = _ROOT.split(os.sep)
    if len(parts) >= 3 and parts[-3:-1] == ["ansible_collections", "mxedge"] and parts[-1] == "matrix":
        return os.sep.join(parts[:-3]) or os.sep
    cached = os.path.join(_ROOT, ".cache", "collections")
    if os.path.isdir(os.path.join(cached, "ansible_collections", "mxedge", "matrix", "plugins")):
        return cached
    # No bootstrap yet: a throw-away tree whose only entry links to the checkout.
    temp = tempfile.mkdtemp(prefix="mxedge-unit-")
    os.makedirs(os.path.join(temp, "ansible_collections", "mxedge"))
    os.symlink(_ROOT, os.path.join(temp, "ansible_collections", "mxedge", "matrix"))
    return temp


_DIR = _collections_dir()
if _DIR not in sys.path:
    sys.path.insert(0, _DIR)


# Skips that `--fail-on-skip` (what scripts/test.sh passes) lets through: {text in the skip
# reason: why that check cannot run on the test machine}. Every other skip fails the run, so
# that no check is skipped in silence: the render tests' daemon checks need the daemons that
# `ensure_unit_daemons` (scripts/bootstrap.sh) installs, and must not quietly stop running.
# Keep it empty; an entry needs a reason a reviewer accepts.
ALLOWED_SKIPS = {}


def pytest_addoption(parser):
    parser.addoption(
        "--fail-on-skip", action="store_true", default=False,
        help="fail every skipped test or module whose reason is not in ALLOWED_SKIPS (tests/unit/conftest.py)",
    )


def _unexpected_skip(config, report):
    if not report.skipped or hasattr(report, "wasxfail") or not config.getoption("--fail-on-skip", default=False):
        return None
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if any(allowed in reason for allowed in ALLOWED_SKIPS):
        return None
    return f"unexpected skip (--fail-on-skip; allowed: ALLOWED_SKIPS in tests/unit/conftest.py): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item):
    outcome = yield
    report = outcome.get_result()
    message = _unexpected_skip(item.config, report)
    if message:
        report.outcome, report.longrepr = "failed", message


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    message = _unexpected_skip(collector.config, report)
    if message:
        report.outcome, report.longrepr = "failed", message


def pytest_terminal_summary(terminalreporter):
    """How many checks each daemon ran (counted by tests/unit/roles/daemon_checks.py)."""
    checks = getattr(sys.modules.get("daemon_checks"), "CHECKS", None)
    if checks is None:
        return
    terminalreporter.section("daemon checks")
    for check, count in sorted(checks.items()):
        terminalreporter.write_line(f"{count:4d}  {check}")
    terminalreporter.write_line(f"{sum(checks.values()):4d}  in all")
