"""`{{ error|explain_error }}`: a stored model error as the clinician's sentence (council/explain.py)."""

from __future__ import annotations

from django import template

from council.explain import explain

register = template.Library()


@register.filter
def explain_error(raw: str) -> str:
    return explain(raw or "")
