"""The operator docs and the plain alert rules name exactly the metrics mailpipe exports."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from pipeline.observability.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
HELM_ALERTS = {
    "MailpipeDeadLetterQueueGrowing",
    "MailpipeBacklogAgeGrowing",
    "MailpipeGraphThrottling",
    "MailpipeBackupFailures",
}


def exported() -> set[str]:
    found = re.findall(r"^# TYPE (mailpipe_\w+) ", Metrics().render().decode(), flags=re.MULTILINE)
    return {name for name in found if not name.endswith("_created")}  # prometheus_client's extra gauges


def test_the_plain_alert_rules_match_the_chart_and_use_real_metrics() -> None:
    rules = yaml.safe_load((ROOT / "docs/alerts/mailpipe-rules.yaml").read_text())
    alerts = {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}
    assert set(alerts) == HELM_ALERTS
    names = exported()
    for alert, expr in alerts.items():
        used = set(re.findall(r"mailpipe_\w+", expr))
        assert used, alert
        assert used <= names, (alert, used - names)


def test_operations_doc_lists_every_metric() -> None:
    text = (ROOT / "docs/operations.md").read_text()
    documented = set(re.findall(r"^\| `(mailpipe_\w+)`", text, flags=re.MULTILINE))
    assert documented == exported()
