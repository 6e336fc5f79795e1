"""Both overlays render with real kustomize, and every object is valid for current Kubernetes."""

import os
import re
from pathlib import Path

import pytest
import yaml
from kubernetes_validate import utils as kubernetes_validate

from deploy.tests import k8s

DEPRECATED_KUSTOMIZE_FIELDS = {
    "commonLabels",  # labels:
    "patchesStrategicMerge",  # patches:
    "patchesJson6902",  # patches:
    "vars",  # replacements:
    "bases",  # resources:
    "imageTags",  # images:
}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_every_rendered_object_validates_strictly_against_current_kubernetes(rendered, overlay):
    version = kubernetes_validate.latest_version()
    problems = []
    for doc in rendered[overlay]:
        ref = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{ref}: {'.'.join(map(str, error.path))}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            # No schema means a CRD or a removed API (PodSecurityPolicy): not allowed here.
            problems.append(f"{ref}: {error.message}")
    assert not problems, f"overlays/{overlay} against Kubernetes {version}:\n" + "\n".join(problems)


def test_the_debug_pod_validates_strictly(debug_pod):
    kubernetes_validate.validate(debug_pod, kubernetes_validate.latest_version(), strict=True)


def test_no_kustomization_uses_deprecated_fields():
    found = []
    for path in sorted(k8s.KUSTOMIZE.rglob("kustomization.yaml")):
        fields = set(yaml.safe_load(path.read_text())) & DEPRECATED_KUSTOMIZE_FIELDS
        found += [f"{path.relative_to(k8s.REPO)}: {field}" for field in sorted(fields)]
    assert not found, "deprecated kustomize fields:\n" + "\n".join(found)
    assert len(list(k8s.KUSTOMIZE.rglob("kustomization.yaml"))) == 4  # base, 2 overlays, the KEDA component


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_every_image_is_pinned_to_a_version(rendered, overlay, debug_pod):
    for pod in [*k8s.pod_templates(rendered[overlay]), *k8s.pod_templates([debug_pod])]:
        for container in pod.containers():
            image = container["image"]
            name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
            assert tag and tag != "latest", f"{pod.ref}/{container['name']}: image {image} has no fixed tag"


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_the_migrate_job_is_named_after_the_release(rendered, overlay):
    web = k8s.one(rendered[overlay], "Deployment", "web")
    tag = web["spec"]["template"]["spec"]["containers"][0]["image"].rsplit(":", 1)[1]
    (job,) = k8s.find(rendered[overlay], "Job")
    assert job["metadata"]["name"] == f"migrate-{tag}"
    # A DNS label (no dots): the Job's pods take their hostname from it.
    assert DNS_LABEL.match(job["metadata"]["name"]) and len(job["metadata"]["name"]) <= 63
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["image"] == web["spec"]["template"]["spec"]["containers"][0]["image"]
    assert "python manage.py migrate --no-input" in " ".join(container["command"])


def test_the_committed_minikube_tag_is_what_deploy_minikube_sh_replaces():
    text = (k8s.KUSTOMIZE / "overlays/minikube/kustomization.yaml").read_text()
    assert re.search(r"^    newTag: dev$", text, re.MULTILINE), "deploy/minikube.sh render() expects '    newTag: dev'"


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_container_commands_are_the_procfiles(rendered, overlay):
    procfile = k8s.procfile()
    assert set(procfile) == {"web", "limiter", "worker", "beat"}
    for role, command in procfile.items():
        deployment = k8s.one(rendered[overlay], "Deployment", role)
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["command"] == command, f"{overlay} {role}: {container['command']} != Procfile {command}"
        assert "args" not in container


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_the_namespace_enforces_the_restricted_pod_security_level(rendered, overlay):
    (namespace,) = k8s.find(rendered[overlay], "Namespace")
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert {doc["metadata"].get("namespace") for doc in rendered[overlay] if doc["kind"] not in CLUSTER_SCOPED} == {
        "endpoint-stats"
    }


CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_credentials_are_only_in_secrets(rendered, overlay):
    url_with_password = re.compile(r"://[^/\s:@]*:[^@\s]+@")
    for configmap in k8s.find(rendered[overlay], "ConfigMap"):
        name = configmap["metadata"]["name"]
        for key, value in (configmap.get("data") or {}).items():
            assert not re.search(r"PASSWORD|SECRET|TOKEN", key, re.IGNORECASE), f"{name}: {key} belongs in a Secret"
            assert not url_with_password.search(value), f"{name}/{key}: a URL with a password"
            for line in value.splitlines():
                # Provisioning files name files of mounted Secrets, never values.
                if re.match(r"\s*password:", line):
                    assert "$__file{/etc/grafana/secrets/" in line, f"{name}/{key}: {line.strip()}"
    for pod in k8s.pod_templates(rendered[overlay]):
        secret_mounts = {
            volume["name"]: volume["secret"]["secretName"]
            for volume in pod.spec.get("volumes", [])
            if "secret" in volume
        }
        for container in pod.containers():
            mounted = [
                mount["mountPath"] for mount in container.get("volumeMounts", []) if mount["name"] in secret_mounts
            ]
            for item in container.get("env", []):
                if item["name"].endswith("_FILE") and re.search(
                    r"PASSWORD|SECRET|DATABASE_URL|REDIS_URL|USER", item["name"]
                ):
                    # A credential read from a file: the file is in a mounted Secret.
                    assert any(item["value"].startswith(path + "/") for path in mounted), f"{pod.ref}: {item}"
                elif re.search(r"PASSWORD|SECRET_KEY|DATABASE_URL|REDIS_URL|_AUTH$", item["name"]):
                    assert "secretKeyRef" in item.get("valueFrom", {}), (
                        f"{pod.ref}/{container['name']}: {item['name']} must come from a Secret"
                    )
                    # Only the minikube data stores' official images take a password from the environment.
                    assert pod.component in {"postgres", "redis"}, f"{pod.ref}: {item['name']} must be a mounted file"


