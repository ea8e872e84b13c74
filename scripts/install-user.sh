#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Install escd as a systemd user service for the current user, or remove it again.
#
#   scripts/install-user.sh              install, then enable and start it if a user
#                                        manager is running (make install-user)
#   scripts/install-user.sh --no-start   install the files only
#   scripts/install-user.sh --uninstall  stop, disable and remove (make uninstall-user)
#
# Installs systemd/escd.service into $XDG_CONFIG_HOME/systemd/user and the session-bus
# activation file dbus/io.github.escd.Escd1.service into
# $XDG_DATA_HOME/dbus-1/services, both pointing at the escd of the venv
# (ESCD_BIN overrides it). Touches nothing outside those two files.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=${ESCD_VENV:-$PWD/.venv}
ESCD_BIN=${ESCD_BIN:-$VENV/bin/escd}
UNIT_DIR=${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user
DBUS_DIR=${XDG_DATA_HOME:-$HOME/.local/share}/dbus-1/services
UNIT=$UNIT_DIR/escd.service
ACTIVATION=$DBUS_DIR/io.github.escd.Escd1.service

log() { printf '[install-user] %s\n' "$*" >&2; }

# A user manager to talk to? (not in containers, CI, or ssh sessions without lingering)
have_manager() {
  command -v systemctl >/dev/null && systemctl --user show-environment >/dev/null 2>&1
}

uninstall() {
  if have_manager; then
    systemctl --user disable --now escd.service >/dev/null 2>&1 || true
  fi
  rm -f "$UNIT" "$ACTIVATION"
  have_manager && systemctl --user daemon-reload || true
  log "removed $UNIT and $ACTIVATION"
}

install_files() {
  if [ ! -x "$ESCD_BIN" ]; then
    log "$ESCD_BIN is not an executable; run 'make setup' first or set ESCD_BIN"
    exit 1
  fi
  mkdir -p "$UNIT_DIR" "$DBUS_DIR"
  TMP=$(mktemp)
  trap 'rm -f "$TMP"' EXIT
  sed "s|^ExecStart=.*|ExecStart=$ESCD_BIN|" systemd/escd.service > "$TMP"
  install -m 0644 "$TMP" "$UNIT"
  sed "s|^Exec=.*|Exec=$ESCD_BIN|" dbus/io.github.escd.Escd1.service > "$TMP"
  install -m 0644 "$TMP" "$ACTIVATION"
  log "installed $UNIT and $ACTIVATION (escd: $ESCD_BIN)"
}

case "${1:-}" in
  --uninstall) uninstall ;;
  --no-start) install_files ;;
  "")
    install_files
    if have_manager; then
      systemctl --user daemon-reload
      systemctl --user enable --now escd.service
      log "escd.service enabled and started; see: systemctl --user status escd"
    else
      log "no systemd user manager reachable: files installed, nothing enabled;"
      log "run 'systemctl --user daemon-reload && systemctl --user enable --now escd' in your session"
    fi
    ;;
  *) echo "usage: $0 [--no-start|--uninstall]" >&2; exit 2 ;;
esac
