"""A URLconf for tests: the real web routes plus a parametrised and a slow route."""

import time

from django.http import HttpResponse, JsonResponse
from django.urls import include, path


def item(request, pk: int):
    return JsonResponse({"pk": pk})


def slow(request):
    time.sleep(0.05)
    return HttpResponse("slow")


def broken(request):
    raise RuntimeError("boom")


urlpatterns = [
    path("items/<int:pk>", item),
    path("slow", slow),
    path("broken", broken),
    path("", include("endpointstats.urls.web")),
]

handler404 = "endpointstats.errors.page_not_found"
handler500 = "endpointstats.errors.server_error"
