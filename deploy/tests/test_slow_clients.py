"""Slow clients in the cluster: only the ingress (which buffers whole requests) talks to gunicorn."""

import pytest

from deploy.tests import k8s


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_the_gunicorn_roles_are_reachable_only_inside_the_cluster(rendered, overlay):
    for name in ("web", "limiter"):
        service = k8s.one(rendered[overlay], "Service", name)
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", f"{overlay}: Service/{name}"
        assert not any("nodePort" in port for port in service["spec"]["ports"])


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_the_ingress_buffers_requests_before_they_reach_web(rendered, overlay):
    """ingress-nginx reads a whole request (headers within client_header_timeout, the body into its
    buffer) before it opens a connection to web, so a slow client never holds a gunicorn worker."""
    to_web = [
        ingress
        for ingress in k8s.find(rendered[overlay], "Ingress")
        if any(
            path["backend"]["service"]["name"] == "web"
            for rule in ingress["spec"]["rules"]
            for path in rule["http"]["paths"]
        )
    ]
    assert to_web
    for ingress in to_web:
        annotations = ingress["metadata"].get("annotations") or {}
        assert ingress["spec"]["ingressClassName"] == "nginx"
        assert annotations.get("nginx.ingress.kubernetes.io/proxy-request-buffering", "on") == "on"
