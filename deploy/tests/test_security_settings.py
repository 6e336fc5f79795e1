"""`manage.py check --deploy` is clean with exactly the settings the prod overlay gives each HTTP role."""

import os
import re
import secrets
import subprocess
import sys

import pytest

from deploy.tests import k8s


def role_environment(docs: list[dict], role: str, scratch) -> dict[str, str]:
    """The environment a role's container gets: the settings ConfigMap, then its own `env` ($(VAR)
    expanded as the kubelet does); Secrets (created out of band in prod) get stand-ins of their shape."""
    (container,) = k8s.one(docs, "Deployment", role)["spec"]["template"]["spec"]["containers"]
    env = dict(k8s.settings_configmap(docs)) | {"POD_IP": "10.1.2.3", "POD_NAME": f"{role}-0"}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), item["value"])
    # Files of mounted Secrets are not here: stand-ins in the environment instead.
    for name in [
        name for name, value in env.items() if name.endswith("_FILE") and value.startswith("/var/run/secrets/")
    ]:
        env.pop(name)
    env["DJANGO_SECRET_KEY"] = secrets.token_urlsafe(50)
    env["LIMITER_TOKEN"] = secrets.token_urlsafe(32)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(scratch)  # an emptyDir in the pod
    # The rules ConfigMap, "mounted" where RATE_LIMITS_FILE expects it.
    rules = k8s.one(docs, "ConfigMap", "endpointstats-ratelimits")["data"]
    name = env["RATE_LIMITS_FILE"].rsplit("/", 1)[1]
    (scratch / name).write_text(rules[name])
    env["RATE_LIMITS_FILE"] = str(scratch / name)
    return env


@pytest.mark.parametrize("role", ["web", "limiter"])
def test_check_deploy_is_clean_with_the_prod_overlays_settings(rendered, role, tmp_path):
    env = role_environment(rendered["prod"], role, tmp_path)
    assert env["DJANGO_SECURE_SSL_REDIRECT"] == "true" and env.get("DJANGO_DEBUG", "false") == "false"
    base = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}

    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=k8s.REPO,
        env=base | env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
