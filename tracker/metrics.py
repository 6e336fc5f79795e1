"""Prometheus metrics of the tracking pipeline (multiprocess-safe: counters and histograms)."""

from prometheus_client import Counter, Histogram

EVENTS_BUFFERED = Counter("endpointstats_events_buffered_total", "Events appended to the Redis buffer by the web role.")
EVENTS_STORED_DIRECTLY = Counter(
    "endpointstats_events_stored_directly_total",
    "Events written straight to the database because the buffer was unavailable.",
)
EVENTS_DROPPED = Counter(
    "endpointstats_events_dropped_total",
    "Events lost because neither the buffer nor the database accepted them.",
    ["reason"],
)
EVENTS_DRAINED = Counter("endpointstats_events_drained_total", "Events stored by the drain (new rows only).")
EVENTS_PARKED = Counter(
    "endpointstats_events_parked_total", "Undecodable buffered events moved to the dead-letter list."
)
DRAIN_BATCH_SECONDS = Histogram(
    "endpointstats_drain_batch_seconds",
    "Time to store one drained batch in the database.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DRAIN_LAG_SECONDS = Histogram(
    "endpointstats_drain_lag_seconds",
    "Age of the oldest event of each drained batch when it was stored.",
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 300, 900),
)
