# One way to do each chore.  `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PACKAGES := libs/webhooks-core registration-service webhook-service event-producer
PYPROJECTS := $(addsuffix /pyproject.toml,$(PACKAGES))

# The local stack: project databases and vhost on 127.0.0.1, loopback targets allowed
# for the demo receiver.  Override any of them in the environment.  The URLs have no default
# in the settings: a process started without them stops, naming the variable to set.
export WEBHOOKS_DATABASE_URL ?= postgresql+psycopg2://postgres@127.0.0.1:5432/webhooks
export WEBHOOKS_PRODUCER_DATABASE_URL ?= postgresql+psycopg2://postgres@127.0.0.1:5432/webhooks_producer
export WEBHOOKS_BROKER_URL ?= amqp://guest:guest@127.0.0.1:5672/webhooks
export WEBHOOKS_ADMIN_TOKEN ?= demo-admin-token-change-me
# Signs console sessions; shared by every API worker process (else each would make its own).
export WEBHOOKS_CONSOLE_SECRET_KEY ?= demo-console-secret-key-change-me
# Seals endpoint secrets at rest (docs/security.md): a demo key; make your own with
# `python -m webhooks_core.endpoints.sealing new-key` and set WEBHOOKS_SEALING_KEYS=<id>:<key>.
export WEBHOOKS_SEALING_KEYS ?= demo:ZGVtby1zZWFsaW5nLWtleS1jaGFuZ2UtbWUtMDEyMzQ=
export WEBHOOKS_ALLOWED_TARGET_NETWORKS ?= 127.0.0.0/8,::1/128
# Flower (http://127.0.0.1:5555) basic auth and the RabbitMQ management API it reads queues from.
export WEBHOOKS_FLOWER_USER ?= admin
export WEBHOOKS_FLOWER_PASSWORD ?= demo-flower-password-change-me
export WEBHOOKS_BROKER_API_URL ?= http://guest:guest@127.0.0.1:15672/api/

.PHONY: help venv services migrate reseal retention run test lint format bench chaos clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

venv: $(STAMP)  ## Create .venv and install every package (editable) with the dev tools

$(STAMP): $(PYPROJECTS) requirements-dev.txt constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt $(addprefix -e ,$(PACKAGES)) -r requirements-dev.txt
	touch $(STAMP)

services:  ## Start PostgreSQL and RabbitMQ if needed; create the project's databases and vhosts
	scripts/ensure-services.sh

migrate: venv services  ## Migrate the platform and demo producer databases to the latest revision
	$(PY) -m webhooks_core.migrations
	$(PY) -m producer.migrations

reseal: venv services  ## Re-encrypt stored secrets under the first key of WEBHOOKS_SEALING_KEYS
	$(PY) -m webhooks_core.endpoints.sealing reseal

retention: venv services  ## One retention run: attempt partitions made ahead, expired data dropped (docs/retention.md)
	$(PY) -m webhooks_core.retention run

run: venv services migrate  ## Run the whole system natively, with a demo flow (Ctrl-C stops it)
	rm -rf var/metrics && mkdir -p var/metrics/api var/metrics/worker var/prometheus
	@# honcho pipes every process, so "auto" would pick JSON: readable lines on a terminal.
	PATH="$(abspath $(BIN)):$$PATH" \
	WEBHOOKS_LOG_FORMAT="$${WEBHOOKS_LOG_FORMAT:-$$( [ -t 1 ] && echo console || echo auto)}" \
	scripts/run-stack.sh $(BIN)/honcho start -f Procfile  # the venv's gunicorn, celery, python

test: venv services  ## Run every test against the real PostgreSQL and RabbitMQ
	scripts/install-monitoring.sh
	scripts/install-browser.sh
	$(BIN)/pytest

lint: venv  ## ruff (lint and format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy libs/webhooks-core/src registration-service/src webhook-service/src event-producer/src bench chaos scripts

format: venv  ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: venv services  ## Benchmark the delivery path (see docs/benchmarks.md; BENCH_SCALE=0.1 for a quick run)
	$(PY) -m bench

chaos: venv services  ## Fault-injection run that counts lost and duplicated deliveries (restarts RabbitMQ and PostgreSQL)
	$(PY) -m chaos

clean:  ## Remove the virtualenv and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache var
