"""The upstream's HTTP face: /api/health (public), /api/models, and the page banner fragment.

Thin: the checking is `council.health`. Async, so a slow upstream never holds up Django's one shared
thread for sync views under ASGI.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from ninja import Router, Schema, Status

from council.health import cached_upstream_health
from qeeg_site.auth import api_auth

router = Router(tags=["upstream"])


class HealthOut(Schema):
    """The public sees `ok` alone; a signed-in user or token client also gets the details."""

    ok: bool
    reachable: bool | None = None
    problem: str | None = None  # connection_refused, timeout, unauthorized, bad_response, no_models
    models_discovered: int | None = None
    hint: str | None = None


def _anyone(request: HttpRequest) -> str:
    return PUBLIC


PUBLIC = "public"


@router.get(
    "/health",
    # Tried in order: a token or a session gets details; anyone else still gets the bare verdict.
    auth=[*api_auth, _anyone],
    response={200: HealthOut, 503: HealthOut},
    exclude_unset=True,
    summary="Is CLIProxyAPI reachable and does it list models? (public: ok only; 503 when not)",
)
async def health(request: HttpRequest):
    # The public learns ok or not, nothing else: not where the upstream lives, not why it is down.
    result = await cached_upstream_health()
    status = 200 if result.ok else 503
    if request.auth == PUBLIC:
        return Status(status, {"ok": result.ok})
    body = {
        "ok": result.ok,
        "reachable": result.reachable,
        "problem": result.problem,
        "models_discovered": len(result.models),
        "hint": result.hint,
    }
    return Status(status, body)


class ConfiguredModelOut(Schema):
    id: str
    available: bool


class DiscoveredModelOut(Schema):
    id: str
    owned_by: str | None
    created: int | None


class UpstreamOut(Schema):
    ok: bool
    reachable: bool
    problem: str | None
    message: str
    hint: str


class ModelsOut(Schema):
    council: list[ConfiguredModelOut]
    consolidator: ConfiguredModelOut
    discovered: list[DiscoveredModelOut]
    upstream: UpstreamOut


@router.get(
    "/models", response=ModelsOut, summary="Configured council models, discovered models, availability"
)
async def models(request: HttpRequest):
    result = await cached_upstream_health()
    # Exact ids only: a configured id that is not discovered is unavailable, never swapped for a similar one.
    discovered = set(result.model_ids)
    return {
        "council": [{"id": m, "available": m in discovered} for m in settings.COUNCIL_MODELS],
        "consolidator": {
            "id": settings.COUNCIL_CONSOLIDATOR,
            "available": settings.COUNCIL_CONSOLIDATOR in discovered,
        },
        "discovered": [{"id": m.id, "owned_by": m.owned_by, "created": m.created} for m in result.models],
        "upstream": {
            "ok": result.ok,
            "reachable": result.reachable,
            "problem": result.problem,
            "message": result.message,
            "hint": result.hint,
        },
    }


@router.get("/upstream/banner", url_name="upstream_banner", include_in_schema=False)
async def upstream_banner(request: HttpRequest) -> HttpResponse:
    """The page banner as an HTML fragment, loaded by htmx so no page waits on the upstream."""
    result = await cached_upstream_health()
    html = render_to_string("qeeg_site/_upstream_banner.html", {"upstream": result, "upstream_lazy": False})
    return HttpResponse(html, content_type="text/html; charset=utf-8")
