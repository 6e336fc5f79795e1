"""Thin views of the console pages (wrapped by the admin site: staff only, login required)."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import messages
from django.contrib.admin import AdminSite
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST
from redis.exceptions import RedisError

from console import charts, queries, services, tasks
from console.forms import AggregateHoursForm, EmptyForm, OperationForm, ReplayForm
from console.models import TaskRun

RUN_PERMISSION = "console.run_operations"
FORMS: dict[str, type[OperationForm]] = {
    TaskRun.Kind.AGGREGATE: AggregateHoursForm,
    TaskRun.Kind.BACKUP: EmptyForm,
    TaskRun.Kind.PRUNE: EmptyForm,
    TaskRun.Kind.DRAIN: EmptyForm,
    TaskRun.Kind.REPLAY: ReplayForm,
}


def _range(request: HttpRequest) -> str:
    value = request.GET.get("range", queries.DEFAULT_RANGE)
    return value if value in queries.RANGES else queries.DEFAULT_RANGE


def overview(site: AdminSite) -> Callable[[HttpRequest], TemplateResponse]:
    def view(request: HttpRequest) -> TemplateResponse:

        data = queries.overview(range_key=_range(request), now=timezone.now())
        context = {
            **site.each_context(request),
            "title": "Overview",
            "overview": data,
            "ranges": list(queries.RANGES),
            "charts": charts.overview_charts(data),
            "app_list": site.get_app_list(request),
            "can_run": request.user.has_perm(RUN_PERMISSION),
        }
        return TemplateResponse(request, "console/overview.html", context)

    return view


def endpoint_detail(site: AdminSite) -> Callable[[HttpRequest], HttpResponse]:
    def view(request: HttpRequest) -> HttpResponse:
        endpoint = request.GET.get("endpoint", "").strip()
        if not endpoint:
            return HttpResponseRedirect(reverse("admin:index"))
        data = queries.endpoint_detail(endpoint=endpoint, range_key=_range(request), now=timezone.now())
        context = {
            **site.each_context(request),
            "title": f"Endpoint {endpoint}",
            "detail": data,
            "ranges": list(queries.RANGES),
            "charts": charts.endpoint_charts(data),
        }
        return TemplateResponse(request, "console/endpoint.html", context)

    return view


def operations(
    site: AdminSite, forms: dict[str, OperationForm] | None = None, status: int = 200
) -> Callable[[HttpRequest], HttpResponse]:
    def view(request: HttpRequest) -> HttpResponse:
        try:
            letters, letters_error = queries.dead_letters(limit=50), ""
        except (RedisError, OSError) as error:
            letters, letters_error = [], f"Redis unreachable: {error}"
        runs = queries.recent_task_runs()
        bound = forms or {}
        context = {
            **site.each_context(request),
            "title": "Operations",
            "can_run": request.user.has_perm(RUN_PERMISSION),
            "forms": {kind: bound.get(kind) or form() for kind, form in FORMS.items()},
            "kinds": TaskRun.Kind,
            "runs": runs,
            "busy": any(run.status in {TaskRun.Status.QUEUED, TaskRun.Status.RUNNING} for run in runs),
            "schedule": queries.schedule(),
            "buffer": queries.buffer_state(),
            "dead_letters": letters,
            "dead_letters_error": letters_error,
        }
        return TemplateResponse(request, "console/operations.html", context, status=status)

    return view


def start_operation(site: AdminSite) -> Callable[..., HttpResponse]:
    @require_POST
    def view(request: HttpRequest, kind: str) -> HttpResponse:
        if not request.user.has_perm(RUN_PERMISSION):
            raise PermissionDenied("Only superusers or holders of console.run_operations may run operations.")
        if kind not in FORMS:
            return HttpResponse(f"Unknown operation {kind!r}.", status=404)
        form = FORMS[kind](request.POST)
        if not form.is_valid():
            return operations(site, forms={kind: form}, status=400)(request)
        run = services.request_task_run(kind=kind, params=form.params(), user=request.user)
        tasks.execute_task_run_task.delay_on_commit(run.pk)  # type: ignore[attr-defined]  # celery 5.4+, not in celery-types
        messages.success(request, f"{run.get_kind_display()} queued as run #{run.pk}; its outcome shows below.")
        return HttpResponseRedirect(reverse("admin:console_operations") + f"#run-{run.pk}")

    return view
