"""Prometheus: the scrape config finds the app's pods, every alert and dashboard expression is valid
PromQL, and every app metric they use is one the code really exports."""

import json
import re

import promql_parser
import pytest
import yaml

from deploy.tests import k8s

PROMETHEUS = k8s.KUSTOMIZE / "base" / "prometheus"
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "30s", "$__range": "1h", "${endpoint:regex}": "/stats|/"}
REQUIRED_ALERTS = {
    "EndpointStatsHighErrorRate",
    "EndpointStatsHighLatencyP95",
    "EndpointStatsDrainLagHigh",
    "EndpointStatsRateLimitErrors",
    "EndpointStatsBackupTooOld",
}


def config():
    return yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())


def rules():
    return [
        rule for group in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"] for rule in group["rules"]
    ]


def dashboard_expressions():
    for path in sorted((k8s.KUSTOMIZE / "base/grafana/dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                if "expr" in target:
                    yield pytest.param(target["expr"], id=f"{path.name}:{panel['title']}:{target['refId']}")


def with_grafana_variables(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def test_rule_files_are_mounted_where_the_config_reads_them(rendered):
    for overlay in k8s.OVERLAYS:
        (configmap,) = [
            c
            for c in k8s.find(rendered[overlay], "ConfigMap")
            if c["metadata"]["name"].startswith("prometheus-config-")
        ]
        (container,) = k8s.one(rendered[overlay], "Deployment", "prometheus")["spec"]["template"]["spec"]["containers"]
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == "config"]
        for rule_file in config()["rule_files"]:
            directory, name = rule_file.rsplit("/", 1)
            assert directory == mount["mountPath"] and name in configmap["data"]
        assert f"--config.file={mount['mountPath']}/prometheus.yml" in container["args"]


def test_the_app_job_keeps_only_annotated_pods_of_the_namespace_and_labels_them_by_pod_and_role(rendered):
    (job,) = [job for job in config()["scrape_configs"] if job["job_name"] == "endpoint-stats"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"names": ["endpoint-stats"]}}]
    targets = {relabel.get("target_label") for relabel in job["relabel_configs"]}
    assert {"pod", "role", "__address__", "__metrics_path__"} <= targets
    address = next(r for r in job["relabel_configs"] if r.get("target_label") == "__address__")
    assert re.fullmatch(address["regex"], "10.244.0.12:8000;8002").expand(
        address["replacement"].replace("$", "\\")
    ) == ("10.244.0.12:8002")
    scraped = {
        pod.component: pod.workload["spec"]["template"]["metadata"]["annotations"]
        for pod in k8s.pod_templates(rendered["minikube"])
        if pod.workload["spec"]["template"]["metadata"].get("annotations", {}).get("prometheus.io/scrape") == "true"
    }
    assert set(scraped) == {"web", "limiter", "worker"}
    for role, annotations in scraped.items():
        (container,) = k8s.one(rendered["minikube"], "Deployment", role)["spec"]["template"]["spec"]["containers"]
        assert int(annotations["prometheus.io/port"]) in {p["containerPort"] for p in container["ports"]}
    (worker,) = k8s.one(rendered["minikube"], "Deployment", "worker")["spec"]["template"]["spec"]["containers"]
    assert k8s.env_value(worker, "WORKER_METRICS_PORT") == scraped["worker"]["prometheus.io/port"]


def test_alerts_cover_errors_latency_drain_lag_limiter_and_backups():
    found = {rule["alert"]: rule for rule in rules()}
    assert set(found) >= REQUIRED_ALERTS
    for rule in found.values():
        assert rule["annotations"]["summary"] and rule["labels"]["severity"] in {"page", "warn", "info"}
        if "for" in rule:
            assert re.fullmatch(r"\d+[smhd]", rule["for"]), rule["alert"]


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_every_alert_expression_is_valid_promql(rule):
    promql_parser.parse(rule["expr"])


@pytest.mark.parametrize("expr", list(dashboard_expressions()))
def test_every_dashboard_expression_is_valid_promql(expr):
    promql_parser.parse(with_grafana_variables(expr))


def app_source() -> str:
    sources = []
    for path in k8s.REPO.glob("*/**/*.py"):
        parts = path.relative_to(k8s.REPO).parts
        if parts[0] in {".venv", "deploy", "bench"} or "tests" in parts or "migrations" in parts:
            continue
        sources.append(path.read_text())
    return "\n".join(sources)


def test_every_app_metric_used_by_alerts_and_dashboards_is_exported_by_the_code():
    text = " ".join([r["expr"] for r in rules()] + [p.values[0] for p in dashboard_expressions()])
    used = set(re.findall(r"\bendpointstats_[a-z_]+", text))
    source = app_source()
    missing = []
    for metric in sorted(used):
        base = re.sub(r"_(bucket|sum|count)$", "", metric)
        candidates = {base, base.removesuffix("_total")}
        if not any(re.search(rf"[\"']{re.escape(name)}[\"']", source) for name in candidates):
            missing.append(metric)
    assert not missing, "metrics used by alerts/dashboards that no code exports: " + ", ".join(missing)
    # the request metrics (endpointstats.requestmetrics) are among them
    assert "endpointstats_http_requests_total" in text
    assert "endpointstats_http_request_duration_seconds_bucket" in text
