"""The API's one pagination (NINJA_PAGINATION_CLASS): numbered pages; a page past the last one (or a page_size
past the most a page holds) is a 422 with a message instead of a query (an OFFSET past 2^63 is a 500 on SQLite).

A queryset may carry `narrowed`: the same rows in the same order, read a cheaper way for a few of them (a
patient search through its trigram index, patients.selectors.patient_search). The count is taken from it;
the page too when the rows are few (sorting a few is quick, where walking the label index to the end to find
them is not); when they are many the page is read from the queryset itself, in label order, which finds a
page of a common word at once. It may also carry `counted`: rows of another table, exactly as many, that
count quicker (a clinician's patients counted from their assignments, patients.selectors.patient_search)."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from ninja.errors import HttpError
from ninja.pagination import PageNumberPagination

# At most this many rows found: the page is read from `narrowed` (they are sorted, not found in label order).
# Reading them costs ~3.5 µs a match (1,000: 3 ms); walking the label index to the end (the matches all at the
# end of it) ~0.45 µs a patient (10,000: 4.5 ms), and spread matches are met at once (826: 0.4 ms against 3.1
# sorted). At 500 the worst of either stays the walk's, and a common word's page is the walk's.
NARROWED_MAX = 500


class BoundedPageNumberPagination(PageNumberPagination):
    def _get_page_size(self, requested_page_size: int | None) -> int:
        # Out of range is a 422, above as below: a smaller page than asked for would read as all there is.
        if requested_page_size is not None and requested_page_size > self.max_page_size:
            raise HttpError(
                422,
                f"page_size {requested_page_size} is more than a page holds (at most {self.max_page_size}).",
            )
        return super()._get_page_size(requested_page_size)

    def _check(self, page: int, page_size: int, count: int) -> None:
        last = max(1, math.ceil(count / page_size))
        if page > last:
            raise HttpError(
                422, f"page {page} is past the last page ({last}: {count} item(s), {page_size} a page)."
            )

    def paginate_queryset(
        self, queryset: QuerySet, pagination: PageNumberPagination.Input, request: HttpRequest, **params: Any
    ) -> Any:
        page_size = self._get_page_size(pagination.page_size)
        narrowed = getattr(queryset, "narrowed", None)
        counted = getattr(queryset, "counted", None)
        count = self._items_count(
            counted if counted is not None else narrowed if narrowed is not None else queryset
        )
        self._check(pagination.page, page_size, count)
        offset = (pagination.page - 1) * page_size
        if narrowed is not None and count <= NARROWED_MAX:
            queryset = narrowed
        return {self.items_attribute: queryset[offset : offset + page_size], "count": count}

    async def apaginate_queryset(
        self, queryset: QuerySet, pagination: PageNumberPagination.Input, request: HttpRequest, **params: Any
    ) -> Any:
        page_size = self._get_page_size(pagination.page_size)
        count = await self._aitems_count(queryset)
        self._check(pagination.page, page_size, count)
        offset = (pagination.page - 1) * page_size
        if isinstance(queryset, QuerySet):
            items = [obj async for obj in queryset[offset : offset + page_size]]
        else:
            items = queryset[offset : offset + page_size]
        return {self.items_attribute: items, "count": count}


def answered_as_built(view: Callable[..., Any]) -> Callable[..., Any]:
    """Over `@paginate`: the page answered as built, not validated through the response schema. The view's
    rows must be what the schema makes of them already (`.values()` of its fields, in its order: a column's
    value is its field's); the page is written by the API's own renderer, so the bytes are ninja's (keys in
    the schema's order, times as Django's encoder writes them; tests/test_patient_list_json.py compares).
    Ninja's validator read every field of every row through its ORM getter in Python: 50 patients ~1.5 ms.
    The operation keeps `@paginate`'s parameters and response schema (the OpenAPI document is the same)."""

    @wraps(view)  # with the view's ninja attributes: its pagination's parameters and response schema
    def answered(request: HttpRequest, **kwargs: Any) -> HttpResponse:
        page = view(request, **kwargs)
        page = {"items": page["items"], "count": page["count"]}  # in the Output schema's order
        api = _api()
        return HttpResponse(
            api.renderer.render(request, page, response_status=200), content_type=api.get_content_type()
        )

    return answered


def _api():
    from qeeg_site.api import api  # it imports the routers, which import this module

    return api
