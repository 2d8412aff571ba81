"""The JSON API under /api/: one NinjaAPI, one router per app, errors as `{"detail": "<readable message>"}`."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as ModelValidationError
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, ValidationError

from patients.api import router as patients_router
from qeeg_site.auth import api_auth, docs_access
from qeeg_site.tokens_api import router as tokens_router
from qeeg_site.upstream_api import router as upstream_router
from runs.api import router as runs_router

api = NinjaAPI(
    title="qEEG Council API",
    version="1",
    description="Patients, reports, council runs and exports. Send `Authorization: Bearer <token>` "
    "(`manage.py createapitoken <username>`) or use a signed-in session.",
    auth=api_auth,
    docs_url="/docs",
    docs_decorator=docs_access,
    urls_namespace="api",
)
api.add_router("", upstream_router)
api.add_router("", patients_router)
api.add_router("", runs_router)
api.add_router("", tokens_router)


def _readable(errors: list[dict]) -> str:
    parts = []
    for error in errors:
        where = ".".join(
            str(p) for p in error.get("loc", ()) if p not in ("body", "payload", "query", "path")
        )
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid")))
    return "; ".join(parts) or "The request is not valid."


@api.exception_handler(ValidationError)
def on_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    return api.create_response(request, {"detail": _readable(exc.errors), "errors": exc.errors}, status=422)


@api.exception_handler(AuthenticationError)
def on_authentication_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    detail = getattr(request, "token_refusal", "") or "Sign in, or send Authorization: Bearer <token>."
    return api.create_response(request, {"detail": detail}, status=401)


@api.exception_handler(ModelValidationError)
def on_model_validation_error(request: HttpRequest, exc: ModelValidationError) -> HttpResponse:
    """A value the schema let through but the model refuses (a label of spaces only): 422, not 500."""
    if hasattr(exc, "error_dict"):
        detail = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())
    else:
        detail = " ".join(exc.messages)
    return api.create_response(request, {"detail": detail}, status=422)


@api.exception_handler(Http404)
def on_not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    """What is missing, in words: "No patient with id 7." (also for a patient out of the user's reach)."""
    return api.create_response(request, {"detail": str(exc) or "Not found."}, status=404)


@api.exception_handler(PermissionDenied)
def on_permission_denied(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
    """Within reach, but not in the user's role (patients.access, runs.access say which)."""
    return api.create_response(request, {"detail": str(exc) or "Your role does not allow this."}, status=403)
