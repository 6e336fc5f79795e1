"""The API docs (Swagger UI, ReDoc) come from the app's own static files: no CDN, they work offline."""

import re

import pytest
from django.contrib.staticfiles import finders
from django.test import Client


@pytest.mark.parametrize("path", ["/api/docs/", "/api/redoc/"])
def test_the_docs_pages_load_every_script_and_stylesheet_from_our_own_static_files(path):
    response = Client().get(path)

    assert response.status_code == 200
    html = response.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets, html
    external = [url for url in assets if re.match(r"(https?:)?//", url)]
    assert not external, f"{path} loads from elsewhere: {external}"
    scripts = [url for url in assets if url.endswith(".js")]
    assert scripts
    for url in assets:
        assert url.startswith("/static/"), url
        # The file behind each URL is one collectstatic copies into the image (and whitenoise serves).
        assert finders.find(url.removeprefix("/static/").split("?")[0]), url
    assert "../schema/" in html


def test_the_docs_scripts_are_pinned_by_the_sidecar_package_version():
    from importlib.metadata import version

    requirements = (finders.settings.BASE_DIR / "requirements.txt").read_text()
    assert f"drf-spectacular-sidecar=={version('drf-spectacular-sidecar')}" in requirements
