"""Alert rules proven with promtool (Debian's `prometheus` package; `make test` installs it): the
rules load, and each alert fires, or stays quiet, on the series histories of
deploy/tests/promtool/alerts-test.yml (a first burst of dropped events included)."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from deploy.tests import k8s

TESTS = Path(__file__).parent / "promtool" / "alerts-test.yml"
RULES = k8s.KUSTOMIZE / "base" / "prometheus" / "alerts.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: `make test` installs it (Debian package prometheus)"
    return path


def test_the_alert_rules_load(promtool):
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_alert_fires_or_stays_quiet_as_its_rule_tests_say(promtool):
    result = subprocess.run(
        [promtool, "test", "rules", TESTS.name], cwd=TESTS.parent, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_rule_tests_cover_the_alerts_that_page_and_the_first_drop():
    tests = yaml.safe_load(TESTS.read_text())
    assert (TESTS.parent / tests["rule_files"][0]).resolve() == RULES.resolve()
    tested = {case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"]}
    rules = [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
    paging = {rule["alert"] for rule in rules if rule["labels"]["severity"] == "page"}
    assert paging <= tested, f"paging alerts without a rule test: {paging - tested}"
    # A series that did not exist before its first sample: the case increase() alone misses.
    first_burst = [
        series for test in tests["tests"] for series in test["input_series"] if series["values"].startswith("_x")
    ]
    assert any("endpointstats_events_dropped_total" in series["series"] for series in first_burst)
