"""The limiter role's API: thin views over ratelimit.services and ratelimit.queries."""

import socket

from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, PolymorphicProxySerializer, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ratelimit import queries, services
from ratelimit.api.auth import HasLimiterToken, LimiterTokenAuthentication
from ratelimit.api.serializers import (
    CheckAllowedOutput,
    CheckParams,
    CheckRefusedOutput,
    LimiterHealthOutput,
    LimitsOutput,
)
from ratelimit.services import Decision
from tracker.api.schema import ErrorOutput


class CheckView(APIView):
    """GET /check?endpoint=&client_ip= : count one request of that client to that endpoint and decide.

    200 {allowed: true, limit, current, remaining, reset_after} or 429 {allowed: false, limit,
    current, reset_after} with Retry-After. The counters are the web role's own, so only callers
    holding the limiter token may count (401 without it, 503 if the limiter has none configured).
    """

    authentication_classes = [LimiterTokenAuthentication]
    permission_classes = [HasLimiterToken]

    @extend_schema(
        parameters=[CheckParams],
        responses={
            200: CheckAllowedOutput,
            429: CheckRefusedOutput,
            503: OpenApiResponse(
                PolymorphicProxySerializer(
                    component_name="CheckUnavailableOutput",
                    serializers=[CheckRefusedOutput, ErrorOutput],
                    resource_type_field_name=None,
                ),
                description="Redis unreachable with RATELIMIT_FAIL_OPEN=false (a refusal, redis_status set), "
                "or no LIMITER_TOKEN configured on the limiter (an error).",
            ),
        },
    )
    def get(self, request: Request) -> Response:
        params = CheckParams(data=request.query_params)
        params.is_valid(raise_exception=True)
        decision = services.check_rate(**params.validated_data, bounded_endpoint=False)
        return check_response(decision)


def check_response(decision: Decision) -> Response:
    # The bodies are built as the Check*Output serializers document them; /check is the hot path
    # of the limiter role and instantiating an output serializer per call costs about as much as
    # a Redis round trip, so the dicts are rendered directly.
    usage = decision.binding
    if usage is None:  # the counters were unreachable: the failure policy decided
        limit = decision.rule.rate.limit
        if decision.allowed:
            body = {"allowed": True, "limit": limit, "current": 0, "remaining": limit, "redis_status": "unavailable"}
            return Response(body)
        body = {"allowed": False, "limit": limit, "current": 0, "reset_after": 1, "redis_status": "unavailable"}
        return Response(body, status=503, headers={"Retry-After": "1"})
    if decision.outcome == services.LIMITED:
        body = {"allowed": False, "limit": usage.limit, "current": usage.current, "reset_after": decision.retry_after}
        return Response(body, status=429, headers={"Retry-After": str(decision.retry_after)})
    body = {
        "allowed": True,
        "limit": usage.limit,
        "current": usage.current,
        "remaining": usage.remaining,
        "reset_after": usage.reset_after,
    }
    if decision.outcome == services.SHADOW:
        body["shadow"] = True
    return Response(body)


class LimitsView(APIView):
    """GET /limits : the rules in force in this process, where they came from, and the switches."""

    @extend_schema(responses=LimitsOutput)
    def get(self, request: Request) -> Response:
        return Response(LimitsOutput(queries.limits_in_force()).data)


class LimiterHealthView(APIView):
    """GET /health : 200 when Redis (the limiter's only dependency) answers, else 503.

    /health/ready (readiness=True) ignores a Redis outage: the limiter keeps answering by its
    failure policy, so taking every pod out of the Service would only turn answers into errors.
    """

    readiness = False

    @extend_schema(responses={200: LimiterHealthOutput, 503: LimiterHealthOutput})
    def get(self, request: Request) -> Response:
        redis = queries.redis_status()
        healthy = self.readiness or redis != "down"
        rules = queries.limits_in_force().rules
        body = {
            "status": "healthy" if healthy else "unhealthy",
            "redis": redis,
            "hostname": socket.gethostname(),
            "timestamp": timezone.now(),
            "rate_limits": {endpoint: str(rule.rate) for endpoint, rule in rules.rules.items()},
        }
        return Response(LimiterHealthOutput(body).data, status=200 if healthy else 503)
