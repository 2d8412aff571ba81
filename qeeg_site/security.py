"""Nothing this site answers is kept by a browser or proxy cache, except its static files: pages, API replies
and downloads all carry patient data, and a shared computer's cache must not hand them to the next person."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.utils.cache import add_never_cache_headers
from django.utils.deprecation import MiddlewareMixin


class NoStoreMiddleware(MiddlewareMixin):
    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        if not request.path_info.startswith("/" + settings.STATIC_URL.lstrip("/")):
            add_never_cache_headers(response)  # no-cache, no-store, must-revalidate, private
        return response
