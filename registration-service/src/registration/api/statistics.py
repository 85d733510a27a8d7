"""Statistics routes: an application's, an endpoint's, and the service's (admin).

Served from the summary tables kept as attempts and messages are stored (docs/api.md,
*Statistics*), so they answer quickly however much was delivered.
"""

from __future__ import annotations

from flask import Response
from flask_openapi3 import APIBlueprint, Tag

from registration.api.auth import authorize_application, require_admin
from registration.api.endpoint_schemas import EndpointPath
from registration.api.problems import Problem
from registration.api.schemas import ApplicationPath
from registration.api.serialize import BEARER, one
from registration.api.statistics_schemas import StatisticsOut, StatisticsQuery
from registration.runtime import runtime
from registration.services import statistics

tag = Tag(name="statistics", description="Messages, attempts, success rate and latency over time")
bp = APIBlueprint(
    "statistics",
    __name__,
    url_prefix="/api/v1",
    abp_tags=[tag],
    abp_security=BEARER,
    abp_responses={401: Problem, 404: Problem, 422: Problem},
)


@bp.get("/applications/<app_id>/statistics", responses={200: StatisticsOut})
def application_statistics(path: ApplicationPath, query: StatisticsQuery) -> tuple[Response, int]:
    """An application's messages and attempts over the window, per bucket and event type."""
    app_id = authorize_application(path.app_id)
    result = statistics.statistics(
        runtime().sessions, window=query.window, bucket=query.bucket, application_id=app_id
    )
    return one(StatisticsOut, result)


@bp.get("/applications/<app_id>/endpoints/<endpoint_id>/statistics", responses={200: StatisticsOut})
def endpoint_statistics(path: EndpointPath, query: StatisticsQuery) -> tuple[Response, int]:
    """One endpoint's attempts over the window: success rate, latency, outcomes, retries."""
    app_id = authorize_application(path.app_id)
    result = statistics.statistics(
        runtime().sessions,
        window=query.window,
        bucket=query.bucket,
        application_id=app_id,
        endpoint_id=path.endpoint_id,
    )
    return one(StatisticsOut, result)


@bp.get("/statistics", responses={200: StatisticsOut, 403: Problem})
def service_statistics(query: StatisticsQuery) -> tuple[Response, int]:
    """(admin) The whole service's totals over the window."""
    require_admin()
    result = statistics.statistics(runtime().sessions, window=query.window, bucket=query.bucket)
    return one(StatisticsOut, result)
