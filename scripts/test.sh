#!/usr/bin/env bash
# Every test of the collection, from a fresh Debian 12 machine (root):
#   bash scripts/test.sh              # everything (what .ci/run calls)
#   bash scripts/test.sh lint unit    # only some stages
#   MOLECULE_SCENARIOS="nginx" bash scripts/test.sh molecule
#   MOLECULE_JOBS=1 bash scripts/test.sh molecule   # one scenario at a time (default 2)
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

# Scenarios run MOLECULE_JOBS at a time (default 2): each has its own containers and
# Docker network (names carry the scenario), and much of a scenario's time is spent
# waiting (apt and PyPI downloads, Synapse starting, long-polls and idle WebSockets),
# so two at a time on two cores take far less than one after the other. Longest
# first, so that the last to start is a short one. Each scenario's output goes to
# .cache/molecule-logs/<scenario>.log and is printed whole when it ends; a failure
# fails the stage after every running scenario has ended.
MOLECULE_ORDER="workers edge apache matrix nginx acme haproxy caddy forward_proxy homeserver"

molecule_one() {
  local s="$1" logs="$2"
  local start=$SECONDS rc=0
  molecule test -s "$s" >"${logs}/${s}.log" 2>&1 || rc=$?
  printf '%s %s %s\n' "$s" "$rc" "$((SECONDS - start))" >"${logs}/${s}.result"
  return "$rc"
}

stage_molecule() {
  local scenarios="${MOLECULE_SCENARIOS:-}"
  if [ -z "$scenarios" ]; then
    local all ordered="" s
    all="$(cd molecule && for d in */molecule.yml; do dirname "$d"; done | tr '\n' ' ')"
    for s in $MOLECULE_ORDER; do
      case " $all " in *" $s "*) ordered+="$s " ;; esac
    done
    for s in $all; do
      case " $ordered " in *" $s "*) ;; *) ordered+="$s " ;; esac
    done
    scenarios="$ordered"
  fi
  local jobs="${MOLECULE_JOBS:-2}" logs="${MXEDGE_ROOT}/.cache/molecule-logs"
  rm -rf "$logs" && mkdir -p "$logs"
  local -A running=()
  local failed=() pid s
  report() {
    local name rc secs
    read -r name rc secs <"${logs}/$1.result"
    log "molecule test -s ${name}: $([ "$rc" = 0 ] && echo passed || echo "FAILED (exit ${rc})") in ${secs} s; its output:"
    sed "s/^/[${name}] /" "${logs}/${name}.log" >&2
    took[molecule:$name]=$secs
    [ "$rc" = 0 ] || failed+=("$name")
  }
  for s in $scenarios; do
    while [ "${#running[@]}" -ge "$jobs" ]; do
      wait -n || true
      for pid in "${!running[@]}"; do
        if ! kill -0 "$pid" 2>/dev/null; then report "${running[$pid]}"; unset "running[$pid]"; fi
      done
    done
    log "molecule test -s ${s} (started; ${jobs} at a time)"
    molecule_one "$s" "$logs" &
    running[$!]="$s"
  done
  while [ "${#running[@]}" -gt 0 ]; do
    wait -n || true
    for pid in "${!running[@]}"; do
      if ! kill -0 "$pid" 2>/dev/null; then report "${running[$pid]}"; unset "running[$pid]"; fi
    done
  done
  if [ "${#failed[@]}" -gt 0 ]; then
    log "molecule: failed scenarios: ${failed[*]} (logs in ${logs})"
    return 1
  fi
}

for stage in "${stages[@]}"; do
  run_stage "$stage" "stage_${stage}"
done

log "timings (s):"
for k in "${!took[@]}"; do printf '  %-28s %5d\n' "$k" "${took[$k]}"; done | sort >&2
log "all stages passed: ${stages[*]}"
