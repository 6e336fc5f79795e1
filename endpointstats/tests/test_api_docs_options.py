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


@pytest.mark.urls("endpointstats.urls.web")
def test_the_web_schema_lists_every_status_each_operation_can_answer():
    paths = yaml.safe_load(Client().get("/api/schema/").content)["paths"]

    def statuses(path, method="get"):
        return set(paths[path][method]["responses"])

    assert statuses("/collect", "post") == {"201", "400", "401", "413", "415", "429", "503"}
    assert set(paths["/collect"]["post"]["requestBody"]["content"]) == {"application/json"}
    for path in ("/analytics/stats", "/analytics/timeseries", "/analytics/geo"):
        assert statuses(path) == {"200", "400", "429", "503"}, path
    assert statuses("/stats") == {"200", "429", "503"}
    assert statuses("/health/live") == {"200"}


@pytest.mark.urls("endpointstats.urls.limiter")
def test_the_limiter_schema_lists_every_status_of_check(settings):
    settings.ROLE = "limiter"
    paths = yaml.safe_load(Client().get("/api/schema/").content)["paths"]

    assert set(paths["/check"]["get"]["responses"]) == {"200", "400", "401", "429", "503"}
