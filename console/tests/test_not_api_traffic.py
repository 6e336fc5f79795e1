"""The admin, the API docs and static files are not API traffic; the admin login has limits of its own."""

import importlib

import pytest
from django.test import override_settings
from django.urls import clear_url_caches, reverse

from console.tests.conftest import far_from_window_end
from tracker import buffer

pytestmark = pytest.mark.django_db


@pytest.fixture
def enforced(settings):
    settings.RATELIMIT_SHADOW = False
    settings.RATE_LIMITS = {"default": 1, "/": 1}
    settings.TRACKING_ENABLED = True


def test_admin_docs_schema_and_static_are_neither_tracked_nor_rate_limited(client, enforced, superuser):
    paths = ["/admin/", "/admin/login/", "/api/schema/", "/api/docs/"]

    responses = [client.get(path) for path in paths for _ in range(3)]
    static = [client.get("/static/console/charts.js") for _ in range(3)]  # 404 where collectstatic did not run
    client.force_login(superuser)
    admin_pages = [client.get(reverse("admin:tracker_accessevent_changelist")) for _ in range(3)]

    assert [r.status_code for r in responses] == [302] * 3 + [200] * 9
    assert all(r.status_code == 200 for r in admin_pages)
    assert len({r.status_code for r in static}) == 1 and static[0].status_code in {200, 404}
    assert not any(r.has_header("RateLimit") for r in responses + admin_pages + static)
    assert buffer.depth()["queued"] == 0
    assert [client.get("/").status_code for _ in range(2)] == [200, 429]  # the API itself still is both
    assert buffer.depth()["queued"] == 2


def test_which_paths_are_not_api_traffic_is_configurable(client, enforced, settings):
    settings.TRACKING_IGNORE_PATHS = ["/health"]
    settings.RATELIMIT_EXEMPT_PATHS = ["/health"]

    statuses = [client.get("/api/schema/").status_code for _ in range(2)]

    assert statuses == [200, 429]
    assert buffer.depth()["queued"] == 2


@pytest.fixture
def login_limits(settings):
    settings.ADMIN_LOGIN_RATE_PER_USERNAME = "3/m"
    settings.ADMIN_LOGIN_RATE_PER_CLIENT = "5/m"


def _login(client, username, password="wrong-password", address="203.0.113.10"):  # noqa: S107
    return client.post(reverse("admin:login"), {"username": username, "password": password}, REMOTE_ADDR=address)


def test_admin_login_is_limited_per_username_with_a_clear_message_and_a_429(client, django_user_model, login_limits):
    name = far_from_window_end(f"operator{n}" for n in range(1000))
    django_user_model.objects.create_superuser(name, f"{name}@example.com", "a-long-password-1")

    statuses = [_login(client, name, address=f"203.0.113.{n}").status_code for n in range(3)]
    refused = _login(client, name.upper(), password="a-long-password-1", address="203.0.113.99")

    assert statuses == [200, 200, 200]  # the login form again, with Django's wrong-password message
    assert refused.status_code == 429
    assert "Too many login attempts for this username" in refused.content.decode()
    assert "_auth_user_id" not in client.session  # even the right password is not checked
    assert _login(client, "someone-else", address="203.0.113.99").status_code == 200


def test_admin_login_is_limited_per_client_address(client, superuser, login_limits):
    address = far_from_window_end(f"198.18.{n // 250}.{n % 250 + 1}" for n in range(2000))

    statuses = [_login(client, f"user{n}", address=address).status_code for n in range(6)]

    assert statuses == [200] * 5 + [429]
    assert "Too many login attempts from your address" in _login(client, "root", address=address).content.decode()
    assert _login(client, "root", password="a-long-password-1", address="198.51.100.1").status_code == 302


def test_the_admin_path_is_configurable(client, superuser):
    from endpointstats.urls import web

    try:
        with override_settings(ADMIN_PATH="ops/", ADMIN_PATHS=["/ops/"]):
            importlib.reload(web)
            clear_url_caches()
            client.force_login(superuser)
            assert reverse("admin:index") == "/ops/"
            assert client.get("/ops/").status_code == 200
            assert client.get("/admin/").status_code == 404
    finally:
        importlib.reload(web)
        clear_url_caches()
    assert reverse("admin:index") == "/admin/"
