from __future__ import annotations

from django.http import HttpRequest


def upstream_status(request: HttpRequest) -> dict:
    return {}
