#!/usr/bin/env bash
# Make sure PostgreSQL and RabbitMQ run on 127.0.0.1 and hold what the project needs:
# the databases webhooks / webhooks_producer (and *_test for the tests), and the RabbitMQ
# vhosts webhooks and webhooks_test.  Safe to run any number of times.
set -euo pipefail

PGHOST=${PGHOST:-127.0.0.1}
PGUSER=${PGUSER:-postgres}
export PGHOST PGUSER

log() { printf 'services: %s\n' "$*"; }

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
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
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
