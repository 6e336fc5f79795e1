"""Helpers for the deploy tests: render the overlays with real kustomize, walk what they render."""

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
KUSTOMIZE = REPO / "deploy" / "kustomize"
OVERLAYS = ("minikube", "prod")
APP_IMAGE = "endpoint-stats"
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job", "DaemonSet", "Pod"}


def kubectl() -> str:
    """The kubectl `make test` found or fetched (KUBECTL), else one on PATH or in .cache/."""
    for candidate in (os.environ.get("KUBECTL"), shutil.which("kubectl"), str(REPO / ".cache/kubectl/kubectl")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("No kubectl: run `make kubectl` (it fetches one into .cache/kubectl) or set KUBECTL.")


def render(workdir: Path, overlay: str) -> list[dict]:
    """`kubectl kustomize` of an overlay, from a copy of deploy/kustomize with local secrets written."""
    tree = workdir / "kustomize"
    if not tree.exists():
        shutil.copytree(KUSTOMIZE, tree, ignore=shutil.ignore_patterns("*.env"))
        subprocess.run(
            ["bash", str(REPO / "deploy/minikube.sh"), "secrets"],
            env={**os.environ, "ES_SECRETS_DIR": str(tree / "overlays/minikube/secrets")},
            check=True,
            capture_output=True,
            timeout=60,
        )
    result = subprocess.run(
        [kubectl(), "kustomize", str(tree / "overlays" / overlay)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"kubectl kustomize overlays/{overlay} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@dataclass
class PodTemplate:
    """A pod spec and where it came from (kind/name of its workload)."""

    kind: str
    name: str
    workload: dict
    labels: dict
    spec: dict

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def component(self) -> str:
        return self.labels.get("app.kubernetes.io/component", "")

    def containers(self, *, init: bool = True) -> list[dict]:
        return list(self.spec.get("containers", [])) + (list(self.spec.get("initContainers", [])) if init else [])

    def is_app(self) -> bool:
        return any(c["image"].split(":")[0].endswith(APP_IMAGE) for c in self.spec["containers"])


def pod_templates(docs: list[dict]) -> Iterator[PodTemplate]:
    for doc in docs:
        if doc["kind"] == "Pod":
            yield PodTemplate("Pod", doc["metadata"]["name"], doc, doc["metadata"].get("labels", {}), doc["spec"])
        elif doc["kind"] in WORKLOAD_KINDS:
            template = doc["spec"]["template"]
            yield PodTemplate(
                doc["kind"], doc["metadata"]["name"], doc, template["metadata"].get("labels", {}), template["spec"]
            )


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict], kind: str, name: str) -> dict:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected exactly one {kind}/{name}, found {len(found)}"
    return found[0]


def selector_matches(selector: dict | None, labels: dict) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions); {} matches all."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def env_value(container: dict, name: str) -> str | None:
    for item in container.get("env", []):
        if item["name"] == name:
            return item.get("value")
    return None


def procfile() -> dict[str, list[str]]:
    roles = {}
    for line in (REPO / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            role, command = line.split(":", 1)
            roles[role.strip()] = shlex.split(command)
    return roles


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity as a float (cores for CPU, bytes for memory)."""
    text = str(value)
    suffixes = {
        "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
        "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "m": 10**-3,
    }  # fmt: skip
    for suffix in sorted(suffixes, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * suffixes[suffix]
    return float(text)


def generated(docs: list[dict], kind: str, name: str) -> dict:
    """The one generated object (ConfigMap, Secret) whose name is `name` plus kustomize's hash suffix."""
    (found,) = [d for d in docs if d["kind"] == kind and re.fullmatch(rf"{name}-[a-z0-9]{{10}}", d["metadata"]["name"])]
    return found


def settings_configmap(docs: list[dict]) -> dict:
    """The data of the app's settings ConfigMap."""
    return generated(docs, "ConfigMap", "endpointstats-settings")["data"]
