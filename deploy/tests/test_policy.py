"""Policy for every workload of both overlays: the points of issue 5, asserted on what kustomize renders."""

import re

import pytest

from deploy.tests import k8s

SCALED_ROLES = ("web", "limiter", "worker")
HTTP_ROLES = {"web": 8000, "limiter": 8001}
HEARTBEAT_PROBE = re.compile(r"stat -c %Y (\S+)\) \)\) -lt (\d+)")


def all_pods(rendered, overlay, debug_pod):
    pods = list(k8s.pod_templates(rendered[overlay]))
    if overlay == "minikube":
        pods += list(k8s.pod_templates([debug_pod]))
    return pods


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_every_container_has_a_restricted_security_context_and_resources(rendered, overlay, debug_pod):
    for pod in all_pods(rendered, overlay, debug_pod):
        spec = pod.spec
        assert spec["securityContext"]["runAsNonRoot"] is True, pod.ref
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", pod.ref
        assert spec["securityContext"].get("runAsUser", 1) != 0, pod.ref
        for forbidden in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(forbidden), f"{pod.ref}: {forbidden}"
        assert not any("hostPath" in volume for volume in spec.get("volumes", [])), pod.ref
        for container in pod.containers():
            where = f"{pod.ref}/{container['name']}"
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["runAsNonRoot"] is True, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert context["seccompProfile"]["type"] == "RuntimeDefault", where
            assert not context.get("privileged"), where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{where}: resources.{kind}"
            for resource in ("cpu", "memory"):
                assert k8s.quantity(container["resources"]["requests"][resource]) <= k8s.quantity(
                    container["resources"]["limits"][resource]
                ), where


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_app_pods_run_as_uid_10001_with_emptydirs_for_tmp_and_metrics(rendered, overlay):
    app_pods = [pod for pod in k8s.pod_templates(rendered[overlay]) if pod.is_app()]
    assert {pod.component for pod in app_pods} == {"web", "limiter", "worker", "beat", "migrate"}
    for pod in app_pods:
        assert pod.spec["securityContext"]["runAsUser"] == 10001, pod.ref
        assert pod.spec["securityContext"]["runAsGroup"] == 10001, pod.ref
        volumes = {volume["name"]: volume for volume in pod.spec["volumes"]}
        for container in pod.containers():
            mounts = {mount["mountPath"]: mount for mount in container.get("volumeMounts", [])}
            assert "emptyDir" in volumes[mounts["/tmp"]["name"]], f"{pod.ref}/{container['name']}: /tmp"
            assert all("subPath" not in mount for mount in mounts.values()), pod.ref
            multiproc = k8s.env_value(container, "PROMETHEUS_MULTIPROC_DIR")
            if pod.component in SCALED_ROLES and container in pod.containers(init=False):
                assert multiproc, f"{pod.ref}: PROMETHEUS_MULTIPROC_DIR"
            if multiproc:
                assert "emptyDir" in volumes[mounts[multiproc]["name"]], f"{pod.ref}: {multiproc} on an emptyDir"


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_rate_limit_rules_are_a_configmap_mounted_as_a_directory(rendered, overlay):
    rules_file = k8s.settings_configmap(rendered[overlay])["RATE_LIMITS_FILE"]
    rules = k8s.one(rendered[overlay], "ConfigMap", "endpointstats-ratelimits")
    assert rules_file.rsplit("/", 1)[1] in rules["data"]
    for role in ("web", "limiter", "worker"):
        pod = next(p for p in k8s.pod_templates(rendered[overlay]) if p.kind == "Deployment" and p.name == role)
        (container,) = pod.containers(init=False)
        (mount,) = [m for m in container["volumeMounts"] if rules_file.startswith(m["mountPath"] + "/")]
        assert "subPath" not in mount and mount["readOnly"] is True
        (volume,) = [v for v in pod.spec["volumes"] if v["name"] == mount["name"]]
        assert volume["configMap"]["name"] == "endpointstats-ratelimits"


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_every_long_running_container_has_liveness_and_readiness_probes(rendered, overlay):
    for pod in k8s.pod_templates(rendered[overlay]):
        if pod.kind == "Job":
            continue
        for container in pod.containers(init=False):
            assert "livenessProbe" in container and "readinessProbe" in container, f"{pod.ref}/{container['name']}"
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                command = " ".join(container.get(probe, {}).get("exec", {}).get("command", []))
                assert "inspect ping" not in command, f"{pod.ref}: a broker round trip per probe"


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_web_and_limiter_probe_health_live_and_health_ready(rendered, overlay):
    for role, port in HTTP_ROLES.items():
        (container,) = k8s.one(rendered[overlay], "Deployment", role)["spec"]["template"]["spec"]["containers"]
        assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
        assert container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
        assert container["startupProbe"]["httpGet"]["path"] == "/health/live"
        # Probes and Prometheus come by pod IP: it must be an allowed host.
        assert k8s.env_value(container, "DJANGO_ALLOWED_HOSTS").startswith("$(POD_IP),")
        assert k8s.env_value(container, "BIND_HOST") is None, "the image sets BIND_HOST=0.0.0.0"


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_worker_and_beat_probe_the_age_of_their_heartbeat_file(rendered, overlay):
    for role in ("worker", "beat"):
        (container,) = k8s.one(rendered[overlay], "Deployment", role)["spec"]["template"]["spec"]["containers"]
        assert k8s.env_value(container, "ROLE") == role
        heartbeat = k8s.env_value(container, "CELERY_HEARTBEAT_FILE")
        assert heartbeat and heartbeat.startswith("/tmp/")
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            command = container[probe]["exec"]["command"]
            path, max_age = HEARTBEAT_PROBE.search(command[-1]).groups()
            assert command[:2] == ["sh", "-c"] and path == heartbeat
            # Stale only after several missed beats (every 5 s), and within a few probe periods.
            assert 30 <= int(max_age) <= 120


