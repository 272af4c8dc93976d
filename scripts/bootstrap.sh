#!/usr/bin/env bash
# Bring a fresh Debian 12 machine (root) to the point where the collection's
# demo and tests can run: Docker from Debian, a running daemon, local systemd
# base images for Debian 12 and 13 (built from the Debian archive, nothing is
# pulled), a virtualenv with the pinned Python dependencies, and the collection
# visible to Ansible as mxedge.matrix.
#
# Idempotent: every step checks first and does nothing when already done.
# Source it (`. scripts/bootstrap.sh`) to get the environment exported.
set -euo pipefail

MXEDGE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MXEDGE_CACHE="${MXEDGE_CACHE:-${MXEDGE_ROOT}/.cache}"
MXEDGE_VENV="${MXEDGE_VENV:-${MXEDGE_CACHE}/venv}"
# The collection path is this checkout's own, whatever MXEDGE_CACHE says: two
# checkouts sharing one cache (a venv, images) must not re-link each other's
# collection (a run from a second clone once made the first one's tests import it).
MXEDGE_COLLECTIONS="${MXEDGE_ROOT}/.cache/collections"
MXEDGE_IMAGES="${MXEDGE_IMAGES:-bookworm:mxedge/debian12-systemd trixie:mxedge/debian13-systemd}"

log() { printf '==> %s\n' "$*" >&2; }

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "bootstrap: $1 needs root (run as root or install it yourself)" >&2
    exit 1
  fi
}

