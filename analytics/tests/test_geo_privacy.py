from datetime import timedelta

import pytest
from django.utils import timezone

from analytics import queries
from analytics.services import retention
from tracker.models import AccessEvent, EndpointStat

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("mode", ["truncate", "hash"])
def test_the_country_is_derived_before_the_address_is_protected(store, event, settings, mode):
    settings.ANALYTICS_CLIENT_IP_PRIVACY = mode
    now = timezone.now()
    store(
        event(endpoint="/p", occurred_at=now, client_ip="81.2.69.160"),
        event(endpoint="/p", occurred_at=now, client_ip="8.8.8.8"),
    )

    stored = dict(AccessEvent.objects.values_list("country", "client_ip"))
    assert set(stored) == {"GB", "US"}
    assert "81.2.69.160" not in stored.values() and "8.8.8.8" not in stored.values()
    assert EndpointStat.objects.get(endpoint="/p").last_client_ip in stored.values()
    [row] = queries.endpoint_stats(period="1h", now=now + timedelta(seconds=1))
    assert row.unique_clients == 2  # still two distinct clients


def test_truncation_merges_clients_of_one_24_as_documented(store, event, settings):
    settings.ANALYTICS_CLIENT_IP_PRIVACY = "truncate"
    now = timezone.now()
    store(event(occurred_at=now, client_ip="81.2.69.160"), event(occurred_at=now, client_ip="81.2.69.161"))

    [row] = queries.endpoint_stats(period="1h", now=now + timedelta(seconds=1))
    assert row.unique_clients == 1
    retention.prune_events(now=now)  # nothing old: a no-op
    assert AccessEvent.objects.count() == 2
