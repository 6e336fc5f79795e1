import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured

from ratelimit import rules
from ratelimit.rules import Rate, RulesError, RulesStore


def test_reference_format_and_explicit_rates_are_accepted_and_merged_with_the_reference_defaults():
    parsed = rules.parse_rules(
        {
            "/": 5,
            "/export": "1000/h",
            "/fast": "10/s",
            "/odd": "7/5m",
            "/search": {"rate": "100/m", "burst": "20/10s", "shadow": True},
        },
        source="test",
    )

    assert parsed.rule_for("/").rate == Rate(limit=5, window_seconds=60)
    assert parsed.rule_for("/export").rate == Rate(limit=1000, window_seconds=3600)
    assert parsed.rule_for("/fast").rate == Rate(limit=10, window_seconds=1)
    assert parsed.rule_for("/odd").rate == Rate(limit=7, window_seconds=300)
    search = parsed.rule_for("/search")
    assert (search.rate, search.burst, search.shadow) == (Rate(100, 60), Rate(20, 10), True)
    # Not configured: the reference defaults stay.
    assert parsed.rule_for("/stats").rate == Rate(60, 60)
    assert parsed.rule_for("/metrics").rate == Rate(200, 60)
    assert parsed.rule_for("/anything/else").rate == Rate(120, 60)


@pytest.mark.parametrize(
    ("document", "named", "problem"),
    [
        ({"/stats": "abc"}, '"/stats"', "a rate such as"),
        ({"/stats": 0}, '"/stats"', "between 1 and"),
        ({"/stats": True}, '"/stats"', "not true"),
        ({"/stats": "10/x"}, '"/stats"', "a rate such as"),
        ({"/stats": "10/40d"}, '"/stats"', "31 days"),
        ({"stats": 10}, '"stats"', 'starting with "/"'),
        ({"/s": {"rate": "10/m", "burst": "20/10s"}}, '"/s"', "must not allow more"),
        ({"/s": {"rate": "10/m", "burst": "5/m"}}, '"/s"', "must be shorter"),
        ({"/s": {"rate": "10/m", "burst": 5}}, '"/s"', "burst must be a rate"),
        ({"/s": {"rate": "10/m", "shadow": "yes"}}, '"/s"', "shadow must be true or false"),
        ({"/s": {"limit": 10}}, '"/s"', "unknown field(s) limit"),
        ({"/s": {"burst": "1/s"}}, '"/s"', 'needs "rate"'),
        ({"default": "none"}, '"default"', "a rate such as"),
    ],
)
def test_a_bad_entry_is_refused_with_a_message_naming_it(document, named, problem):
    with pytest.raises(RulesError) as caught:
        rules.parse_rules(document, source="RATE_LIMITS")

    assert str(caught.value).startswith(f"RATE_LIMITS: entry {named}")
    assert problem in str(caught.value)


def test_a_document_that_is_not_an_object_or_not_json_is_refused():
    with pytest.raises(RulesError, match="must be a JSON object"):
        rules.decode("[100]", source="RATE_LIMITS")
    with pytest.raises(RulesError, match="not valid JSON"):
        rules.decode('{"/": 100', source="RATE_LIMITS")


def test_bad_rules_in_settings_raise_improperly_configured_naming_the_entry(settings):
    settings.RATE_LIMITS = '{"/stats": "sixty"}'

    with pytest.raises(ImproperlyConfigured, match='entry "/stats"'):
        rules.current_rules()


@pytest.mark.parametrize("source", ["env", "file"])
def test_a_process_with_a_bad_entry_does_not_start(tmp_path, source):
    env = {name: value for name, value in os.environ.items() if not name.startswith("RATE_LIMITS")}
    if source == "env":
        env["RATE_LIMITS"] = '{"/": 100, "/stats": "60/minute"}'
    else:
        path = tmp_path / "rate-limits.json"
        path.write_text('{"/": 100, "/stats": "60/minute"}')
        env["RATE_LIMITS_FILE"] = str(path)

    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=Path(django_settings.BASE_DIR),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    assert "Invalid rate limits." in result.stderr
    assert 'entry "/stats" must be' in result.stderr


