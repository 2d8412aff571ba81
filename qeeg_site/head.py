"""HEAD is answered wherever GET is, with GET's status and headers and no body (RFC 9110 §9.3.2).

django-ninja routes a GET operation for GET alone, and `require_GET` pages refuse HEAD, so a monitor's or a
link checker's HEAD met 405. This middleware lets the view see GET, then gives HEAD back to the outer
middleware (a 405 still says "HEAD is not allowed"), keeps the Content-Length GET would send and drops the
body; a download's file is never read. The live stream is not a Django view: its consumer answers HEAD
itself (runs/stream.py).

A HEAD hands over no content, so the audit trail writes no row saying some was (`audit.record` leaves out
every "viewed" and "downloaded" action of a request marked `head_only`); a refusal, a token's use and a
sign-out are written as for GET."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponseBase


class HeadAsGetMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if request.method != "HEAD":
            return self.get_response(request)
        request.method = "GET"
        request.head_only = True  # type: ignore[attr-defined]
        try:
            response = self.get_response(request)
        finally:
            request.method = "HEAD"
        if response.streaming:
            # Never read for a HEAD; a FileResponse's file is still closed with the response, as ever.
            response.streaming_content = iter(())
        else:
            if not response.has_header("Content-Length"):
                response["Content-Length"] = str(len(response.content))
            response.content = b""
        return response
