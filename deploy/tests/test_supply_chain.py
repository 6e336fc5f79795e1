"""Supply chain: the image installs exactly the hash-pinned lock, and no secret is in the repository."""

import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version

import pytest
from packaging.markers import Marker
from packaging.utils import canonicalize_name

from deploy.tests import k8s
from deploy.tests.test_dockerfile import stages

REQUIREMENT = re.compile(r"^([A-Za-z0-9._-]+)(?:\[[^]]*\])?==([^\s;\\]+)")  # name[extras]==version


def pins(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        match = REQUIREMENT.match(line.strip())
        if match:
            found[canonicalize_name(match[1])] = match[2]
    return found


def lock_entries(name: str = "requirements.lock") -> list[tuple[str, str, str | None, list[str]]]:
    """(name, version, marker, hashes) of each entry of a lock file (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", (k8s.REPO / name).read_text())
    entries = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        requirement, _, marker = line.split(" --hash")[0].partition(";")
        match = REQUIREMENT.match(requirement.strip())
        assert match, f"{name}: not a pinned requirement: {line[:80]}"
        entries.append(
            (canonicalize_name(match[1]), match[2], marker.strip() or None, re.findall(r"--hash=(\S+)", line))
        )
    return entries


def test_the_lock_pins_every_package_with_hashes_and_agrees_with_requirements_txt():
    entries = lock_entries()
    assert entries
    for name, _, _, hashes in entries:
        assert hashes and all(h.startswith("sha256:") for h in hashes), name
    locked = {name: pinned for name, pinned, _, _ in entries}
    wanted = pins((k8s.REPO / "requirements.txt").read_text())
    stale = {name: (pinned, locked.get(name)) for name, pinned in wanted.items() if locked.get(name) != pinned}
    assert not stale, f"requirements.txt and requirements.lock disagree (run `make lock`): {stale}"
    # uv notes why each package is there: the ones "via -r requirements.txt" are exactly its list.
    top_level = set()
    for block in re.split(r"\n(?=[A-Za-z0-9])", (k8s.REPO / "requirements.lock").read_text()):
        if "-r requirements.txt" in block and REQUIREMENT.match(block):
            top_level.add(canonicalize_name(REQUIREMENT.match(block)[1]))
    assert top_level == set(wanted), f"requirements.lock is stale (run `make lock`): {top_level ^ set(wanted)}"


def test_the_dev_lock_pins_every_package_with_hashes_and_keeps_the_images_versions():
    entries = lock_entries("requirements-dev.lock")
    for name, _, _, hashes in entries:
        assert hashes and all(h.startswith("sha256:") for h in hashes), name
    locked = {name: pinned for name, pinned, _, _ in entries}
    wanted = pins((k8s.REPO / "requirements-dev.txt").read_text())
    stale = {name: (pinned, locked.get(name)) for name, pinned in wanted.items() if locked.get(name) != pinned}
    assert not stale, f"requirements-dev.txt and requirements-dev.lock disagree (run `make lock`): {stale}"
    runtime = {name: pinned for name, pinned, _, _ in lock_entries()}
    different = {name: (pinned, locked.get(name)) for name, pinned in runtime.items() if locked.get(name) != pinned}
    assert not different, f"dev and image versions differ (run `make lock`): {different}"


def test_dev_tools_stay_out_of_the_image():
    runtime = {name for name, _, _, _ in lock_entries()}
    dev_only = set(pins((k8s.REPO / "requirements-dev.txt").read_text())) - set(
        pins((k8s.REPO / "requirements.txt").read_text())
    )
    assert {"pytest", "pytest-django", "honcho", "ruff", "mypy", "pre-commit"} <= dev_only
    assert not (runtime & {"pytest", "pytest-django", "honcho", "ruff", "mypy", "pre-commit", "django-stubs"})


def test_the_dev_environment_installs_only_the_locks_with_require_hashes():
    """make's venv step (so make test and CI) resolves nothing: both lock files, hash-checked."""
    makefile = (k8s.REPO / "Makefile").read_text()
    installs = re.findall(r"\$\(BIN\)/pip install[^\n]*-r (\S+)", makefile.split("\nlock:")[0])
    assert sorted(installs) == ["requirements-dev.lock", "requirements.lock"], installs
    for line in re.findall(r"\$\(BIN\)/pip install[^\n]*-r \S+", makefile.split("\nlock:")[0]):
        assert "--require-hashes" in line, line


def test_the_image_installs_the_lock_with_require_hashes_only():
    builder = " ".join(stages()[0])
    assert "COPY requirements.lock" in builder
    installs = re.findall(r"pip install [^&]*", builder)
    assert installs and all("--require-hashes" in i and "requirements.lock" in i for i in installs), installs
    assert "requirements.txt" not in builder, "the image must not resolve anything itself"


def test_the_test_environment_runs_the_images_exact_versions():
    """make test installs the lock first, so the suite tests what the image ships."""
    different = {}
    for name, pinned, marker, _ in lock_entries():
        if marker and not Marker(marker).evaluate():
            continue
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = None
        if installed != pinned:
            different[name] = (pinned, installed)
    assert not different, f"installed versions differ from requirements.lock (rerun `make test`): {different}"


# --- No secret in the repository ----------------------------------------------------------------

SECRET_PATTERNS = {
    "private key": re.compile(r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY( BLOCK)?-----"),
    "AWS access key": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{50,})\b"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    "an API token of this product": re.compile(r"\bes_[A-Za-z0-9_-]{43}\b"),
    "a password in a URL": re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:([^@\s'\"/$%{}()<>]{8,})@"),
    "a literal secret": re.compile(
        r"(?i)\b[a-z_]*(?:secret|password|passwd|token|api_key)[a-z_]*\s*[:=]\s*['\"]([A-Za-z0-9+/=_-]{20,})['\"]"
    ),
}
# Throwaway values that only ever meet loopback test servers (each says so in its name), and
# readable phrases ("a-long-admin-password"): a generated secret is never a few hyphenated words.
ALLOWED_VALUES = re.compile(r"(?i)test|bench|example|not-a-secret|collectstatic|dummy|placeholder|^[a-z]+(-[a-z]+)+$")
SECRET_FILE_NAMES = re.compile(r"(^|/)(\.secret_key|\.limiter_token|[^/]*\.(pem|key|p12|pfx)|id_rsa[^/]*|[^/]*\.env)$")


def find_secrets(files: dict[str, str]) -> list[str]:
    """`path:line: kind` for every likely secret in the given {path: text}."""
    found = []
    for path, text in files.items():
        if SECRET_FILE_NAMES.search(path):
            found.append(f"{path}: a secret's file name")
        for number, line in enumerate(text.splitlines(), 1):
            for kind, pattern in SECRET_PATTERNS.items():
                for match in pattern.finditer(line):
                    value = match.group(match.lastindex or 0)
                    if not ALLOWED_VALUES.search(value) and not ALLOWED_VALUES.search(line):
                        found.append(f"{path}:{number}: {kind}")
    return found


def tracked_text_files() -> dict[str, str]:
    names = subprocess.run(
        ["git", "ls-files", "-z"], cwd=k8s.REPO, capture_output=True, check=True, timeout=60
    ).stdout.split(b"\0")
    files = {}
    for name in filter(None, names):
        path = k8s.REPO / name.decode()
        if not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" not in data[:8192]:
            files[name.decode()] = data.decode(errors="replace")
    return files


def test_no_tracked_file_holds_a_secret():
    files = tracked_text_files()
    assert len(files) > 100
    assert find_secrets(files) == []


# Planted secrets, each assembled at run time so that this file itself stays clean for the scan.
@pytest.mark.parametrize(
    "text",
    [
        "-----BEGIN RSA PRIVATE" + " KEY-----",
        "aws_key = 'AKIA" + "IOSFODNN7QWERTYQ'",
        "token: ghp_" + "a1B2" * 9,
        "Authorization: Bearer es_" + "Zx9_" * 10 + "abc",
        "DATABASE_URL=postgres://app:" + "s3cr3tPassw0rd@db:5432/app",
        'DJANGO_SECRET_KEY = "' + "k8Jd2LqP0zR7vX4nB1mC6tY9wE3sA5fG" + '"',
    ],
)
def test_the_secret_scan_finds_planted_secrets(text):
    found = find_secrets({"settings.py": f"x = 1\n{text}\n"})

    assert len(found) == 1 and found[0].startswith("settings.py:2: ")


def test_the_secret_scan_knows_secret_file_names_and_lets_test_values_pass():
    assert find_secrets({"deploy/secrets/app.env": ""}) == ["deploy/secrets/app.env: a secret's file name"]
    assert find_secrets({".limiter_token": ""}) == [".limiter_token: a secret's file name"]
    assert find_secrets({"t.py": 'LIMITER_TOKEN = "test-limiter-token-0123456789"'}) == []
    assert find_secrets({"t.py": "postgres://postgres@127.0.0.1:5432/db"}) == []


def _audit_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("audit_lock", k8s.REPO / "scripts" / "audit_lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_audit_fails_on_a_known_vulnerability_and_never_passes_an_unchecked_pin_silently():
    audit = _audit_module()
    vulnerable = audit.Outcome("pkg", "1.0", "1.0", [{"id": "PYSEC-1", "aliases": ["CVE-1"], "fixed_in": ["1.1"]}])
    older = audit.Outcome("lts", "4.2", "5.0", [{"id": "PYSEC-2"}])  # the newest release's list says nothing of 4.2
    clean = audit.Outcome("ok", "2.0", "2.0", [])
    findings, unchecked = audit.judge([vulnerable, older, clean], accepted=set())
    assert [(outcome.name, finding["id"]) for outcome, finding in findings] == [("pkg", "PYSEC-1")]
    assert [outcome.name for outcome in unchecked] == ["lts"]
    assert audit.judge([vulnerable], accepted={"CVE-1"}) == ([], [])  # accepted by any of its ids


def test_audit_of_the_lock_through_the_registry_finds_no_known_vulnerability():
    """make audit, as CI runs it: every pin at its newest release checked against PyPI's list for it."""
    result = subprocess.run(
        [sys.executable, "scripts/audit_lock.py", "requirements.lock"],
        cwd=k8s.REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    checked, total = map(int, re.search(r"(\d+) of (\d+) pinned packages checked", result.stdout).groups())
    assert total >= 50 and checked >= total - 5, result.stdout  # most pins are checkable; the rest are listed
