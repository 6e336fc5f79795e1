"""OPTIONS on the docs pages, and the schemas of both HTTP roles."""

import pytest
import yaml
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.mark.urls("endpointstats.urls.web")
@pytest.mark.parametrize("path", ["/api/docs/", "/api/redoc/", "/api/schema/"])
def test_options_on_the_docs_and_schema_is_not_a_500(path):
    answer = Client().options(path)

    assert answer.status_code == 200
    assert "GET" in answer["Allow"]


@pytest.mark.urls("endpointstats.urls.limiter")
def test_the_limiter_publishes_its_own_schema_with_the_token_on_check(settings):
    settings.ROLE = "limiter"
    schema = yaml.safe_load(Client().get("/api/schema/").content)

    assert {"/check", "/limits", "/health"} <= set(schema["paths"])
    assert "/collect" not in schema["paths"]
    assert schema["paths"]["/check"]["get"]["security"] == [{"LimiterToken": []}]
