"""Text no database can store is refused as the request comes in, not by a 500 from deep inside.

A NUL character (`%00` in an address, `\\u0000` in JSON) cannot go into a PostgreSQL text value at all (the
driver raises), and SQLite's FTS5 reads a search phrase holding one as unterminated; half of a UTF-16
surrogate pair (`\\ud800` in JSON) cannot be written as UTF-8 anywhere (a file, either database). Django's
forms refuse a NUL in their fields already; an address's parameters (a search, a filter) and the JSON API's
bodies were read as they came. So: 422 with the reason, JSON under /api/, for either in the address's path
or parameters or anywhere in a JSON body's strings (keys included), and in a form post's fields: several
views read theirs without a Django form (a token's name, a write-up's text, a council change's reason), and
a NUL in a token's name was a 500 on PostgreSQL. A multipart post's files are not fields and are left alone
(a PDF is full of NUL bytes); Django's upload handlers are the settings', so reading the fields here first
changes nothing of how an upload is received."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse

from qeeg_site.errors import is_api

REFUSAL = (
    "The request holds a character no text may hold: a NUL (\\u0000, %00) or half of a surrogate pair "
    "(\\ud800-\\udfff alone). Remove it and send the request again."
)


def _unstorable(text: str) -> bool:
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _any_unstorable(value: Any) -> bool:
    """Whether a decoded JSON value holds such a string anywhere (walked without recursion: any depth)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _unstorable(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _json_body_unstorable(request: HttpRequest) -> bool:
    # Whatever its Content-Type says: django-ninja reads a body as JSON under any type but a form's
    # (text/plain, none at all, even x-www-form-urlencoded), so a `\u0000` sent as text/plain was a 500 on
    # PostgreSQL. A multipart body is not read here (an upload would be held in memory whole).
    if request.content_type.startswith("multipart/"):
        return False
    body = request.body
    # Raw NUL bytes or surrogates are not JSON at all (the parser refuses those); their escapes are.
    if b"\\u" not in body and b"\\U" not in body:
        return False
    try:
        return _any_unstorable(json.loads(body))
    except ValueError:
        return False  # not JSON: the API's own parser answers that


FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


def _form_unstorable(request: HttpRequest) -> bool:
    if request.method != "POST" or request.content_type not in FORMS:
        return False
    return any(_unstorable(k) or any(map(_unstorable, vs)) for k, vs in request.POST.lists())


class UnstorableTextMiddleware:
    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if (
            "\x00" in request.path_info
            or any(_unstorable(k) or any(map(_unstorable, vs)) for k, vs in request.GET.lists())
            or (
                is_api(request)
                and request.method in ("POST", "PUT", "PATCH")
                and _json_body_unstorable(request)
            )
            or _form_unstorable(request)
        ):
            if is_api(request):
                return JsonResponse({"detail": REFUSAL}, status=422)
            return HttpResponse(REFUSAL, status=422, content_type="text/plain; charset=utf-8")
        return self.get_response(request)
