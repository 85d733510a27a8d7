#!/usr/bin/env bash
# Make sure PostgreSQL and RabbitMQ run on 127.0.0.1 and hold what the project needs:
# the databases webhooks / webhooks_producer (and *_test for the tests), and the RabbitMQ
# vhosts webhooks and webhooks_test.  Safe to run any number of times.
#
# On a machine without them (a fresh Debian), it first installs them from Debian's packages
# (postgresql, rabbitmq-server), as scripts/install-browser.sh does for Chromium, and lets
# local connections as postgres on 127.0.0.1 in without a password (the project's URLs carry
# none): a development machine's database, never a production one.  An existing PostgreSQL's
# configuration is left alone.
set -euo pipefail

PGHOST=${PGHOST:-127.0.0.1}
PGUSER=${PGUSER:-postgres}
export PGHOST PGUSER

log() { printf 'services: %s\n' "$*"; }

# Where Debian keeps the clusters' configuration (a test points it elsewhere).
PG_CONF_ROOT=${WEBHOOKS_PG_CONF_ROOT:-/etc/postgresql}

have() { command -v "$1" >/dev/null 2>&1; }

apt_updated=""
install_packages() {  # install_packages PACKAGE...: from Debian's packages
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    log "installing $* from Debian's packages"
    if [ -z "$apt_updated" ]; then
        $sudo apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"
}

pg_cluster_version() { ls "$PG_CONF_ROOT" 2>/dev/null | sort -V | tail -1; }

if ! have pg_isready || ! have pg_ctlcluster || ! have psql || [ -z "$(pg_cluster_version)" ]; then
    install_packages postgresql
    version=$(pg_cluster_version)
    hba="$PG_CONF_ROOT/$version/main/pg_hba.conf"
    if [ -f "$hba" ] && ! grep -q '^host all postgres 127.0.0.1/32 trust' "$hba"; then
        log "letting postgres in from 127.0.0.1 and ::1 without a password ($hba)"
        # First match wins in pg_hba.conf: these lines go on top.
        { printf 'host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust\n'
          cat "$hba"; } > "$hba.new"
        cat "$hba.new" > "$hba" && rm -f "$hba.new"
        pg_ctlcluster --skip-systemctl-redirect "$version" main reload >/dev/null 2>&1 || true
    fi
fi

if ! have rabbitmqctl || ! have rabbitmq-server || ! have rabbitmq-plugins; then
    install_packages rabbitmq-server
fi

wait_for() {  # wait_for NAME COMMAND...
    local name=$1; shift
    for _ in $(seq 1 60); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 1
    done
    log "$name did not come up in 60 s"; return 1
}

if ! pg_isready -h "$PGHOST" -q; then
    log "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(pg_cluster_version)" main start || true
    wait_for PostgreSQL pg_isready -h "$PGHOST" -q
fi

if ! rabbitmqctl -q status >/dev/null 2>&1; then
    log "starting RabbitMQ"
    rabbitmq-server -detached || true
    wait_for RabbitMQ rabbitmqctl -q await_startup
fi

for db in webhooks webhooks_producer webhooks_test webhooks_producer_test; do
    if ! psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
        log "creating database $db"
        createdb "$db"
    fi
done

for vhost in webhooks webhooks_test; do
    if ! rabbitmqctl -q list_vhosts | grep -qx "$vhost"; then
        log "creating RabbitMQ vhost $vhost"
        rabbitmqctl -q add_vhost "$vhost"
    fi
    rabbitmqctl -q set_permissions -p "$vhost" guest '.*' '.*' '.*' >/dev/null
done

# Management (for Flower's broker view) and Prometheus (scraped by monitoring/).
if ! rabbitmq-plugins list -e 2>/dev/null | grep -q 'rabbitmq_prometheus'; then
    log "enabling RabbitMQ management and prometheus plugins"
    rabbitmq-plugins enable -q rabbitmq_management rabbitmq_prometheus >/dev/null || true
fi
log "PostgreSQL and RabbitMQ ready"