def test_prod_generates_no_secrets_and_runs_no_data_stores(rendered):
    kinds = {doc["kind"] for doc in rendered["prod"]}
    assert "Secret" not in kinds, "prod Secrets are created out of band (docs/OPERATIONS.md)"
    assert "StatefulSet" not in kinds and "PersistentVolumeClaim" not in kinds
    referenced = {
        volume["secret"]["secretName"]
        for pod in k8s.pod_templates(rendered["prod"])
        for volume in pod.spec.get("volumes", [])
        if "secret" in volume
    }
    assert referenced == {
        "endpointstats-app",
        "endpointstats-limiter",
        "endpointstats-backup-s3",
        "grafana-admin",
        "grafana-db",
    }
    documented = (k8s.REPO / "docs/OPERATIONS.md").read_text()
    for name in referenced | {"endpoint-stats-tls"}:
        assert name in documented, f"docs/OPERATIONS.md must say how to create Secret {name}"


def test_minikube_secrets_are_generated_locally_and_consistent(tmp_path):
    import subprocess

    env_dir = tmp_path / "secrets"
    script = str(k8s.REPO / "deploy/minikube.sh")
    run = {"env": {"ES_SECRETS_DIR": str(env_dir), "PATH": "/usr/bin:/bin"}, "check": True, "capture_output": True}
    subprocess.run(["bash", script, "secrets"], **run)
    first = {path.name: path.read_text() for path in env_dir.iterdir()}
    subprocess.run(["bash", script, "secrets"], **run)  # a second run keeps them
    assert {path.name: path.read_text() for path in env_dir.iterdir()} == first
    assert set(first) == {"app.env", "postgres.env", "redis.env", "grafana-admin.env", "grafana-db.env", "limiter.env"}
    values = {name: dict(line.split("=", 1) for line in text.splitlines()) for name, text in first.items()}
    pg, redis = values["postgres.env"]["POSTGRES_PASSWORD"], values["redis.env"]["REDIS_PASSWORD"]
    assert len(pg) == 64 and len(redis) == 64 and pg != redis
    assert values["app.env"]["DATABASE_URL"] == f"postgres://endpointstats:{pg}@postgres:5432/endpointstats"
    assert values["app.env"]["REDIS_URL"] == f"redis://:{redis}@redis:6379/0"
    assert values["grafana-db.env"]["user"] == "grafana_ro"
    assert len(values["limiter.env"]["token"]) == 64 and values["limiter.env"]["token"] not in {pg, redis}
    assert all((env_dir / name).stat().st_mode & 0o077 == 0 for name in first)
    gitignore = (k8s.REPO / ".gitignore").read_text()
    assert "deploy/kustomize/overlays/minikube/secrets/*.env" in gitignore


def test_deploy_minikube_sh_is_shellcheck_clean_and_refuses_unknown_commands():
    import subprocess
    import sys

    shellcheck = Path(sys.executable).parent / "shellcheck"
    result = subprocess.run([str(shellcheck), str(k8s.REPO / "deploy/minikube.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    script = str(k8s.REPO / "deploy/minikube.sh")
    result = subprocess.run(["bash", script, "frobnicate"], capture_output=True, text=True)
    assert result.returncode == 2 and "deploy/minikube.sh up" in result.stderr


def test_deploy_minikube_sh_renders_the_overlay_with_the_release_tag(tmp_path):
    import subprocess

    result = subprocess.run(
        ["bash", str(k8s.REPO / "deploy/minikube.sh"), "render", "0a1b2c3d4e5f"],
        env={**os.environ, "ES_SECRETS_DIR": str(tmp_path / "secrets"), "KUBECTL": k8s.kubectl()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    images = {c["image"] for pod in k8s.pod_templates(docs) if pod.is_app() for c in pod.containers()}
    assert images == {"endpoint-stats:0a1b2c3d4e5f"}
    assert [job["metadata"]["name"] for job in k8s.find(docs, "Job")] == ["migrate-0a1b2c3d4e5f"]
    # The committed overlay is untouched.
    assert "newTag: dev" in (k8s.KUSTOMIZE / "overlays/minikube/kustomization.yaml").read_text()


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_no_volume_is_mounted_inside_another(rendered, overlay):
    # A mount inside a read-only Secret mount needs its mount point created in a read-only folder.
    for pod in k8s.pod_templates(rendered[overlay]):
        for container in pod.containers():
            paths = [mount["mountPath"].rstrip("/") for mount in container.get("volumeMounts", [])]
            nested = [(a, b) for a in paths for b in paths if a != b and b.startswith(a + "/")]
            assert not nested, f"{pod.ref}/{container['name']}: {nested}"
