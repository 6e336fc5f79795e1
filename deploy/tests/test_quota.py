"""The ResourceQuota admits the worst case: every HPA at its maximum, a rollout surge on top, the
migrate Job and (minikube) the debug pod; init containers counted as the scheduler counts them."""

import math

import pytest

from deploy.tests import k8s

RESOURCES = ("requests.cpu", "requests.memory", "limits.cpu", "limits.memory")


def effective(pod_spec: dict, resource: str) -> float:
    """What one pod charges to the quota: max(sum of containers, largest init container)."""
    kind, name = resource.split(".")

    def amount(container):
        return k8s.quantity(container["resources"][kind][name])

    regular = sum(amount(c) for c in pod_spec["containers"])
    init = max((amount(c) for c in pod_spec.get("initContainers", [])), default=0)
    return max(regular, init)


def worst_case_pods(docs: list[dict]) -> list[tuple[str, int, dict]]:
    """(workload, how many pods at worst, pod spec) for every workload."""
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in k8s.find(docs, "HorizontalPodAutoscaler")}
    rows = []
    for pod in k8s.pod_templates(docs):
        spec = pod.workload["spec"]
        if pod.kind == "Deployment":
            replicas = hpas[pod.name]["spec"]["maxReplicas"] if pod.name in hpas else spec.get("replicas", 1)
            surge = 0
            if spec.get("strategy", {}).get("type", "RollingUpdate") == "RollingUpdate":
                value = spec.get("strategy", {}).get("rollingUpdate", {}).get("maxSurge", "25%")
                surge = math.ceil(replicas * int(value[:-1]) / 100) if isinstance(value, str) else value
            rows.append((pod.ref, replicas + surge, pod.spec))
        elif pod.kind == "StatefulSet":
            rows.append((pod.ref, spec.get("replicas", 1), pod.spec))  # replaced one by one, no surge
        elif pod.kind == "Job":
            rows.append((pod.ref, spec.get("parallelism", 1), pod.spec))
        else:
            rows.append((pod.ref, 1, pod.spec))
    return rows


def need(docs: list[dict]) -> dict[str, float]:
    rows = worst_case_pods(docs)
    totals = {resource: sum(count * effective(spec, resource) for _, count, spec in rows) for resource in RESOURCES}
    totals["pods"] = sum(count for _, count, _ in rows)
    return totals


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_the_quota_admits_every_hpa_at_its_maximum_plus_a_rollout_surge(rendered, overlay, debug_pod):
    docs = rendered[overlay] + ([debug_pod] if overlay == "minikube" else [])
    (quota,) = k8s.find(rendered[overlay], "ResourceQuota")
    hard = {key: k8s.quantity(value) for key, value in quota["spec"]["hard"].items()}
    required = need(docs)
    report = "\n".join(f"  {key}: need {required[key]:g}, quota {hard[key]:g}" for key in required)
    for key, amount in required.items():
        assert amount <= hard[key], f"overlays/{overlay}: the quota is too small\n{report}"
        # Sized from this arithmetic, not guessed: at most a third more than the worst case.
        assert hard[key] <= amount * 4 / 3 + 1, f"overlays/{overlay}: {key} is far above the worst case\n{report}"


def test_the_arithmetic_counts_hpa_maxima_surges_and_init_containers(rendered):
    rows = {ref: count for ref, count, _ in worst_case_pods(rendered["prod"])}
    hpas = {
        h["metadata"]["name"]: h["spec"]["maxReplicas"] for h in k8s.find(rendered["prod"], "HorizontalPodAutoscaler")
    }
    assert rows["Deployment/web"] == hpas["web"] + 1
    assert rows["Deployment/beat"] == 1  # Recreate: no surge
    assert rows["Deployment/prometheus"] == 1
    web = k8s.one(rendered["prod"], "Deployment", "web")["spec"]["template"]["spec"]
    init_memory = k8s.quantity(web["initContainers"][0]["resources"]["limits"]["memory"])
    assert effective(web, "limits.memory") >= init_memory


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_every_container_fits_the_limit_range(rendered, overlay, debug_pod):
    (limit_range,) = k8s.find(rendered[overlay], "LimitRange")
    (container_limits,) = [item for item in limit_range["spec"]["limits"] if item["type"] == "Container"]
    docs = rendered[overlay] + ([debug_pod] if overlay == "minikube" else [])
    for pod in k8s.pod_templates(docs):
        for container in pod.containers():
            for resource, maximum in container_limits["max"].items():
                value = container["resources"]["limits"][resource]
                assert k8s.quantity(value) <= k8s.quantity(maximum), f"{pod.ref}/{container['name']} {resource}"


def test_the_minikube_volumes_fit_the_quota_and_the_limit_range(rendered):
    docs = rendered["minikube"]
    (quota,) = k8s.find(docs, "ResourceQuota")
    (limit_range,) = k8s.find(docs, "LimitRange")
    (pvc_limits,) = [item for item in limit_range["spec"]["limits"] if item["type"] == "PersistentVolumeClaim"]
    claims = [
        (sts["spec"].get("replicas", 1), claim["spec"]["resources"]["requests"]["storage"])
        for sts in k8s.find(docs, "StatefulSet")
        for claim in sts["spec"]["volumeClaimTemplates"]
    ] + [(1, claim["spec"]["resources"]["requests"]["storage"]) for claim in k8s.find(docs, "PersistentVolumeClaim")]
    assert all(k8s.quantity(size) <= k8s.quantity(pvc_limits["max"]["storage"]) for _, size in claims)
    assert sum(n * k8s.quantity(size) for n, size in claims) <= k8s.quantity(quota["spec"]["hard"]["requests.storage"])
    assert sum(n for n, _ in claims) <= int(quota["spec"]["hard"]["persistentvolumeclaims"])
