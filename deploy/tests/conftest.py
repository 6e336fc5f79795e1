"""Fixtures of the deploy tests: both overlays rendered once per session with real kustomize."""

import pytest
import yaml

from deploy.tests import k8s


@pytest.fixture(scope="session")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    """{"minikube": [...objects], "prod": [...objects]} exactly as `kubectl kustomize` renders them."""
    workdir = tmp_path_factory.mktemp("kustomize")
    return {overlay: k8s.render(workdir, overlay) for overlay in k8s.OVERLAYS}


@pytest.fixture(scope="session")
def debug_pod() -> dict:
    """The throwaway pod `deploy/minikube.sh debug` creates (it must pass the same policies)."""
    return yaml.safe_load((k8s.KUSTOMIZE / "overlays/minikube/debug/pod.yaml").read_text())
