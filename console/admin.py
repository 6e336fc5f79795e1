from django.contrib import admin

from console.models import TaskRun
from tracker.admin_common import ReadOnlyAdminMixin


@admin.register(TaskRun)
class TaskRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The log of operations run from the console (they are started on the Operations page)."""

    list_display = ["id", "kind", "status", "created_at", "requested_by", "finished_at", "rows", "detail"]
    list_filter = ["kind", "status"]
    ordering = ["-created_at"]
    list_select_related = ["requested_by"]
