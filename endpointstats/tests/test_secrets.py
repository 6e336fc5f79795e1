"""Secrets from mounted files: `<NAME>_FILE` wins over `<NAME>` (env_secret in settings.py)."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from endpointstats.settings import env_secret
from tracker.tests.processes import manage


def test_a_secret_is_read_from_the_file_named_by_its_file_variable(tmp_path, monkeypatch):
    secret = tmp_path / "key"
    secret.write_text("from-the-file\n")  # Secrets mounted by Kubernetes keep what was put in, newline included
    monkeypatch.setenv("SOME_TOKEN", "from-the-variable")
    monkeypatch.setenv("SOME_TOKEN_FILE", str(secret))

    assert env_secret("SOME_TOKEN") == "from-the-file"


def test_without_a_file_variable_the_variable_or_the_default_applies(monkeypatch):
    monkeypatch.delenv("SOME_TOKEN_FILE", raising=False)
    monkeypatch.setenv("SOME_TOKEN", "from-the-variable")
    assert env_secret("SOME_TOKEN") == "from-the-variable"
    monkeypatch.delenv("SOME_TOKEN")
    assert env_secret("SOME_TOKEN", "default") == "default"
    with pytest.raises(ImproperlyConfigured, match="SOME_TOKEN"):
        env_secret("SOME_TOKEN")


@pytest.mark.parametrize("content", [None, "", "\n"], ids=["missing", "empty", "newline only"])
def test_a_missing_or_empty_secret_file_stops_start_up_naming_it(tmp_path, monkeypatch, content):
    path = tmp_path / "key"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv("SOME_TOKEN_FILE", str(path))
    with pytest.raises(ImproperlyConfigured, match=f"SOME_TOKEN_FILE={path}"):
        env_secret("SOME_TOKEN")


def test_the_product_starts_with_its_secret_key_and_database_url_in_files_only(tmp_path):
    (tmp_path / "secret-key").write_text("a-long-random-key-from-a-mounted-secret")
    (tmp_path / "database-url").write_text(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    env = {
        "DJANGO_SECRET_KEY": "",
        "DJANGO_SECRET_KEY_FILE": str(tmp_path / "secret-key"),
        "DATABASE_URL_FILE": str(tmp_path / "database-url"),
        "RUN_DIR": str(tmp_path),
    }
    migrated = manage("migrate", "--no-input", env=env)
    assert migrated.returncode == 0, migrated.stderr
    shown = manage("shell", "-c", "from django.conf import settings; print(settings.SECRET_KEY)", env=env)
    assert shown.stdout.strip().splitlines()[-1] == "a-long-random-key-from-a-mounted-secret"
    assert (tmp_path / "db.sqlite3").stat().st_size > 0
