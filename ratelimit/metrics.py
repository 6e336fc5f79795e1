"""Prometheus metrics of rate limiting (names fixed in the team notes; multiprocess-safe counters)."""

from prometheus_client import Counter

DECISIONS = Counter(
    "endpointstats_ratelimit_decisions_total",
    "Rate-limit decisions by endpoint and outcome (allowed, limited, shadow: would have been limited, "
    "error: the counters were unreachable and the failure policy decided).",
    ["endpoint", "outcome"],
)
NEAR_LIMIT = Counter(
    "endpointstats_ratelimit_near_limit_total",
    "Clients that reached 80% of a limit, counted once per client and window.",
    ["endpoint"],
)
