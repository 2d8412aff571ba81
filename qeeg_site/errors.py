"""Every error under /api/ is JSON (`{"detail": "<readable message>"}`), whoever produced it.

ninja answers its own errors in JSON, but some never reach it: an address no route matches (a negative id
fails the `int` converter), a method the route does not take, a CSRF refusal, an unhandled exception
(Django's 500 page). This middleware, outermost, rewrites any such non-JSON error under /api/ in place, so
its headers (Allow, security headers) stay.
"""

from __future__ import annotations

import json
from http import HTTPStatus

from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.utils.deprecation import MiddlewareMixin
from django.views.csrf import csrf_failure as django_csrf_failure

API_PREFIX = "/api/"


def is_api(request: HttpRequest) -> bool:
    return request.path_info.startswith(API_PREFIX)


def _detail(request: HttpRequest, response: HttpResponseBase) -> str:
    status = response.status_code
    if status == 404:
        return f"There is nothing at {request.path}."
    if status == 405:
        allowed = response.get("Allow", "")
        return f"{request.method} is not allowed at {request.path}" + (
            f"; use {allowed}." if allowed else "."
        )
    if status == 500:
        return "Internal server error; it has been logged."
    if status == 400:
        return "The request is not valid (bad host, headers or body)."
    try:
        return HTTPStatus(status).phrase + "."
    except ValueError:
        return f"Error {status}."


class ApiJsonErrorsMiddleware(MiddlewareMixin):
    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        if (
            response.status_code < 400
            or not is_api(request)
            or response.streaming
            or response.get("Content-Type", "").startswith("application/json")
        ):
            return response
        response.content = json.dumps({"detail": _detail(request, response)}).encode()
        response["Content-Type"] = "application/json"
        if response.has_header("Content-Length"):  # set for the page replaced (CommonMiddleware)
            response["Content-Length"] = str(len(response.content))
        return response


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: JSON with the reason for the API, Django's own page for everything else."""
    if is_api(request):
        return JsonResponse(
            {
                "detail": f"CSRF check failed ({reason}). A signed-in browser must send the X-CSRFToken "
                "header; other programs use Authorization: Bearer <token>."
            },
            status=403,
        )
    return django_csrf_failure(request, reason=reason)
