"""Prometheus request metrics, cheap in multiprocess mode: one counter and one histogram.

What an operator needs and no more (django-prometheus recorded ~15 series per request, at a
measured cost; see docs/PERFORMANCE.md): requests by endpoint, method and status class, and a
latency histogram by endpoint with few buckets. The labelled children are looked up once per
label set and kept, so a request costs two dictionary lookups and three shared-memory writes.
"""

from django.http import HttpRequest
from prometheus_client import Counter, Histogram

from tracker.middleware import endpoint_name

REQUESTS = Counter(
    "endpointstats_http_requests",
    "Responses by endpoint (the resolved route), method and status class (2xx, 3xx, 4xx, 5xx).",
    ["endpoint", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "endpointstats_http_request_duration_seconds",
    "Time from the first middleware to the response, by endpoint.",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_STATUS_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}
_counters: dict[tuple[str, str, str], Counter] = {}
_histograms: dict[str, Histogram] = {}


def observe_request(request: HttpRequest, status_code: int, seconds: float) -> None:
    endpoint = endpoint_name(request)
    method = request.method if request.method in METHODS else "other"
    status = _STATUS_CLASSES.get(status_code // 100, "other")
    key = (endpoint, method, status)
    counter = _counters.get(key)
    if counter is None:
        counter = _counters[key] = REQUESTS.labels(endpoint=endpoint, method=method, status=status)
    counter.inc()
    histogram = _histograms.get(endpoint)
    if histogram is None:
        histogram = _histograms[endpoint] = REQUEST_SECONDS.labels(endpoint=endpoint)
    histogram.observe(seconds)
