#!/usr/bin/env bash
# Run `ansible-test sanity` on the collection.
#
# ansible-test insists on a real .../ansible_collections/mxedge/matrix directory
# (it resolves the working directory, so the bootstrap's symlink does not do), and
# its --docker mode needs images we cannot pull. So: copy the checkout into
# <dir>/ansible_collections/mxedge/matrix (rsync, honouring .gitignore, without
# .git, caches and Molecule/ansible-lint scratch directories) and run
# ansible-test there with --venv: every sanity test gets its own virtualenv with
# ansible-test's pinned requirements from PyPI (--requirements), cached in
# ~/.ansible/test/venv and in the copy's tests/output, so runs after the first
# one are fast. <dir> must not be inside a git work tree (ansible-test would
# walk up to that repository and list its tracked files instead of the copy),
# hence not under .cache.
#
# Usage: scripts/sanity.sh [extra ansible-test sanity arguments, e.g. --test pep8]
# Environment: MXEDGE_SANITY_PYTHON (default 3.11), MXEDGE_SANITY_DIR (parent of
# the ansible_collections tree, default ${TMPDIR:-/tmp}/mxedge-sanity-<uid>).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/bootstrap.sh
. "${here}/bootstrap.sh"
ensure_venv
mxedge_env

python_version="${MXEDGE_SANITY_PYTHON:-3.11}"
sanity_parent="${MXEDGE_SANITY_DIR:-${TMPDIR:-/tmp}/mxedge-sanity-$(id -u)}"
work="${sanity_parent}/ansible_collections/mxedge/matrix"
mkdir -p "$work"
if git -C "$work" rev-parse --show-toplevel >/dev/null 2>&1; then
  echo "sanity: ${work} is inside a git work tree; set MXEDGE_SANITY_DIR elsewhere" >&2
  exit 2
fi
# One run at a time per copy.
exec 9>"${sanity_parent}/.lock"
flock 9

# Mirror the checkout. tests/output (ansible-test's results and virtualenvs) is
# protected from --delete so that the cache survives between runs.
rsync -a --delete --delete-excluded \
  --filter='P /tests/output/' \
  --exclude='/.git/' \
  --exclude='/.cache/' \
  --exclude='/.venv/' \
  --exclude='/.ansible/' \
  --exclude='.molecule/' \
  --exclude='.pytest_cache/' \
  --exclude='.mypy_cache/' \
  --exclude='.ruff_cache/' \
  --exclude='.tox/' \
  --exclude='__pycache__/' \
  --exclude='/tests/output/' \
  --filter=':- .gitignore' \
  "${MXEDGE_ROOT}/" "${work}/"

# ansible-test bootstraps pip into each virtualenv with a get-pip.py it downloads
# from ci-files.testing.ansible.com, which this network cannot reach. When that
# script is not cached yet, cache a stand-in that does the same job with the
# interpreter's own ensurepip followed by `pip install` of the requested pinned
# packages from PyPI. A real get-pip.py already in the cache is left alone.
pip_version="$(python - <<'PY'
import types
from ansible_test._internal.python_requirements import get_venv_packages
print(get_venv_packages(types.SimpleNamespace(version="3"))["pip"])
PY
)"
get_pip="${HOME}/.ansible/test/cache/get_pip_${pip_version//./_}.py"
if [ ! -s "$get_pip" ]; then
  mkdir -p "$(dirname "$get_pip")"
  cat >"${get_pip}.tmp" <<'PY'
"""Offline stand-in for get-pip.py, written by mxedge.matrix scripts/sanity.sh.

Called as `python get_pip.py [pip install options] pip==X [--no-setuptools] [--no-wheel]`
inside a fresh virtualenv: bootstrap pip with ensurepip, then install what was asked
for from the package index pip is configured with.
"""
import subprocess
import sys

args = sys.argv[1:]
drop = [name for name, flag in (("setuptools", "--no-setuptools"), ("wheel", "--no-wheel")) if flag in args]
args = [arg for arg in args if arg not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"], stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet"] + args)
for name in drop:
    subprocess.call([sys.executable, "-m", "pip", "uninstall", "--quiet", "--yes", name],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
PY
  mv "${get_pip}.tmp" "$get_pip"
fi

skip=(
  # PowerShell linting needs pwsh, which is neither in Debian nor on PyPI; the
  # collection has no PowerShell code.
  --skip-test pslint
)
if ! command -v shellcheck >/dev/null 2>&1; then
  # The shellcheck binary comes from Debian (apt-get install shellcheck); without it the
  # test cannot run. Install it to have the shell scripts checked too.
  echo "sanity: shellcheck not installed, skipping the shellcheck test" >&2
  skip+=(--skip-test shellcheck)
fi

cd "$work"
start=$SECONDS
status=0
ansible-test sanity --venv --python "$python_version" --requirements --color no \
  "${skip[@]}" "$@" || status=$?
echo "sanity: finished in $((SECONDS - start)) s with exit status ${status} (results: ${work}/tests/output)" >&2
exit "$status"
