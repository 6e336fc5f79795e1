"""Chart data for the console pages: what Chart.js draws and the text that describes it.

Each chart is drawn from a JSON description (labels, datasets) rendered with json_script; the
same numbers are in a table next to it and summed up in its aria-label, for screen readers and
for anyone who prefers to read.
"""

from __future__ import annotations

from collections.abc import Sequence

from console.queries import EndpointDetail, HourPoint, Overview

BLUE, RED, ORANGE, PURPLE, GREEN = "#417690", "#ba2121", "#e09a1a", "#7b4fa8", "#2e7d32"


def _labels(series: list[HourPoint]) -> list[str]:
    long = len(series) > 26
    return [point.hour.strftime("%d %b %H:00" if long else "%H:00") for point in series]


def _describe(what: str, values: Sequence[float], unit: str = "") -> str:
    if not values:
        return f"{what}: no data."
    peak = max(values)
    return f"{what}: {len(values)} hourly values, total {sum(values):,.0f}{unit}, peak {peak:,.1f}{unit}."


def _chart(
    series: list[HourPoint], chart_id: str, *, title: str, aria: str, kind: str, datasets: list[dict], unit: str
) -> dict:
    """One chart's description, labelled by the hours of `series`."""
    return {
        "id": chart_id,
        "title": title,
        "aria": aria,
        "type": kind,
        "labels": _labels(series),
        "datasets": datasets,
        "unit": unit,
    }


def _line(label: str, data: Sequence[float | None], color: str) -> dict:
    return {"label": label, "data": data, "borderColor": color, "backgroundColor": color}


def _hourly_bars(
    series: list[HourPoint], chart_id: str, *, title: str, what: str, label: str, values: list[int], color: str
) -> dict:
    """A bar per hour of one count (requests, refusals)."""
    return _chart(
        series,
        chart_id,
        title=title,
        aria=_describe(what, values),
        kind="bar",
        datasets=[{"label": label, "data": values, "backgroundColor": color}],
        unit="",
    )


def _traffic(series: list[HourPoint], chart_id: str) -> dict:
    values = [p.requests for p in series]
    return _hourly_bars(
        series,
        chart_id,
        title="Requests per hour",
        what="Requests per hour",
        label="requests",
        values=values,
        color=BLUE,
    )


def _errors(series: list[HourPoint], chart_id: str) -> dict:
    server = [round(p.server_error_pct, 2) for p in series]
    client = [round(p.client_error_pct, 2) for p in series]
    throttled = [round(p.throttled_pct, 2) for p in series]
    aria = (
        f"Error rate per hour: 5xx peaks at {max(server, default=0):.1f}%, 4xx at {max(client, default=0):.1f}%, "
        f"429 at {max(throttled, default=0):.1f}%."
    )
    datasets = [
        _line("5xx (server errors)", server, RED),
        _line("4xx (client errors)", client, ORANGE),
        _line("429 (rate limited)", throttled, PURPLE),
    ]
    return _chart(
        series,
        chart_id,
        title="Error rate per hour (% of requests)",
        aria=aria,
        kind="line",
        datasets=datasets,
        unit="%",
    )


def _refusals(series: list[HourPoint], chart_id: str) -> dict:
    values = [p.throttled for p in series]
    return _hourly_bars(
        series,
        chart_id,
        title="Rate-limit refusals (429) per hour",
        what="Rate-limit refusals per hour",
        label="refused (429)",
        values=values,
        color=PURPLE,
    )


def _latency(series: list[HourPoint], chart_id: str) -> dict:
    avg = [round(p.avg_ms, 1) if p.avg_ms is not None else None for p in series]
    p95 = [round(p.p95_ms, 1) if p.p95_ms is not None else None for p in series]
    known = [v for v in p95 if v is not None]
    return _chart(
        series,
        chart_id,
        title="Latency per hour (ms)",
        aria=f"Latency per hour: p95 peaks at {max(known, default=0):,.1f} ms.",
        kind="line",
        datasets=[_line("p95 (ms)", p95, RED), _line("average (ms)", avg, GREEN)],
        unit=" ms",
    )


def _for_page(chart: dict) -> dict:
    """Split a chart into what the script draws (spec) and what the page writes (title, label, table)."""
    unit = chart["unit"]
    digits = 0 if unit == "" else 1

    def text(value: float | None) -> str:
        return "-" if value is None else f"{value:,.{digits}f}{unit}"

    return {
        "id": chart["id"],
        "data_id": chart["id"] + "-data",
        "title": chart["title"],
        "aria": chart["aria"],
        "headers": [dataset["label"] for dataset in chart["datasets"]],
        "rows": [
            (label, [text(dataset["data"][i]) for dataset in chart["datasets"]])
            for i, label in enumerate(chart["labels"])
        ],
        "spec": {key: chart[key] for key in ("id", "type", "labels", "datasets", "unit")},
    }


def overview_charts(data: Overview) -> list[dict]:
    return [
        _for_page(_traffic(data.series, "chart-requests")),
        _for_page(_errors(data.series, "chart-errors")),
        _for_page(_refusals(data.series, "chart-refusals")),
    ]


def endpoint_charts(data: EndpointDetail) -> list[dict]:
    return [
        _for_page(_traffic(data.series, "chart-requests")),
        _for_page(_errors(data.series, "chart-errors")),
        _for_page(_latency(data.series, "chart-latency")),
    ]
