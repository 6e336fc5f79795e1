"""Schemathesis hooks (SCHEMATHESIS_HOOKS) for rules the OpenAPI schema states in words, because JSON
Schema cannot express them: which intervals go with which period (across two parameters), and
/collect's timestamp window (relative to the server's clock). Generated requests follow them, so
"every documented request is accepted" is checked against the documented rules."""

from datetime import UTC, datetime

import schemathesis
from django.utils.dateparse import parse_datetime

# Mirrors analytics.periods.allowed_intervals, as the schema's `interval` description says.
FINE_INTERVALS = {"5m", "15m"}
LONG_PERIODS = {"7d", "30d"}


# gunicorn answers 414 itself to a request line over 4094 bytes, before the app sees it; generated
# negative cases that repeat a query parameter are kept short enough to reach the app's own 400.
MAX_REPEATS = 5


@schemathesis.hook
def before_call(context, case, **kwargs):
    if isinstance(case.query, dict):
        for name, value in case.query.items():
            if isinstance(value, list) and len(value) > MAX_REPEATS:
                case.query[name] = value[:MAX_REPEATS]
    query = case.query if case.operation.path == "/analytics/timeseries" and isinstance(case.query, dict) else {}
    period, interval = str(query.get("period")), str(query.get("interval"))
    if period in LONG_PERIODS and interval in FINE_INTERVALS:
        query["interval"] = "1h"
    if case.operation.path == "/collect":
        items = case.body if isinstance(case.body, list) else [case.body]
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("timestamp"), str) and parse_datetime(item["timestamp"]):
                item["timestamp"] = datetime.now(UTC).isoformat()  # a valid time, moved into the window
