"""Writing the audit trail: `record` is the one way in. Reading it: `events` filters for the page and CSV."""

from __future__ import annotations

import logging
from datetime import date, datetime, time
from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from audit.actions import ACTIONS
from audit.models import AuditEvent

log = logging.getLogger(__name__)

Scalar = str | int | float | bool | None


def _patient_id(obj: Any) -> int | None:
    """The patient a record belongs to, by its own fields (audit knows no models of the other apps)."""
    if obj is None:
        return None
    if obj._meta.label_lower == "patients.patient":
        return obj.pk
    if (patient_id := getattr(obj, "patient_id", None)) is not None:
        return patient_id
    run = getattr(obj, "run", None)  # an artifact: its run's patient
    return getattr(run, "patient_id", None)


def _clean(detail: dict[str, Any]) -> dict[str, Any]:
    # Ids, numbers, short codes; anything else is a bug in the caller (and might carry an identifier).
    for key, value in detail.items():
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, Scalar) for v in values) or any(
            isinstance(v, str) and len(v) > 200 for v in values
        ):
            raise ValueError(f"audit detail {key!r} must be ids, numbers or short codes")
    return detail


def record(
    request_or_user: Any, action: str, obj: Any = None, *, patient_id: int | None = None, **detail: Any
) -> AuditEvent:
    """Append one event: `request_or_user` is the request (who, and from where) or a user (a command);
    `obj` the record acted on (its patient is found from it); `detail` ids and counts only."""
    if action not in ACTIONS:
        raise ValueError(f"Unknown audit action {action!r}; add it to audit/actions.py.")
    request = request_or_user if isinstance(request_or_user, HttpRequest) else None
    user = getattr(request, "user", None) if request is not None else request_or_user
    if user is not None and not getattr(user, "is_authenticated", False):
        user = None
    ip = user_agent = ""
    if request is not None:
        ip = request.META.get("REMOTE_ADDR", "")
        user_agent = request.META.get("HTTP_USER_AGENT", "")[:300]
    return AuditEvent.objects.create(
        user=user,
        username=user.get_username() if user is not None else str(detail.pop("username", ""))[:150],
        action=action,
        object_type=obj._meta.model_name if obj is not None else "",
        object_id=str(obj.pk) if obj is not None else "",
        patient_id=patient_id if patient_id is not None else _patient_id(obj),
        ip=ip or None,
        user_agent=user_agent,
        detail=_clean(detail),
    )


def events(
    *,
    username: str = "",
    action: str = "",
    patient_id: int | None = None,
    since: date | None = None,
    until: date | None = None,
) -> QuerySet[AuditEvent]:
    """The trail, newest first, filtered; `since`/`until` are whole days in the site's time zone."""
    rows = AuditEvent.objects.all()
    if username:
        rows = rows.filter(username=username)
    if action:
        rows = rows.filter(action=action)
    if patient_id is not None:
        rows = rows.filter(patient_id=patient_id)
    zone = timezone.get_current_timezone()
    if since is not None:
        rows = rows.filter(at__gte=datetime.combine(since, time.min, tzinfo=zone))
    if until is not None:
        rows = rows.filter(at__lte=datetime.combine(until, time.max, tzinfo=zone))
    return rows.order_by("-at", "-pk")
