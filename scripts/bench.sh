#!/usr/bin/env bash
# Benchmark: every proxy flavour (nginx, apache, caddy, haproxy) against the
# homeserver alone, and Synapse workers against the single process; deployed with
# the collection onto test containers; writes docs/benchmark.md. Not part of the
# test suite. See docs/benchmark.md.
#   bash scripts/bench.sh --quick     # development: small counts, short runs
#   bash scripts/bench.sh             # the full run (about 30 min on a quiet 2-core machine)
#   bash scripts/bench.sh --keep ...  # leave the containers up afterwards
#   bash scripts/bench.sh down        # remove the benchmark containers and network
#   bash scripts/bench.sh --help      # every option
# Creates and removes only the containers mxedge-bench-<flavour> and
# mxedge-bench-workers and the network mxedge-bench; load goes only to each
# container's own loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly BENCH_NETWORK=mxedge-bench
# The containers: one per flavour, and nginx's homeserver grown into workers.
readonly BENCH_CONTAINERS="nginx apache caddy haproxy workers"

usage() {
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
  echo
  echo "Options of the run (scripts/bench/run.py), besides --keep:"
  python3 scripts/bench/run.py --help | sed -n '/^options:/,$p'
}

bench_down() {
  local name
  for name in $BENCH_CONTAINERS; do
    docker rm -f "mxedge-bench-${name}" >/dev/null 2>&1 || true
  done
  docker network rm "$BENCH_NETWORK" >/dev/null 2>&1 || true
}

keep=""
reuse=""
args=()
for arg in "$@"; do
  case "$arg" in
    -h | --help)
      usage
      exit 0
      ;;
    --keep) keep=1 ;;
    --reuse)
      reuse=1
      args+=("$arg")
      ;;
    *) args+=("$arg") ;;
  esac
done

# shellcheck source=scripts/bootstrap.sh
. scripts/bootstrap.sh

if [ "${1:-}" = "down" ]; then
  ensure_docker
  bench_down
  log "benchmark containers and network removed"
  exit 0
fi

MXEDGE_IMAGES="bookworm:mxedge/debian12-systemd" bootstrap_all

# A fresh converge needs fresh containers; --reuse keeps the deployed ones.
if [ -z "$reuse" ]; then
  bench_down
fi
if [ -z "$keep" ]; then
  trap bench_down EXIT
fi

python3 scripts/bench/run.py "${args[@]}"
