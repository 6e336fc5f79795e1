"""The web and limiter roles boot with the rendered settings ConfigMap and rate-limit rules, and answer
their probes as the kubelet sends them (by pod IP, here 127.0.0.1)."""

import os

import pytest

from deploy.tests import k8s
from tracker.tests.processes import gunicorn, http_get, suite_database_url


@pytest.mark.usefixtures("django_db_setup")  # this worker's test database exists before the roles connect
@pytest.mark.parametrize("role", ["web", "limiter"])
def test_the_role_boots_with_the_rendered_configuration_and_answers_its_probes(rendered, role, tmp_path):
    docs = rendered["minikube"]
    settings = dict(k8s.settings_configmap(docs))
    rules = k8s.one(docs, "ConfigMap", "endpointstats-ratelimits")["data"]
    rules_dir = tmp_path / "ratelimits"
    rules_dir.mkdir()
    for name, content in rules.items():
        (rules_dir / name).write_text(content)
    (container,) = k8s.one(docs, "Deployment", role)["spec"]["template"]["spec"]["containers"]
    allowed_hosts = k8s.env_value(container, "DJANGO_ALLOWED_HOSTS").replace("$(POD_IP)", "127.0.0.1")
    env = {
        **settings,
        "DJANGO_ALLOWED_HOSTS": allowed_hosts.replace("$(PUBLIC_HOSTS)", settings["PUBLIC_HOSTS"]),
        "RATE_LIMITS_FILE": str(rules_dir / settings["RATE_LIMITS_FILE"].rsplit("/", 1)[1]),
        "BACKUP_DIR": str(tmp_path / "backups"),
        "DATABASE_URL": suite_database_url(),
        "REDIS_URL": os.environ["REDIS_URL"],
        "POD_NAME": f"{role}-probe-test",
    }
    with gunicorn(env=env, role=role, workers=1) as (base_url, _):
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            status, body = http_get(base_url + container[probe]["httpGet"]["path"])
            assert status == 200, f"{role} {probe}: {status} {body[:300]!r}"
        status, _ = http_get(base_url + "/metrics")
        assert status == 200
