"""The image: hadolint clean, multi-stage, no compilers in the final stage, a non-root user, pinned base."""

import re
import subprocess
import sys
from pathlib import Path

from deploy.tests import k8s

DOCKERFILE = k8s.REPO / "Dockerfile"
COMPILERS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|cpp|make|[a-z0-9.+-]+-dev)\b")


def stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined), split into build stages."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    result: list[list[str]] = []
    for instruction in instructions:
        if instruction.upper().startswith("FROM "):
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def test_hadolint_passes():
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_is_multi_stage_from_a_pinned_python_slim():
    all_stages = stages()
    assert len(all_stages) >= 2
    for stage in all_stages:
        image = stage[0].split()[1]
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?", image), image
    final = all_stages[-1]
    assert any(line.startswith("COPY --from=builder") for line in final)


def test_the_final_stage_has_no_compilers_and_runs_as_uid_10001():
    final = stages()[-1]
    installs = " ".join(line for line in final if "apt-get install" in line)
    assert not COMPILERS.findall(installs.replace("--no-install-recommends", "")), installs
    assert "postgresql-client" in installs, "pg_dump for manage.py backup"
    users = [line for line in final if line.upper().startswith("USER ")]
    assert users and users[-1].split()[1] in {"10001", "10001:10001"}, "numeric, so runAsNonRoot can verify it"
    assert any("collectstatic" in line for line in final), "static files are built into the image"
    assert not any(line.upper().startswith("ENTRYPOINT") for line in final), "the command picks the role"


def test_the_default_command_is_the_procfiles_web_role():
    (cmd,) = [line for line in stages()[-1] if line.upper().startswith("CMD ")]
    import json

    assert json.loads(cmd[4:]) == k8s.procfile()["web"]


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_build_context():
    ignored = set((k8s.REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".secret_key", "db.sqlite3", "backups", "staticfiles"} <= ignored
