"""Known vulnerabilities in the lock files, from the package registry these machines reach.

pip-audit asks PyPI's per-release JSON (/pypi/<name>/<version>/json) or OSV; neither answers here
(README, "Supply chain"). The registry does serve each project's newest-release JSON, and PyPI puts
in it the known vulnerabilities (from OSV) *of that release*. So: for every package the lock pins
at its newest release, that list is authoritative and any entry not accepted in .pip-audit-ignore
fails the audit; a package pinned below its newest release (a long-term-support line, or one held
back by another package's bounds) cannot be checked here, and is listed as such, never passed
silently. `make audit-full` runs pip-audit where pypi.org answers in full.

    python scripts/audit_lock.py requirements.lock [more lock files]    exit 1 on a finding
"""

import argparse
import json
import re
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

INDEX = "https://pypi.org/pypi"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)", re.MULTILINE)
ATTEMPTS = 3


class Outcome(NamedTuple):
    name: str
    pinned: str
    newest: str
    vulnerabilities: list[dict]


def pins(lock_files: list[Path]) -> dict[str, str]:
    found: dict[str, str] = {}
    for lock in lock_files:
        for name, version in PIN.findall(lock.read_text()):
            found[name.lower().replace("_", "-")] = version
    return found


def newest_release(name: str, pinned: str) -> Outcome:
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with urllib.request.urlopen(f"{INDEX}/{name}/json", timeout=30) as answer:  # noqa: S310 - fixed https URL
                data = json.load(answer)
            return Outcome(name, pinned, data["info"]["version"], data.get("vulnerabilities") or [])
        except (urllib.error.URLError, TimeoutError, json.JSONDecodeError, KeyError):
            if attempt == ATTEMPTS:
                raise
            time.sleep(2 * attempt)
    raise AssertionError("unreachable")


def accepted_ids(ignore_file: Path) -> set[str]:
    if not ignore_file.exists():
        return set()
    lines = (line.split("#", 1)[0].split() for line in ignore_file.read_text().splitlines())
    return {words[0] for words in lines if words}


def judge(outcomes: list[Outcome], accepted: set[str]) -> tuple[list[tuple[Outcome, dict]], list[Outcome]]:
    """The known vulnerabilities not accepted, and the packages whose pinned release cannot be checked."""
    findings, unchecked = [], []
    for outcome in outcomes:
        if outcome.pinned != outcome.newest:
            unchecked.append(outcome)
            continue
        for vulnerability in outcome.vulnerabilities:
            ids = {vulnerability.get("id", "?"), *vulnerability.get("aliases", [])}
            if not ids & accepted:
                findings.append((outcome, vulnerability))
    return findings, unchecked


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("locks", nargs="+", type=Path)
    parser.add_argument("--ignore-file", type=Path, default=Path(".pip-audit-ignore"))
    args = parser.parse_args()
    wanted = pins(args.locks)
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            outcomes = list(pool.map(lambda item: newest_release(*item), sorted(wanted.items())))
    except (urllib.error.URLError, TimeoutError, json.JSONDecodeError, KeyError) as error:
        print(f"audit: the registry did not answer ({error}); nothing was audited", file=sys.stderr)
        return 2
    findings, unchecked = judge(outcomes, accepted_ids(args.ignore_file))
    checked = len(outcomes) - len(unchecked)
    print(f"audit: {checked} of {len(outcomes)} pinned packages checked against their release's known vulnerabilities")
    for outcome in unchecked:
        print(f"  not checkable here: {outcome.name}=={outcome.pinned} (newest {outcome.newest}; run make audit-full)")
    for outcome, vulnerability in findings:
        fixed = ", ".join(vulnerability.get("fixed_in") or []) or "no fix listed"
        print(f"  VULNERABLE {outcome.name}=={outcome.pinned}: {vulnerability.get('id')} (fixed in {fixed})")
        print(f"    {(vulnerability.get('summary') or vulnerability.get('details') or '')[:200]}")
    if findings:
        print(f"audit: {len(findings)} known vulnerabilities; upgrade, or accept one in {args.ignore_file} with why")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
