"""checkov on both rendered overlays (offline): every check passes except the ones
deploy/kustomize/overlays/prod/README.md explains (a table the test reads)."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from deploy.tests import k8s

README = k8s.KUSTOMIZE / "overlays/prod/README.md"


def explained_skips() -> list[str]:
    """Check ids of the first table of the README: skipped for every object."""
    table = README.read_text().split("\n\n| check | object |")[0]
    return re.findall(r"^\| (CKV_K8S_\d+) \|", table, flags=re.MULTILINE)


@pytest.fixture(scope="module")
def checkov() -> str:
    path = os.environ.get("CHECKOV_BIN") or str(k8s.REPO / ".cache/checkov/bin/checkov")
    assert Path(path).is_file(), f"checkov is missing at {path}: `make test` installs it (requirements-checkov.txt)"
    return path


def test_both_overlays_pass_checkov_but_for_the_explained_skips(rendered, checkov, tmp_path):
    skips = explained_skips()
    assert skips == ["CKV_K8S_43", "CKV_K8S_15"]
    files = []
    for overlay in k8s.OVERLAYS:
        path = tmp_path / f"{overlay}.yaml"
        path.write_text(yaml.safe_dump_all(rendered[overlay], sort_keys=False))
        files += ["--file", str(path)]
    result = subprocess.run(
        [checkov, *files, "--framework", "kubernetes", "--skip-download",
         "--output", "json", "--skip-check", ",".join(skips)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "BC_API_KEY": ""},
    )  # fmt: skip
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [
        f"{check['check_id']} {check['resource']} ({check['file_path']}): {check['check_name']}"
        for report in reports
        for check in report["results"]["failed_checks"]
    ]
    assert not failed, "checkov failures:\n" + "\n".join(failed)
    passed = sum(report["summary"]["passed"] for report in reports)
    assert passed > 1000  # both overlays were really checked
    # Skipped by annotation on one object each (the --skip-check ids are not run at all).
    skipped = {
        (check["check_id"], check["resource"].split(".")[-1])
        for report in reports
        for check in report["results"]["skipped_checks"]
    }
    assert skipped == {
        ("CKV_K8S_38", "prometheus"),
        *((check, store) for check in ("CKV_K8S_35", "CKV_K8S_40") for store in ("postgres", "redis")),
    }


def test_every_skip_in_a_manifest_is_explained_in_the_readme():
    readme = README.read_text()
    for path in k8s.KUSTOMIZE.rglob("*.yaml"):
        for check in re.findall(r"checkov\.io/skip\d+: (CKV_K8S_\d+)=", path.read_text()):
            assert check in readme, f"{path}: {check} is skipped without an explanation in {README.name}"
