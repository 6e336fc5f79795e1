"""Input of the console's operations (validated here, carried out by a worker)."""

from datetime import timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.utils import timezone

from analytics.periods import floor_time

HOUR = timedelta(hours=1)
MAX_AGGREGATE_HOURS = 24 * 31


class OperationForm(forms.Form):
    """A console operation's form: params() are the TaskRun's JSON-safe params once it is valid."""

    def params(self) -> dict[str, Any]:
        return {}


class AggregateHoursForm(OperationForm):
    start = forms.DateTimeField(label="First hour", help_text="e.g. 2026-03-01 10:00")
    end = forms.DateTimeField(label="Last hour", help_text="included, e.g. 2026-03-01 12:00")

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        start, end = data.get("start"), data.get("end")
        if start is None or end is None:
            return data
        start, end = floor_time(start, HOUR), floor_time(end, HOUR) + HOUR  # hours [start, end)
        if end <= start:
            raise forms.ValidationError("The last hour must not be before the first.")
        if end > floor_time(timezone.now(), HOUR) + HOUR:
            raise forms.ValidationError("The end cannot be in the future.")
        if (end - start) / HOUR > MAX_AGGREGATE_HOURS:
            raise forms.ValidationError(f"At most {MAX_AGGREGATE_HOURS} hours at a time.")
        oldest = timezone.now() - timedelta(days=settings.ANALYTICS_RETENTION_DAYS)
        if end <= oldest:
            raise forms.ValidationError(
                f"Raw events older than {settings.ANALYTICS_RETENTION_DAYS} days are pruned: nothing to aggregate."
            )
        data["start"], data["end"] = start, end
        return data

    def params(self) -> dict:
        return {"start": self.cleaned_data["start"].isoformat(), "end": self.cleaned_data["end"].isoformat()}


class ReplayForm(OperationForm):
    limit = forms.IntegerField(min_value=1, max_value=100_000, initial=10_000, help_text="Parked events to replay")

    def params(self) -> dict:
        return {"limit": self.cleaned_data["limit"]}


class EmptyForm(OperationForm):
    pass
