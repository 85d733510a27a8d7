#!/usr/bin/env bash
# Install what the monitoring tests and `make run` need beyond Python: Prometheus and promtool
# (Debian package `prometheus`).  Idempotent; refreshes the apt lists only when the package
# cannot be found in them.  Installing needs root (or sudo).
set -euo pipefail

log() { printf 'monitoring: %s\n' "$*"; }

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    log "prometheus is missing and apt-get is not available: install Prometheus 2.x by hand"
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
if ! apt-cache show prometheus >/dev/null 2>&1; then
    log "refreshing the apt package lists"
    $SUDO apt-get update -q >/dev/null
fi
log "installing Debian's prometheus package (prometheus, promtool)"
if ! $SUDO apt-get install -y -q --no-install-recommends prometheus >/dev/null; then
    log "retrying after refreshing the apt package lists"
    $SUDO apt-get update -q >/dev/null
    $SUDO apt-get install -y -q --no-install-recommends prometheus >/dev/null
fi
# The package starts a system service where systemd runs; the tests start their own.
log "prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}') installed"