apt_updated=""
apt_install() {
  need_root "installing $*"
  if [ -z "$apt_updated" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_packages() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
  command -v git >/dev/null 2>&1 || missing+=(git)
  command -v rsync >/dev/null 2>&1 || missing+=(rsync)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
  # The homeserver scenario deploys over SSH, as operators do.
  command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
  # mmdebstrap verifies the archive with these (Recommends are installed too,
  # as in the test bed where this was tried).
  dpkg -s debian-archive-keyring >/dev/null 2>&1 || missing+=(debian-archive-keyring)
  dpkg -s ca-certificates >/dev/null 2>&1 || missing+=(ca-certificates)
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing from the Debian archive: ${missing[*]}"
    apt_install "${missing[@]}"
  fi
}

ensure_docker() {
  if docker info >/dev/null 2>&1; then
    return 0
  fi
  need_root "starting dockerd"
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    log "starting docker.service"
    systemctl start docker || true
  fi
  if ! docker info >/dev/null 2>&1; then
    log "starting dockerd in the background (log: /var/log/dockerd.log)"
    nohup dockerd >/var/log/dockerd.log 2>&1 &
  fi
  local waited=0
  while [ "$waited" -lt 60 ]; do
    docker info >/dev/null 2>&1 && return 0
    sleep 1
    waited=$((waited + 1))
  done
  echo "bootstrap: dockerd did not answer within 60 s; see /var/log/dockerd.log" >&2
  tail -n 20 /var/log/dockerd.log >&2 || true
  exit 1
}

# Base images: Debian with systemd as PID 1, python3 for Ansible, and the
# machine's extra CA certificates (a TLS-inspecting egress proxy or a corporate
# CA) so that pip and apt inside the containers verify TLS like the host does.
ensure_image() {
  local suite="$1" tag="$2"
  local stamp
  stamp="$(cat /usr/local/share/ca-certificates/*.crt 2>/dev/null | sha256sum | cut -c1-12)"
  if [ "$(docker image inspect -f '{{ index .Config.Labels "mxedge.ca" }}' "${tag}:latest" 2>/dev/null)" = "$stamp" ]; then
    return 0
  fi
  need_root "building ${tag}"
  log "building ${tag}:latest from Debian ${suite} (mmdebstrap)"
  local work
  work="$(mktemp -d)"
  local hooks=()
  if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    # shellcheck disable=SC2016 # "$1" is the chroot, expanded by mmdebstrap's hook shell
    hooks+=(--customize-hook='mkdir -p "$1/usr/local/share/ca-certificates"'
      --customize-hook='cp /usr/local/share/ca-certificates/*.crt "$1/usr/local/share/ca-certificates/"'
      --customize-hook='chroot "$1" update-ca-certificates >/dev/null')
  fi
  # shellcheck disable=SC2016 # "$1" is the chroot, expanded by mmdebstrap's hook shell
  mmdebstrap --quiet --variant=apt \
    --include=systemd,systemd-sysv,dbus,python3,python3-apt,ca-certificates,iproute2,procps,sudo,curl,locales \
    --customize-hook='rm -f "$1"/etc/machine-id; : > "$1"/etc/machine-id' \
    --customize-hook='chroot "$1" systemctl mask getty@tty1.service systemd-logind.service >/dev/null 2>&1 || true' \
    "${hooks[@]}" \
    "$suite" "${work}/rootfs.tar"
  docker import \
    --change 'CMD ["/lib/systemd/systemd"]' \
    --change 'ENV container=docker' \
    --change "LABEL mxedge.ca=${stamp}" \
    "${work}/rootfs.tar" "${tag}:latest" >/dev/null
  rm -rf "$work"
}

ensure_images() {
  local pair
  for pair in $MXEDGE_IMAGES; do
    ensure_image "${pair%%:*}" "${pair#*:}"
  done
}

ensure_venv() {
  local req="${MXEDGE_ROOT}/requirements-dev.txt"
  local stamp="${MXEDGE_VENV}/.mxedge-requirements"
  if [ -x "${MXEDGE_VENV}/bin/python" ] && cmp -s "$req" "$stamp"; then
    return 0
  fi
  log "creating virtualenv ${MXEDGE_VENV} with pinned requirements"
  python3 -m venv "$MXEDGE_VENV"
  "${MXEDGE_VENV}/bin/pip" install --quiet --upgrade pip 2>&1 | grep -v 'is ignored' || true
  "${MXEDGE_VENV}/bin/pip" install --quiet -r "$req" 2>&1 | grep -v 'is ignored' || true
  "${MXEDGE_VENV}/bin/python" -c 'import ansible, molecule, testinfra, nio' # fail loudly
  cp "$req" "$stamp"
}

# Ansible finds the collection as mxedge.matrix through a collections tree whose
# only entry is a symlink to this checkout.
ensure_collection_path() {
  local dir="${MXEDGE_COLLECTIONS}/ansible_collections/mxedge"
  mkdir -p "$dir"
  if [ "$(readlink "${dir}/matrix" 2>/dev/null)" != "$MXEDGE_ROOT" ]; then
    rm -f "${dir}/matrix"
    ln -s "$MXEDGE_ROOT" "${dir}/matrix"
  fi
}

# The daemons the unit tests feed the rendered configurations to (nginx -t,
# apache2ctl configtest and trial starts, haproxy -c and trial starts in private
# network and PID namespaces, caddy fmt/adapt): Debian 12's packages on this
# machine, installed with their services kept from starting (policy-rc.d exits
# 101 during the install) and disabled afterwards, so that nothing listens now
# or after a reboot; and Debian 13's nginx (1.26, OpenSSL 3.5) in a local image
# for the variants that pretend those versions. Only the unit stage of
# scripts/test.sh calls this (the demo needs none of it).
MXEDGE_UNIT_NGINX_IMAGE="${MXEDGE_UNIT_NGINX_IMAGE:-mxedge/unit-nginx-debian13}"

ensure_unit_daemons() {
  local missing=()
  command -v nginx >/dev/null 2>&1 || missing+=(nginx)
  { command -v apache2ctl && command -v a2enmod; } >/dev/null 2>&1 || missing+=(apache2)
  command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
  command -v caddy >/dev/null 2>&1 || missing+=(caddy)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
  command -v ip >/dev/null 2>&1 || missing+=(iproute2)
  if [ "${#missing[@]}" -gt 0 ]; then
    need_root "installing the unit tests' daemons"
    log "installing from the Debian archive, services kept stopped and disabled: ${missing[*]}"
    local policy=/usr/sbin/policy-rc.d saved=""
    if [ -e "$policy" ]; then
      saved="$(mktemp)"
      cp -p "$policy" "$saved"
    fi
    printf '#!/bin/sh\n# scripts/bootstrap.sh: no service starts during this install\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    local before rc=0
    before="$(systemctl list-unit-files --state=enabled --no-legend 2>/dev/null | awk '{print $1}' | sort)"
    apt_install "${missing[@]}" || rc=$?
    if [ -n "$saved" ]; then
      cp -p "$saved" "$policy"
      rm -f "$saved"
    else
      rm -f "$policy"
    fi
    [ "$rc" -eq 0 ] || return "$rc"
    # What the install enabled (systemd units, their SysV links) is disabled again.
    local unit
    for unit in $(comm -13 <(printf '%s\n' "$before") \
      <(systemctl list-unit-files --state=enabled --no-legend 2>/dev/null | awk '{print $1}' | sort)); do
      systemctl disable --quiet "$unit" >/dev/null 2>&1 || true
    done
    # Started by a service manager despite policy-rc.d (this PID namespace only)?
    if pgrep --ns $$ --nslist pid -f \
      '^(/usr/sbin/nginx -g daemon on|/usr/sbin/apache2 -k start|/usr/sbin/haproxy -Ws -f /etc/haproxy|/usr/bin/caddy run --environ)' \
      >/dev/null 2>&1; then
      echo "bootstrap: a daemon's service started during the install; stop it (pgrep -af 'nginx|apache2|haproxy|caddy')" >&2
      return 1
    fi
  fi
  ensure_unit_nginx_image
}

# Debian 13's nginx on the mxedge/debian13-systemd base, rebuilt when the base changes.
ensure_unit_nginx_image() {
  local base="mxedge/debian13-systemd:latest" base_id
  base_id="$(docker image inspect -f '{{.Id}}' "$base")"
  if [ "$(docker image inspect -f '{{ index .Config.Labels "mxedge.base" }}' "${MXEDGE_UNIT_NGINX_IMAGE}:latest" 2>/dev/null)" = "$base_id" ]; then
    return 0
  fi
  log "building ${MXEDGE_UNIT_NGINX_IMAGE}:latest (Debian 13's nginx, for the unit tests)"
  local name="mxedge-unit-nginx-build"
  docker rm -f "$name" >/dev/null 2>&1 || true
  # policy-rc.d: the package's postinst must not start nginx in the build container.
  docker run --name "$name" "$base" sh -ec '
    printf "#!/bin/sh\nexit 101\n" >/usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null
    rm -rf /usr/sbin/policy-rc.d /var/lib/apt/lists/*' >/dev/null
  docker commit --change "LABEL mxedge.base=${base_id}" --change 'CMD ["nginx", "-v"]' \
    "$name" "${MXEDGE_UNIT_NGINX_IMAGE}:latest" >/dev/null
  docker rm "$name" >/dev/null
}

mxedge_env() {
  export MXEDGE_ROOT MXEDGE_CACHE MXEDGE_VENV
  export PATH="${MXEDGE_VENV}/bin:${PATH}"
  # site-packages/ansible_collections (the `ansible` package) is scanned too.
  export ANSIBLE_COLLECTIONS_PATH="${MXEDGE_COLLECTIONS}"
  export ANSIBLE_CONFIG="${MXEDGE_ROOT}/ansible.cfg"
  export ANSIBLE_FORCE_COLOR="${ANSIBLE_FORCE_COLOR:-0}"
  export PY_COLORS="${PY_COLORS:-0}"
}

bootstrap_all() {
  ensure_packages
  ensure_docker
  ensure_images
  ensure_venv
  ensure_collection_path
  mxedge_env
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  bootstrap_all
  log "ready: venv ${MXEDGE_VENV}, images ${MXEDGE_IMAGES}"
fi
