from django.conf import settings
from django.db import models


class TaskRun(models.Model):
    """One operation started from the console (aggregate, back up, prune, replay, drain) and its outcome.

    Created "queued" by the web request, which only enqueues the Celery task; the worker moves it
    to "running" and then "succeeded" (with rows touched) or "failed" (with the error). Runs of
    the beat schedule are not recorded here: this is the operators' log.
    """

    class Kind(models.TextChoices):
        AGGREGATE = "aggregate", "Aggregate hours"
        BACKUP = "backup", "Back up now"
        PRUNE = "prune", "Prune old events now"
        REPLAY = "replay", "Replay dead letters"
        DRAIN = "drain", "Drain the buffer now"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    params = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    rows = models.BigIntegerField(null=True, blank=True, help_text="Rows (or events, or files) touched.")
    detail = models.TextField(blank=True, default="", help_text="What was done, or the error.")
    celery_task_id = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        ordering = ["-created_at"]
        permissions = [("run_operations", "Can run operations (aggregate, back up, prune, replay, drain)")]
        indexes = [models.Index(fields=["kind", "status", "-finished_at"], name="taskrun_kind_status")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk} ({self.status})"
