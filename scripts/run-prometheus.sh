#!/usr/bin/env bash
# Prometheus for `make run`: scrapes every native process (monitoring/prometheus/prometheus.native.yml)
# on http://127.0.0.1:9090, keeping its data under var/prometheus.  Without the binary (Debian
# package `prometheus`, installed by scripts/install-monitoring.sh) it says so and idles, so
# that honcho keeps the rest of the stack running.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v prometheus >/dev/null 2>&1; then
    echo "prometheus is not installed: run scripts/install-monitoring.sh (metrics are still served)"
    exec sleep infinity
fi
mkdir -p var/prometheus
exec prometheus \
    --config.file=monitoring/prometheus/prometheus.native.yml \
    --storage.tsdb.path=var/prometheus \
    --storage.tsdb.retention.time=7d \
    --web.listen-address=127.0.0.1:9090 \
    --log.level=warn
