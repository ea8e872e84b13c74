#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Set up everything escd needs on a Debian/Ubuntu machine, idempotently:
#   1. the system packages (pcscd + vpcd for the simulator, OpenSC and CoolKey as
#      independent card readers in tests, a dbus-daemon, build headers for pyscard
#      and systemd-python) through apt when root, else the exact sudo line to run;
#   2. .venv with escd installed (editable) and its dev tools.
# A second run only checks and returns in well under a second.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=${ESCD_VENV:-$PWD/.venv}
PYTHON=${PYTHON:-python3}

APT_PKGS=(pcscd vsmartcard-vpcd opensc coolkey dbus-daemon dbus-bin libglib2.0-bin
          libpcsclite-dev libsystemd-dev pkg-config gcc systemd procps iproute2 util-linux
          python3-venv openssl)

log() { printf '[setup] %s\n' "$*" >&2; }

missing_apt() {
  local p
  for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
  done
}

install_apt() {
  [ "${ESCD_SKIP_APT:-0}" = 1 ] && return 0
  command -v dpkg-query >/dev/null || { log "not a Debian/Ubuntu system: install pcscd, vsmartcard-vpcd, opensc, coolkey, dbus-daemon, libpcsclite-dev, libsystemd-dev by hand"; return 0; }
  local missing
  mapfile -t missing < <(missing_apt)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    log "missing system packages; run:"
    echo "sudo apt-get install -y --no-install-recommends ${missing[*]}"
    exit 1
  fi
  log "apt: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || { sleep 5; apt-get update -qq; }
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || { sleep 5; apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
}

install_venv() {
  local stamp="$VENV/.escd-installed"
  if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ -x "$VENV/bin/escd" ]; then
    return 0
  fi
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  log "venv: installing escd and its dev tools into $VENV (pyscard and systemd-python build from source)"
  "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[dev]" \
    || { sleep 5; "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[dev]"; }
  touch "$stamp"
}

install_apt
install_venv
