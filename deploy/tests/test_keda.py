"""The optional KEDA component: the worker scales on the buffer's backlog, rendered onto both overlays.

kubernetes-validate has no schema for KEDA's CRD, so the ScaledObject's structure is checked here
against KEDA v2's documented fields; every other object still validates strictly.
"""

import re

import pytest
import yaml
from kubernetes_validate import utils as kubernetes_validate

from deploy.tests import k8s

COMPONENT = "components/keda-autoscaling"
# keda.sh/v1alpha1 ScaledObject (KEDA 2.x): the fields this project may use.
SPEC_FIELDS = {
    "scaleTargetRef",
    "pollingInterval",
    "cooldownPeriod",
    "initialCooldownPeriod",
    "idleReplicaCount",
    "minReplicaCount",
    "maxReplicaCount",
    "fallback",
    "advanced",
    "triggers",
}
PROMETHEUS_FIELDS = {
    "serverAddress",
    "query",
    "threshold",
    "activationThreshold",
    "namespace",
    "customHeaders",
    "ignoreNullValues",
    "queryParameters",
    "unsafeSsl",
}
METRIC = re.compile(r"\b(endpointstats_[a-z_]+)\b")


@pytest.fixture(scope="module")
def with_keda(tmp_path_factory) -> dict[str, list[dict]]:
    """Each overlay with the component enabled as an operator would (`components:` in its
    kustomization), rendered with real kustomize."""
    workdir = tmp_path_factory.mktemp("kustomize-keda")
    k8s.render(workdir, k8s.OVERLAYS[0])  # lays out the tree and its local secrets
    for overlay in k8s.OVERLAYS:
        path = workdir / "kustomize" / "overlays" / overlay / "kustomization.yaml"
        kustomization = yaml.safe_load(path.read_text())
        kustomization["components"] = [f"../../{COMPONENT}"]
        path.write_text(yaml.safe_dump(kustomization))
    return {overlay: k8s.render(workdir, overlay) for overlay in k8s.OVERLAYS}


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_the_worker_scales_on_the_backlog_instead_of_its_cpu_hpa(with_keda, rendered, overlay):
    docs = with_keda[overlay]
    (scaled,) = k8s.find(docs, "ScaledObject")
    target = scaled["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
    k8s.one(docs, "Deployment", target["name"])  # it exists
    hpa_targets = [h["spec"]["scaleTargetRef"]["name"] for h in k8s.find(docs, "HorizontalPodAutoscaler")]
    assert target["name"] not in hpa_targets  # two autoscalers on one Deployment would fight
    assert sorted(hpa_targets) == ["limiter", "web"]
    # No more pods than the HPA it replaces, so the ResourceQuota arithmetic (test_quota) holds.
    replaced = k8s.one(rendered[overlay], "HorizontalPodAutoscaler", target["name"])
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    assert scaled["spec"]["maxReplicaCount"] <= replaced["spec"]["maxReplicas"]
    # Nothing else changes but the HPA, the ScaledObject and its NetworkPolicy (minikube's local
    # Secrets are generated afresh for each tree, so their hashed names differ).
    names = {(d["kind"], d["metadata"]["name"]) for d in docs if d["kind"] != "Secret"}
    before = {(d["kind"], d["metadata"]["name"]) for d in rendered[overlay] if d["kind"] != "Secret"}
    assert before - names == {("HorizontalPodAutoscaler", "worker")}
    assert names - before == {("ScaledObject", "worker"), ("NetworkPolicy", "prometheus-from-keda")}


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_the_scaled_object_has_keda_s_structure_and_queries_a_metric_the_app_exports(with_keda, overlay):
    docs = with_keda[overlay]
    (scaled,) = k8s.find(docs, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert set(scaled["spec"]) <= SPEC_FIELDS
    counts = ("minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod")
    assert all(isinstance(scaled["spec"][key], int) for key in counts)
    behavior = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert set(behavior) <= {"scaleUp", "scaleDown"}
    triggers = {trigger["type"]: trigger for trigger in scaled["spec"]["triggers"]}
    assert set(triggers) == {"prometheus", "cpu"}
    for trigger in triggers.values():
        assert all(isinstance(value, str) for value in trigger["metadata"].values()), "KEDA metadata is strings"

    prometheus = triggers["prometheus"]["metadata"]
    assert set(prometheus) <= PROMETHEUS_FIELDS and {"serverAddress", "query", "threshold"} <= set(prometheus)
    assert int(prometheus["threshold"]) > 0
    # The operator runs in another namespace: the address is the Service's full name and port.
    host, port = re.fullmatch(r"http://([a-z0-9.-]+):(\d+)", prometheus["serverAddress"]).groups()
    service, namespace, svc = host.split(".")
    assert svc == "svc" and namespace == scaled["metadata"]["namespace"]
    ports = [p["port"] for p in k8s.one(docs, "Service", service)["spec"]["ports"]]
    assert int(port) in ports
    query = prometheus["query"]
    assert query.count("(") == query.count(")") and query.count("{") == query.count("}")
    exported = (k8s.REPO / "endpointstats" / "metrics.py").read_text()
    assert METRIC.findall(query) == ["endpointstats_buffer_events"]
    assert '"endpointstats_buffer_events"' in exported
    assert 'list!="dead"' in query  # parked events are not work a worker can do
    assert query.startswith("sum(max by (")  # every web pod reports the same depth: max over pods
    assert triggers["cpu"]["metricType"] == "Utilization" and 0 < int(triggers["cpu"]["metadata"]["value"]) <= 100


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_every_other_object_still_validates_strictly_and_keda_may_reach_prometheus(with_keda, overlay):
    version = kubernetes_validate.latest_version()
    for doc in with_keda[overlay]:
        if doc["kind"] != "ScaledObject":
            kubernetes_validate.validate(doc, version, strict=True)
    policy = k8s.one(with_keda[overlay], "NetworkPolicy", "prometheus-from-keda")
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "prometheus"
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 9090}]
