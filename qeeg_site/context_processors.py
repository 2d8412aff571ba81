"""The upstream banner's context for every page, without ever waiting on the upstream.

A fresh cached health result (see council.health) is rendered inline; otherwise the banner is a
placeholder that htmx fills from /api/upstream/banner after the page has loaded.
"""

from __future__ import annotations

from django.http import HttpRequest

from council.health import peek_cached_health


def upstream_status(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    health = peek_cached_health()
    return {"upstream": health, "upstream_lazy": health is None}
