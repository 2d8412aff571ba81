"""htmx requests as the views see them: `request.htmx` (django-htmx) is true when a request wants a fragment.

A history restore (the back button after htmx pushed a URL, when htmx has no copy of that page) swaps the
answer into the whole body, so it must get the whole page: it sends `HX-History-Restore-Request`, and here
that makes it a page request whatever else it sends. A response whose view asked `request.htmx` says so
with `Vary: HX-Request, HX-History-Restore-Request`, so no cache hands out a fragment for a page.
"""

from __future__ import annotations

from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.utils.cache import patch_vary_headers
from django_htmx import middleware

VARY = ("HX-Request", "HX-History-Restore-Request")


class FragmentRequest(middleware.HtmxDetails):
    asked = False

    def __bool__(self) -> bool:
        self.asked = True
        return super().__bool__() and not self.history_restore_request


class HtmxMiddleware(middleware.HtmxMiddleware):
    def __call__(self, request: HttpRequest):
        if self.async_mode:
            return self.__acall__(request)
        request.htmx = FragmentRequest(request)
        return _vary(request, self.get_response(request))

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        request.htmx = FragmentRequest(request)
        return _vary(request, await self.get_response(request))


def _vary(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    if request.htmx.asked:
        patch_vary_headers(response, VARY)
    return response
