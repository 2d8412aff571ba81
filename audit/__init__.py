"""The append-only audit trail: who did what to which record, when and from where. Everybody calls
`audit.record(...)`; nobody changes a row once written (the database refuses, see audit/triggers.py)."""

from __future__ import annotations

from typing import Any


def record(request_or_user: Any, action: str, obj: Any = None, **detail: Any) -> Any:
    from audit.services import record as _record

    return _record(request_or_user, action, obj, **detail)


def origin_of(request: Any) -> Any:
    """Where `request` came from (client address by TRUSTED_PROXIES, User-Agent): for a job's rows."""
    from audit.services import origin_of as _origin_of

    return _origin_of(request)


def record_refusal(
    user: Any, status: int, object_type: str = "", object_id: Any = None, **kwargs: Any
) -> Any:
    from audit.services import record_refusal as _record_refusal

    return _record_refusal(user, status, object_type, object_id, **kwargs)
