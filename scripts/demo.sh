#!/usr/bin/env bash
# The demo: one local container (Debian 12, systemd) running Synapse behind
# nginx with a private CA, a demo user, and what to try printed at the end.
#   bash scripts/demo.sh          # bring it up (idempotent)
#   bash scripts/demo.sh down     # tear it down
# Set MXEDGE_DEMO_PROXY=apache|caddy|haproxy to put another proxy in front.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bootstrap.sh
. scripts/bootstrap.sh

if [ "${1:-up}" = "down" ]; then
  ensure_docker
  docker rm -f mxedge-demo >/dev/null 2>&1 || true
  docker network rm mxedge-demo >/dev/null 2>&1 || true
  rm -rf "${MXEDGE_CACHE}/demo"
  log "demo removed"
  exit 0
fi

MXEDGE_IMAGES="bookworm:mxedge/debian12-systemd" bootstrap_all
ansible-playbook -e "matrix_proxy_flavour=${MXEDGE_DEMO_PROXY:-nginx}" playbooks/demo.yml