def service_backed(rendered, overlay, pod):
    return any(
        k8s.selector_matches({"matchLabels": service["spec"]["selector"]}, pod.labels)
        for service in k8s.find(rendered[overlay], "Service")
    )


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_pods_behind_a_service_pause_before_stopping_so_endpoints_drain(rendered, overlay):
    backed = [pod for pod in k8s.pod_templates(rendered[overlay]) if service_backed(rendered, overlay, pod)]
    assert {"web", "limiter", "grafana", "prometheus"} <= {pod.component for pod in backed}
    for pod in backed:
        if pod.kind == "StatefulSet":
            continue  # data stores: clients reconnect; a pause would only delay the shutdown checkpoint
        for container in pod.containers(init=False):
            pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
            assert 1 <= pause < pod.spec["terminationGracePeriodSeconds"], pod.ref
    web = k8s.one(rendered[overlay], "Deployment", "web")["spec"]["template"]["spec"]
    # preStop pause + gunicorn's graceful timeout (20 s) must fit in the grace period.
    assert web["terminationGracePeriodSeconds"] >= 5 + 20


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_no_pod_gets_an_api_token_except_prometheus_and_the_app_has_no_rbac(rendered, overlay, debug_pod):
    (account,) = [a for a in k8s.find(rendered[overlay], "ServiceAccount") if a["metadata"]["name"] == "endpoint-stats"]
    assert account["automountServiceAccountToken"] is False
    for pod in all_pods(rendered, overlay, debug_pod):
        if pod.component == "prometheus":
            assert pod.spec["serviceAccountName"] == "prometheus" and pod.spec["automountServiceAccountToken"] is True
        else:
            assert pod.spec["automountServiceAccountToken"] is False, pod.ref
            assert pod.spec.get("serviceAccountName", "default") in {"endpoint-stats", "default"}, pod.ref
    assert not k8s.find(rendered[overlay], "PodSecurityPolicy")
    for binding in k8s.find(rendered[overlay], "RoleBinding") + k8s.find(rendered[overlay], "ClusterRoleBinding"):
        assert [(s["kind"], s["name"]) for s in binding["subjects"]] == [("ServiceAccount", "prometheus")], binding
    for role in k8s.find(rendered[overlay], "Role") + k8s.find(rendered[overlay], "ClusterRole"):
        for rule in role["rules"]:
            assert set(rule["verbs"]) <= {"get", "list", "watch"}, role["metadata"]["name"]
            assert not {"secrets", "pods/exec", "nodes/proxy", "*"} & set(rule["resources"]), role["metadata"]["name"]


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_scaled_roles_have_hpas_pdbs_rolling_updates_and_topology_spread(rendered, overlay):
    docs = rendered[overlay]
    for role in SCALED_ROLES:
        deployment = k8s.one(docs, "Deployment", role)
        hpa = k8s.one(docs, "HorizontalPodAutoscaler", role)
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": role}
        assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
        assert "replicas" not in deployment["spec"], f"{role}: the HPA owns the replica count"
        pdb = k8s.one(docs, "PodDisruptionBudget", role)
        template_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert k8s.selector_matches(pdb["spec"]["selector"], template_labels)
        strategy = deployment["spec"]["strategy"]
        assert strategy["type"] == "RollingUpdate" and strategy["rollingUpdate"]["maxUnavailable"] == 0
        spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
        assert all(k8s.selector_matches(c["labelSelector"], template_labels) for c in spread)
        if overlay == "prod":
            assert spread[0]["whenUnsatisfiable"] == "DoNotSchedule"
    prod_web, base_web = (k8s.one(rendered[o], "HorizontalPodAutoscaler", "web")["spec"] for o in ("prod", "minikube"))
    assert prod_web["minReplicas"] > base_web["minReplicas"]


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_beat_is_a_singleton_replaced_not_rolled(rendered, overlay):
    beat = k8s.one(rendered[overlay], "Deployment", "beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    assert not [h for h in k8s.find(rendered[overlay], "HorizontalPodAutoscaler") if h["metadata"]["name"] == "beat"]


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_app_pods_wait_for_the_migrate_job_instead_of_migrating(rendered, overlay):
    for pod in k8s.pod_templates(rendered[overlay]):
        if not pod.is_app() or pod.kind == "Job":
            continue
        joined = " ".join(" ".join(c.get("command", [])) for c in pod.containers(init=False))
        assert "migrate" not in joined, f"{pod.ref} must not migrate (one Job per release does)"
        if pod.component == "beat":
            assert not pod.spec.get("initContainers"), "beat touches no table: it does not wait"
            continue
        (init,) = pod.spec["initContainers"]
        assert "until python manage.py migrate --check" in init["command"][-1], pod.ref


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_grafana_has_no_anonymous_access_and_its_admin_comes_from_a_secret(rendered, overlay):
    (container,) = k8s.one(rendered[overlay], "Deployment", "grafana")["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert env["GF_AUTH_ANONYMOUS_ENABLED"]["value"] == "false"
    assert "GF_AUTH_ANONYMOUS_ORG_ROLE" not in env
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {
        v["name"]: v for v in k8s.one(rendered[overlay], "Deployment", "grafana")["spec"]["template"]["spec"]["volumes"]
    }
    for name in ("GF_SECURITY_ADMIN_USER__FILE", "GF_SECURITY_ADMIN_PASSWORD__FILE"):
        folder = env[name]["value"].rsplit("/", 1)[0]
        assert volumes[mounts[folder]]["secret"]["secretName"].startswith("grafana-admin"), name
    assert volumes[mounts["/etc/grafana/secrets/db"]]["secret"]["secretName"].startswith("grafana-db")
    assert not [item for item in container["env"] if "valueFrom" in item], "no Secret in Grafana's environment"
    assert "GF_INSTALL_PLUGINS" not in env


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_the_ingress_routes_api_grafana_and_the_admin(rendered, overlay):
    routes = {}
    for ingress in k8s.find(rendered[overlay], "Ingress"):
        assert ingress["spec"]["ingressClassName"] == "nginx"
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                routes[path["path"]] = path["backend"]["service"]["name"]
        if overlay == "prod":
            assert ingress["spec"]["tls"][0]["secretName"] == "endpoint-stats-tls"
    assert routes == {"/api(/|$)(.*)": "web", "/admin": "web", "/static": "web", "/grafana": "grafana"}
    services = {s["metadata"]["name"] for s in k8s.find(rendered[overlay], "Service")}
    assert set(routes.values()) <= services


def test_trusted_proxy_count_counts_the_ingress_hop(rendered):
    for overlay in k8s.OVERLAYS:
        assert int(k8s.settings_configmap(rendered[overlay])["TRUSTED_PROXY_COUNT"]) >= 1


# --- NetworkPolicies --------------------------------------------------------------------------


def allowed(policies, *, source: dict, target: dict | None, port: int, protocol: str = "TCP", cidr: str | None = None):
    """Would the policies let `source` (pod labels) reach `target` (pod labels) or `cidr` on port?

    Both directions are checked: the source's egress and, for a pod target, the target's ingress.
    Pods outside the namespace (the ingress controller) are given as labels with a "namespace" key
    (and that namespace's own labels under "namespace_labels").
    """

    def port_ok(rule):
        ports = rule.get("ports")
        return not ports or any(p.get("protocol", "TCP") == protocol and p.get("port") in (port, None) for p in ports)

    def peer_ok(peers, labels, ip):
        if peers is None:
            return True
        for peer in peers:
            if "ipBlock" in peer:
                if ip is not None and peer["ipBlock"]["cidr"] == ip:
                    return True
                continue
            if labels is None:
                continue
            namespace = labels.get("namespace", "endpoint-stats")
            if "namespaceSelector" in peer:
                namespace_labels = {"kubernetes.io/metadata.name": namespace, **labels.get("namespace_labels", {})}
                if not k8s.selector_matches(peer["namespaceSelector"], namespace_labels):
                    continue
            elif namespace != "endpoint-stats":
                continue
            if "podSelector" in peer and not k8s.selector_matches(peer["podSelector"], labels):
                continue
            return True
        return False

    def direction_ok(pod_labels, kind, key, other_labels, ip):
        if pod_labels.get("namespace", "endpoint-stats") != "endpoint-stats":
            return True  # not ours: its own namespace decides
        selecting = [p for p in policies if k8s.selector_matches(p["spec"]["podSelector"], pod_labels)]
        selecting = [p for p in selecting if kind in p["spec"]["policyTypes"]]
        if not selecting:
            return True
        rules = [rule for p in selecting for rule in p["spec"].get(kind.lower(), [])]
        return any(port_ok(rule) and peer_ok(rule.get(key), other_labels, ip) for rule in rules)

    egress = direction_ok(source, "Egress", "to", target, cidr)
    ingress = target is None or direction_ok(target, "Ingress", "from", source, None)
    return egress and ingress


def pod(component):
    return {"app.kubernetes.io/name": "endpoint-stats", "app.kubernetes.io/component": component}


INGRESS_CONTROLLER = {"namespace": "ingress-nginx", "app.kubernetes.io/name": "ingress-nginx"}
# A service of another team asking the limiter: its namespace carries the access label, or not.
LIMITER_CALLER = {"namespace": "shop", "namespace_labels": {"endpointstats/limiter-access": "true"}, "app": "shop"}
OTHER_NAMESPACE_POD = {"namespace": "shop", "app": "shop"}
KUBE_SYSTEM = {"kubernetes.io/metadata.name": "kube-system"}
KUBE_DNS = {"k8s-app": "kube-dns"}


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_network_policies_deny_by_default_and_allow_dns_everywhere(rendered, overlay):
    policies = k8s.find(rendered[overlay], "NetworkPolicy")
    default_deny = k8s.one(rendered[overlay], "NetworkPolicy", "default-deny")["spec"]
    assert default_deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    for pod_template in k8s.pod_templates(rendered[overlay]):
        labels = pod_template.labels
        for protocol in ("UDP", "TCP"):
            egress_ok = any(
                k8s.selector_matches(p["spec"]["podSelector"], labels)
                and any(
                    any(port == {"protocol": protocol, "port": 53} for port in rule.get("ports", []))
                    and any(
                        k8s.selector_matches(peer.get("namespaceSelector"), KUBE_SYSTEM)
                        and k8s.selector_matches(peer.get("podSelector"), KUBE_DNS)
                        for peer in rule.get("to", [])
                    )
                    for rule in p["spec"].get("egress", [])
                )
                for p in policies
            )
            assert egress_ok, f"{pod_template.ref}: no DNS egress over {protocol} 53 to kube-dns"


FLOWS = [
    # (source, target, port, expected)
    (INGRESS_CONTROLLER, pod("web"), 8000, True),
    (INGRESS_CONTROLLER, pod("grafana"), 3000, True),
    # The limiter answers named callers only: labelled namespaces, and its own namespace's Prometheus.
    (INGRESS_CONTROLLER, pod("limiter"), 8001, False),
    (LIMITER_CALLER, pod("limiter"), 8001, True),
    (OTHER_NAMESPACE_POD, pod("limiter"), 8001, False),
    (pod("grafana"), pod("limiter"), 8001, False),
    (INGRESS_CONTROLLER, pod("worker"), 8002, False),
    (INGRESS_CONTROLLER, pod("prometheus"), 9090, False),
    (pod("prometheus"), pod("web"), 8000, True),
    (pod("prometheus"), pod("limiter"), 8001, True),
    (pod("prometheus"), pod("worker"), 8002, True),
    (pod("grafana"), pod("prometheus"), 9090, True),
    (pod("web"), pod("limiter"), 8001, False),  # web decides in-process (shared Redis counters)
    (pod("web"), pod("worker"), 8002, False),
    (pod("worker"), pod("web"), 8000, False),
    (pod("beat"), pod("web"), 8000, False),
]
DATA_FLOWS = [
    (pod("web"), "postgres", 5432, True),
    (pod("web"), "redis", 6379, True),
    (pod("limiter"), "postgres", 5432, True),
    (pod("limiter"), "redis", 6379, True),
    (pod("worker"), "postgres", 5432, True),
    (pod("worker"), "redis", 6379, True),
    (pod("beat"), "redis", 6379, True),
    (pod("beat"), "postgres", 5432, False),
    (pod("migrate"), "postgres", 5432, True),
    (pod("migrate"), "redis", 6379, False),
    (pod("grafana"), "postgres", 5432, True),
    (pod("grafana"), "redis", 6379, False),
    (pod("prometheus"), "postgres", 5432, False),
]
PROD_ADDRESSES = {"postgres": "192.0.2.10/32", "redis": "192.0.2.20/32"}


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
@pytest.mark.parametrize(("source", "target", "port", "expected"), FLOWS)
def test_network_policies_allow_exactly_the_flows_each_role_needs(rendered, overlay, source, target, port, expected):
    policies = k8s.find(rendered[overlay], "NetworkPolicy")
    assert allowed(policies, source=source, target=target, port=port) is expected


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
@pytest.mark.parametrize(("source", "store", "port", "expected"), DATA_FLOWS)
def test_network_policies_let_exactly_their_clients_reach_the_data_stores(
    rendered, overlay, source, store, port, expected
):
    policies = k8s.find(rendered[overlay], "NetworkPolicy")
    if overlay == "minikube":
        result = allowed(policies, source=source, target=pod(store), port=port)
    else:
        result = allowed(policies, source=source, target=None, port=port, cidr=PROD_ADDRESSES[store])
    assert result is expected


def test_egress_to_the_world_is_never_open_on_all_ports(rendered):
    for overlay in k8s.OVERLAYS:
        for policy in k8s.find(rendered[overlay], "NetworkPolicy"):
            for rule in policy["spec"].get("egress", []):
                peers = rule.get("to")
                if peers is None or any(peer.get("ipBlock", {}).get("cidr") == "0.0.0.0/0" for peer in peers):
                    assert rule.get("ports"), f"{overlay} {policy['metadata']['name']}: egress anywhere on any port"


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_every_service_and_policy_selects_real_pods(rendered, overlay, debug_pod):
    pods = all_pods(rendered, overlay, debug_pod)
    for service in k8s.find(rendered[overlay], "Service"):
        selected = [p for p in pods if k8s.selector_matches({"matchLabels": service["spec"]["selector"]}, p.labels)]
        assert selected, f"Service {service['metadata']['name']} selects no pod"
        for port in service["spec"]["ports"]:
            for pod_template in selected:
                names = {p.get("name") for c in pod_template.containers(init=False) for p in c.get("ports", [])}
                assert port["targetPort"] in names, f"Service {service['metadata']['name']}: {port['targetPort']}"
    for policy in k8s.find(rendered[overlay], "NetworkPolicy"):
        assert any(k8s.selector_matches(policy["spec"]["podSelector"], p.labels) for p in pods), (
            f"NetworkPolicy {policy['metadata']['name']} selects no pod"
        )


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_the_limiter_reads_its_token_from_a_secret_mounted_as_a_directory(rendered, overlay):
    pod_spec = k8s.one(rendered[overlay], "Deployment", "limiter")["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    token_file = k8s.env_value(container, "LIMITER_TOKEN_FILE")
    (mount,) = [m for m in container["volumeMounts"] if token_file.startswith(m["mountPath"] + "/")]
    assert mount["readOnly"] is True and "subPath" not in mount
    (volume,) = [v for v in pod_spec["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"].startswith("endpointstats-limiter")
    assert token_file.rsplit("/", 1)[1] == "token"
    assert k8s.env_value(container, "LIMITER_TOKEN") is None, "never a literal token in a manifest"
    if overlay == "minikube":  # generated locally (prod: created out of band, docs/OPERATIONS.md)
        secret = k8s.one(rendered[overlay], "Secret", volume["secret"]["secretName"])
        assert set(secret["data"]) == {"token"}
