"""The stack's files hold together: docker-compose.yml against the Compose Specification and
the Procfile, Dockerfiles, Prometheus configuration (promtool), alert rules and dashboards.

No Docker engine runs here, so the Compose file is validated structurally: the vendored
Compose Specification schema, then the rules the schema cannot express (every dependency and
build file exists, healthchecks behind service_healthy, the worker stays scalable).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "monitoring"
SCHEMA = Path(__file__).resolve().parent / "compose-spec" / "compose-spec.json"
# What `make services` / `make migrate` provide natively, and Grafana (no Debian package).
COMPOSE_ONLY = {"postgres", "rabbitmq", "migrate", "grafana"}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(REPO / "docker-compose.yml")  # type: ignore[no-any-return]


def procfile_processes() -> dict[str, str]:
    processes = {}
    for line in (REPO / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            processes[name.strip()] = command.strip()
    return processes


def compose_errors(document: dict[str, Any]) -> list[str]:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(document)]


# --- docker-compose ---------------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_specification(
    compose: dict[str, Any],
) -> None:
    assert compose_errors(compose) == []


def test_the_schema_rejects_what_compose_would_reject(compose: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["api"]["depends_on"]["migrate"]["condition"] = "service_finished"
    broken["services"]["worker"]["restart_policy"] = "always"
    errors = compose_errors(broken)
    assert any("service_finished" in error for error in errors)
    assert any("restart_policy" in error for error in errors)


def test_compose_services_are_the_procfile_processes_plus_infrastructure(
    compose: dict[str, Any],
) -> None:
    assert set(compose["services"]) - COMPOSE_ONLY == set(procfile_processes())
    assert set(compose["services"]) >= COMPOSE_ONLY


def entry_point(command: str) -> str:
    """What a Procfile command runs: a module, a Celery sub-command, a config or a script."""
    words = command.replace("'", " ").split()
    for flag in ("-m", "-c"):
        if flag in words:
            return words[words.index(flag) + 1]
    if "-A" in words:
        return " ".join(words[words.index("-A") + 1 : words.index("-A") + 3])
    return next(word for word in words if word.endswith((".py", ".sh")))


def test_compose_runs_what_the_procfile_runs(compose: dict[str, Any]) -> None:
    for name, command in procfile_processes().items():
        if name == "prometheus":  # the official image runs the same prometheus.yml family
            continue
        service = compose["services"][name]
        run = " ".join(service.get("command") or [])
        if not run:
            dockerfile = (REPO / service["build"]["dockerfile"]).read_text()
            run = " ".join(json.loads(dockerfile.split("\nCMD ", 1)[1].splitlines()[0]))
        assert entry_point(command) in run.replace('"', ""), (name, entry_point(command), run)


def test_dependencies_exist_and_wait_for_health_or_completion(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
            elif condition == "service_completed_successfully":
                assert services[dependency].get("restart") == "no", dependency
            else:
                pytest.fail(f"{name} -> {dependency}: {condition} does not wait for readiness")
    # Every long-running service says when it is healthy (one-shots and the demo flow
    # are not restarted and nothing waits for them).
    for name, service in services.items():
        if service.get("restart") != "no":
            assert "healthcheck" in service, f"{name} has no healthcheck"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["api"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )


def test_workers_scale_and_publish_nothing(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    # Prometheus finds every replica through the service's DNS name.
    prometheus = load_yaml(MONITORING / "prometheus" / "prometheus.yml")
    job = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "worker")
    assert job["dns_sd_configs"][0]["names"] == ["worker"]


def test_published_ports_bind_loopback_only(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port}"


def test_each_image_installs_the_shared_package_and_its_own_service_only(
    compose: dict[str, Any],
) -> None:
    service_dirs = {"registration-service", "webhook-service", "event-producer"}
    for name, service in compose["services"].items():
        if "build" not in service:
            continue
        dockerfile = REPO / service["build"]["dockerfile"]
        assert dockerfile.exists(), f"{name}: {dockerfile} is missing"
        own = dockerfile.parent.relative_to(REPO).as_posix()
        text = dockerfile.read_text()
        copied = set(re.findall(r"^COPY (\S+)", text, flags=re.MULTILINE))
        assert copied <= {"constraints.txt", "libs/webhooks-core", own}, (name, copied)
        for other in service_dirs - {own}:
            assert other not in text, f"{dockerfile} installs {other}"


def test_every_variable_compose_reads_is_documented_in_env_example(
    compose: dict[str, Any],
) -> None:
    text = (REPO / "docker-compose.yml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", text))
    documented = {
        line.split("=", 1)[0]
        for line in (REPO / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert used <= documented, used - documented


def test_mounted_files_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"


# --- Prometheus ------------------------------------------------------------------------


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: run scripts/install-monitoring.sh (make test does)")
    return path


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.native.yml"])
def test_promtool_accepts_the_configuration(config: str) -> None:
    result = subprocess.run(
        [promtool(), "check", "config", config],
        cwd=MONITORING / "prometheus",
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_alert_rules() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", "alerts.yml"],
        cwd=MONITORING / "prometheus",
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_native_and_compose_scrape_the_same_jobs(compose: dict[str, Any]) -> None:
    containers = load_yaml(MONITORING / "prometheus" / "prometheus.yml")
    native = load_yaml(MONITORING / "prometheus" / "prometheus.native.yml")
    assert containers["rule_files"] == native["rule_files"]
    assert containers["global"] == native["global"]

    def jobs(config: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
        found = {}
        for job in config["scrape_configs"]:
            if "static_configs" in job:
                targets = [t for c in job["static_configs"] for t in c["targets"]]
            else:
                sd = job["dns_sd_configs"][0]
                targets = [f"{name}:{sd['port']}" for name in sd["names"]]
            ports = sorted(t.rsplit(":", 1)[1] for t in targets)
            found[job["job_name"]] = (job.get("metrics_path"), job.get("params"), ports)
        return found

    assert jobs(containers) == jobs(native)
    # Compose targets are compose services (or Prometheus itself).
    for job in containers["scrape_configs"]:
        for config in job.get("static_configs", []):
            for target in config["targets"]:
                host = target.rsplit(":", 1)[0]
                assert host == "localhost" or host in compose["services"], target


def test_every_process_of_the_stack_is_scraped() -> None:
    native = load_yaml(MONITORING / "prometheus" / "prometheus.native.yml")
    ports = {
        target.rsplit(":", 1)[1]
        for job in native["scrape_configs"]
        for config in job["static_configs"]
        for target in config["targets"]
    }
    # API, producer, worker, scheduler, relay, Flower, RabbitMQ, Prometheus.
    assert {"8000", "8001", "9101", "9102", "9103", "5555", "15692", "9090"} <= ports


def alert_rules() -> list[dict[str, Any]]:
    groups = load_yaml(MONITORING / "prometheus" / "alerts.yml")["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_every_alert_explains_itself_and_says_what_to_do() -> None:
    docs = (REPO / "docs" / "monitoring.md").read_text()
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    for rule in alert_rules():
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook"} <= set(annotations), rule["alert"]
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert rule["alert"] in docs, f"docs/monitoring.md does not explain {rule['alert']}"
    required = {
        "WebhooksDeadLettersGrowing",
        "WebhooksOldestPendingDeliveryTooOld",
        "WebhooksDeliveryErrorRatioHigh",
        "WebhooksOutboxBacklog",
        "WebhooksNoWorkerUp",
        "WebhooksEndpointDisabled",
    }
    assert required <= set(names)


# --- Grafana ---------------------------------------------------------------------------


def load_builder() -> Any:
    path = MONITORING / "grafana" / "build_dashboards.py"
    spec = importlib.util.spec_from_file_location("build_dashboards", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class body runs.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_dashboard_files_are_what_the_builder_makes() -> None:
    builder = load_builder()
    for name, build in builder.DASHBOARDS.items():
        committed = (MONITORING / "grafana" / "dashboards" / name).read_text()
        assert committed == builder.render(build), (
            f"{name} is stale: run python monitoring/grafana/build_dashboards.py"
        )


def test_dashboards_use_the_provisioned_datasource_and_explain_every_panel() -> None:
    provisioning = MONITORING / "grafana" / "provisioning"
    datasources = load_yaml(provisioning / "datasources" / "prometheus.yml")
    uid = datasources["datasources"][0]["uid"]
    provider = load_yaml(provisioning / "dashboards" / "webhooks.yml")
    assert provider["providers"][0]["type"] == "file"
    uids = set()
    for path in sorted((MONITORING / "grafana" / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        uids.add(dashboard["uid"])
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids)), path
        for panel in dashboard["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] == uid, panel["title"]
            assert panel["description"], panel["title"]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == uid
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, panel["title"]
    assert uids == {"webhooks-overview", "webhooks-workers"}
