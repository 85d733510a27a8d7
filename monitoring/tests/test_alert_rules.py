"""Each alert fires on the situation it describes, and not before its ``for`` has passed.

``promtool test rules`` evaluates monitoring/prometheus/alerts.yml on synthetic series.  The
annotations (summary, description, runbook) are checked by ``promtool check rules`` and the
stack-file tests; here they are stripped so that the cases state labels only.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

RULES = Path(__file__).resolve().parents[1] / "prometheus" / "alerts.yml"


def alert(name: str, severity: str, **labels: str) -> dict[str, Any]:
    return {"exp_labels": {"alertname": name, "severity": severity, **labels}}


# (series, [(eval time, alert name, expected alerts)])
CASES: list[tuple[list[dict[str, str]], list[tuple[str, str, list[dict[str, Any]]]]]] = [
    (
        [{"series": 'webhooks_dead_letters_total{job="worker"}', "values": "0x5 1 2 2x30"}],
        [
            ("4m", "WebhooksDeadLettersGrowing", []),
            ("8m", "WebhooksDeadLettersGrowing", [alert("WebhooksDeadLettersGrowing", "warning")]),
            ("30m", "WebhooksDeadLettersGrowing", []),  # quiet for 15 minutes: resolved
        ],
    ),
    (
        [
            {
                "series": "webhooks_deliveries_oldest_pending_age_seconds",
                "values": "0+60x5 111600x20",
            }
        ],
        [
            ("8m", "WebhooksOldestPendingDeliveryTooOld", []),  # pending, not firing yet
            ("20m", "WebhooksOldestPendingDeliveryTooOld",
             [alert("WebhooksOldestPendingDeliveryTooOld", "warning")]),
        ],
    ),
    (
        [{"series": "webhooks_deliveries_overdue_seconds", "values": "0x3 600x12"}],
        [
            ("5m", "WebhooksDeliveriesOverdue", []),
            ("10m", "WebhooksDeliveriesOverdue", [alert("WebhooksDeliveriesOverdue", "warning")]),
        ],
    ),
    (
        [
            {"series": 'webhooks_delivery_attempts_total{outcome="success"}', "values": "0+60x40"},
            {
                "series": 'webhooks_delivery_attempts_total{outcome="http_5xx"}',
                "values": "0x10 0+60x30",
            },
        ],
        [
            ("10m", "WebhooksDeliveryErrorRatioHigh", []),  # no failures yet
            ("15m", "WebhooksDeliveryErrorRatioHigh", []),  # failing, but not for 10 minutes
            ("35m", "WebhooksDeliveryErrorRatioHigh",
             [alert("WebhooksDeliveryErrorRatioHigh", "warning")]),
        ],
    ),
    (
        # A trickle of failures (below 0.05 attempts per second) is not an incident.
        [
            {"series": 'webhooks_delivery_attempts_total{outcome="success"}', "values": "0x40"},
            {"series": 'webhooks_delivery_attempts_total{outcome="timeout"}', "values": "0+1x40"},
        ],
        [("35m", "WebhooksDeliveryErrorRatioHigh", [])],
    ),
    (
        [
            {"series": 'webhooks_endpoints_disabled_total{reason="gone"}', "values": "0x3 1x20"},
            {"series": 'webhooks_endpoints_disabled_total{reason="failing"}', "values": "0x23"},
        ],
        [
            ("2m", "WebhooksEndpointDisabled", []),
            ("5m", "WebhooksEndpointDisabled",
             [alert("WebhooksEndpointDisabled", "info", reason="gone")]),
        ],
    ),
    (
        [{"series": 'webhooks_poison_deliveries_total{job="scheduler"}', "values": "0x5 1x80"}],
        [
            ("4m", "WebhooksPoisonDeliveries", []),
            ("7m", "WebhooksPoisonDeliveries", [alert("WebhooksPoisonDeliveries", "warning")]),
            ("50m", "WebhooksPoisonDeliveries", [alert("WebhooksPoisonDeliveries", "warning")]),
            ("75m", "WebhooksPoisonDeliveries", []),  # none for an hour: resolved
        ],
    ),
    (
        [
            {"series": "webhooks_outbox_backlog", "values": "10x3 5000x10"},
            {"series": "webhooks_outbox_oldest_age_seconds", "values": "1x13"},
        ],
        [
            ("5m", "WebhooksOutboxBacklog", []),
            ("10m", "WebhooksOutboxBacklog", [alert("WebhooksOutboxBacklog", "warning")]),
        ],
    ),
    (
        [
            {"series": "webhooks_outbox_backlog", "values": "3x13"},
            {"series": "webhooks_outbox_oldest_age_seconds", "values": "1x3 900x10"},
        ],
        [("10m", "WebhooksOutboxBacklog", [alert("WebhooksOutboxBacklog", "warning")])],
    ),
    (
        [{"series": 'rabbitmq_detailed_queue_messages_ready{queue="webhooks.ingest"}',
          "values": "5000x15"},
         {"series": 'rabbitmq_detailed_queue_messages_ready{queue="webhooks.dead-letters"}',
          "values": "90000x15"}],
        [("12m", "WebhooksIngestQueueBacklog", [alert("WebhooksIngestQueueBacklog", "warning")])],
    ),
    (
        [
            {"series": 'up{job="worker", instance="a:9101"}', "values": "1x3 0x10"},
            {"series": 'up{job="worker", instance="b:9101"}', "values": "1x13"},
        ],
        [("10m", "WebhooksNoWorkerUp", [])],  # one of two workers down is not "no worker"
    ),
    (
        [{"series": 'up{job="worker", instance="a:9101"}', "values": "1x3 0x10"}],
        [
            ("4m", "WebhooksNoWorkerUp", []),
            ("8m", "WebhooksNoWorkerUp", [alert("WebhooksNoWorkerUp", "critical")]),
        ],
    ),
    (
        # No worker target at all (compose scaled to zero): absent() fires.
        [{"series": 'up{job="api", instance="api:8000"}', "values": "1x10"}],
        [("5m", "WebhooksNoWorkerUp", [alert("WebhooksNoWorkerUp", "critical", job="worker")])],
    ),
    (
        [{"series": 'up{job="scheduler", instance="s:9102"}', "values": "0x10"}],
        [("5m", "WebhooksSchedulerDown", [alert("WebhooksSchedulerDown", "critical")])],
    ),
    (
        # 20 days left, then a renewal forgotten: 10 days left (fires after 10 minutes).
        [{"series": "webhooks_endpoints_client_certificate_expiry_seconds",
          "values": "1728000x5 864000x20"}],
        [
            ("4m", "WebhooksClientCertificateExpiringSoon", []),
            ("10m", "WebhooksClientCertificateExpiringSoon", []),  # pending
            ("20m", "WebhooksClientCertificateExpiringSoon",
             [alert("WebhooksClientCertificateExpiringSoon", "warning")]),
        ],
    ),
    (
        [{"series": "webhooks_database_up", "values": "1x2 0x10"}],
        [
            ("4m", "WebhooksDatabaseGaugesUnavailable", []),
            ("9m", "WebhooksDatabaseGaugesUnavailable",
             [alert("WebhooksDatabaseGaugesUnavailable", "warning")]),
        ],
    ),
    (
        [
            {"series": 'up{job="relay", instance="relay:9103"}', "values": "0x10"},
            {"series": 'up{job="worker", instance="w:9101"}', "values": "0x10"},
        ],
        [("8m", "WebhooksTargetDown",
          [alert("WebhooksTargetDown", "warning", job="relay", instance="relay:9103")])],
    ),
]  # fmt: skip


def test_every_alert_has_cases() -> None:
    rules = yaml.safe_load(RULES.read_text())["groups"]
    names = {rule["alert"] for group in rules for rule in group["rules"]}
    tested = {name for _, checks in CASES for _, name, _ in checks}
    assert tested == names


def test_alerts_fire_when_they_should_and_only_then(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: run scripts/install-monitoring.sh (make test does)")
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    tests = {
        "rule_files": ["alerts.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {"eval_time": at, "alertname": name, "exp_alerts": expected}
                    for at, name, expected in checks
                ],
            }
            for series, checks in CASES
        ],
    }
    (tmp_path / "alerts_test.yml").write_text(yaml.safe_dump(tests))
    result = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
