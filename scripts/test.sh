#!/usr/bin/env bash
# Every test of the collection, from a fresh Debian 12 machine (root):
#   bash scripts/test.sh              # everything (what .ci/run calls)
#   bash scripts/test.sh lint unit    # only some stages
#   MOLECULE_SCENARIOS="nginx" bash scripts/test.sh molecule
# Stages: lint (yamllint, ansible-lint), sanity (ansible-test), unit (pytest),
# build (galaxy tarball contents), molecule (every scenario, or MOLECULE_SCENARIOS).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bootstrap.sh
. scripts/bootstrap.sh
bootstrap_all

stages=("$@")
[ "${#stages[@]}" -gt 0 ] || stages=(lint sanity unit build molecule)

declare -A took
run_stage() {
  local name="$1"; shift
  local start=$SECONDS
  log "stage ${name}"
  "$@"
  took[$name]=$((SECONDS - start))
}

stage_lint() {
  yamllint --strict .
  ansible-lint --strict
}

stage_sanity() {
  bash scripts/sanity.sh
}

# The render tests feed every variant to its own daemon (nginx -t, apache2ctl and
# trial starts, haproxy -c, caddy adapt): ensure_unit_daemons installs them. A skip
# fails the stage unless tests/unit/conftest.py allows it (ALLOWED_SKIPS).
stage_unit() {
  ensure_unit_daemons
  python -m pytest -q -p no:cacheprovider --fail-on-skip -rs tests/unit
}

stage_build() {
  local out
  out="$(mktemp -d)"
  ansible-galaxy collection build --force --output-path "$out" . >/dev/null
  local tarball
  tarball="$(ls "$out"/mxedge-matrix-*.tar.gz)"
  if tar -tzf "$tarball" | grep -E '^(molecule|tests|scripts|\.cache|\.ci|\.config|\.git)/'; then
    echo "build: the tarball carries test or dev files (above); fix build_ignore in galaxy.yml" >&2
    return 1
  fi
  ansible-galaxy collection install --force -p "$out/installed" "$tarball" >/dev/null
  ANSIBLE_COLLECTIONS_PATH="$out/installed" ansible-doc -t role mxedge.matrix.matrix >/dev/null
  rm -rf "$out"
  echo "build: $(basename "$tarball") builds, installs and documents its roles"
}

stage_molecule() {
  local scenarios="${MOLECULE_SCENARIOS:-}"
  if [ -z "$scenarios" ]; then
    scenarios="$(cd molecule && for d in */molecule.yml; do dirname "$d"; done | tr '\n' ' ')"
  fi
  local s
  for s in $scenarios; do
    local start=$SECONDS
    log "molecule test -s ${s}"
    molecule test -s "$s"
    took[molecule:$s]=$((SECONDS - start))
  done
}

for stage in "${stages[@]}"; do
  run_stage "$stage" "stage_${stage}"
done

log "timings (s):"
for k in "${!took[@]}"; do printf '  %-28s %5d\n' "$k" "${took[$k]}"; done | sort >&2
log "all stages passed: ${stages[*]}"