def _write(path: Path, document: dict) -> None:
    # Write then rename, as any careful writer (and kubelet) does: readers never see half a file.
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(document))
    os.replace(partial, path)


def test_a_changed_rules_file_is_picked_up_at_the_next_check_and_not_before(tmp_path):
    path = tmp_path / "rate-limits.json"
    _write(path, {"/": 100})
    store = RulesStore(path=str(path), raw="", reload_seconds=1.0)
    start = store._next_check - 1.0

    _write(path, {"/": 7})

    assert store.current(now=start + 0.5).rule_for("/").rate.limit == 100  # no stat() yet
    assert store.current(now=start + 1.0).rule_for("/").rate.limit == 7
    assert store.rules.source == f"RATE_LIMITS_FILE {path}"


def test_a_configmap_directory_update_by_symlink_swap_is_picked_up(tmp_path):
    # The layout kubelet keeps for a ConfigMap mounted as a directory:
    #   rate-limits.json -> ..data/rate-limits.json, ..data -> ..<timestamp>/
    first = tmp_path / "..2026_01_01_00_00_00.1"
    first.mkdir()
    (first / "rate-limits.json").write_text('{"/stats": 60}')
    (tmp_path / "..data").symlink_to(first.name)
    (tmp_path / "rate-limits.json").symlink_to("..data/rate-limits.json")
    store = RulesStore(path=str(tmp_path / "rate-limits.json"), raw="", reload_seconds=0)

    second = tmp_path / "..2026_01_01_00_01_00.2"
    second.mkdir()
    (second / "rate-limits.json").write_text('{"/stats": 61}')  # same size, same second possibly
    (tmp_path / "..data_tmp").symlink_to(second.name)
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")  # the atomic swap

    assert store.current().rule_for("/stats").rate.limit == 61


def test_a_bad_new_file_keeps_the_last_good_rules_and_says_why(tmp_path, caplog):
    path = tmp_path / "rate-limits.json"
    _write(path, {"/": 100})
    store = RulesStore(path=str(path), raw="", reload_seconds=0)

    _write(path, {"/": "lots"})
    with caplog.at_level(logging.ERROR, logger="ratelimit.rules"):
        assert store.current().rule_for("/").rate.limit == 100
        assert store.current().rule_for("/").rate.limit == 100  # unchanged file: not parsed again

    assert 'entry "/"' in store.last_error
    assert [r.getMessage() for r in caplog.records if "NOT reloaded" in r.getMessage()] == [
        f"Rate limits NOT reloaded, keeping the rules loaded at {store.rules.loaded_at}: {store.last_error}"
    ]

    _write(path, {"/": 9})  # fixed
    assert store.current().rule_for("/").rate.limit == 9
    assert store.last_error is None


def test_a_deleted_file_keeps_the_last_good_rules(tmp_path):
    path = tmp_path / "rate-limits.json"
    _write(path, {"/": 42})
    store = RulesStore(path=str(path), raw="", reload_seconds=0)

    path.unlink()

    assert store.current().rule_for("/").rate.limit == 42
    assert "cannot be read" in store.last_error


def test_the_file_wins_over_the_variable_and_unset_means_reference_defaults(tmp_path, settings):
    path = tmp_path / "rate-limits.json"
    _write(path, {"/": 3})
    settings.RATE_LIMITS = '{"/": 4}'
    settings.RATE_LIMITS_FILE = str(path)
    assert rules.current_rules().rule_for("/").rate.limit == 3

    settings.RATE_LIMITS_FILE = ""
    assert rules.current_rules().rule_for("/").rate.limit == 4

    settings.RATE_LIMITS = ""
    assert {name: str(rule.rate) for name, rule in rules.current_rules().rules.items()} == {
        "/": "100/m",
        "/stats": "60/m",
        "/metrics": "200/m",
        "default": "120/m",
    }
