"""The append-only audit trail: who did what to which record, when and from where. Everybody calls
`audit.record(...)`; nobody changes a row once written (the database refuses, see audit/triggers.py)."""

from __future__ import annotations

from typing import Any


def record(request_or_user: Any, action: str, obj: Any = None, **detail: Any) -> Any:
    from audit.services import record as _record

    return _record(request_or_user, action, obj, **detail)
