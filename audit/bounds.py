"""How many rows one caller can make the trail write, bounded. A signed-in user or a token asking for
thousands of records out of reach would otherwise write thousands of `access.refused` rows (about 100 a
second from one client), and the trail is append-only: what a flood wrote stays, on the disk, for good.

The same for anyone failing to sign in from one address: each locked-out attempt wrote two rows (failed,
locked out), and that needs no account at all.

So in each window of `AUDIT_REPEAT_WINDOW_MINUTES` a caller's (a user's; for sign-ins an address's) first `AUDIT_REPEATS_WRITTEN` rows of one action
are written one by one, as before; the rest are counted (`RepeatTally`, one row per caller and window) and the
count is written to the trail as one row of the same action: `repeats=N` not written one by one, the window's
start and its length. A refusal of an existing patient's record is counted on its own for that patient (the
count row names the patient, so the trail read for that patient shows it, and burning the bound on made-up ids
first cannot hide which patients were tried), for the first AUDIT_REPEATS_WRITTEN patients of the window; so a
caller writes at most twice the bound and one row in a window, plus its counts. Nothing is dropped without
being counted: the count is written when the caller is
refused again after the window (any later window), and whenever an auditor reads the trail (the page or the
CSV), so what an auditor reads always holds every refusal, one by one or in a count. Counting the rows already
written reads the trail (one query on the refusal path only); concurrent refusals may write a few rows past
the bound, never fewer than it.

Reads are bounded by the same tally, per what was read (`first_read`): a "viewed" or "downloaded" row of a
request (audit.services.HANDED_OVER) is written for the first time in a window that one user reads one record
(its kind, id, patient and detail: a report's page, a run's stage) from one address; each later read of it in
the window is counted in that read's tally (made, with count 0, by the first) and written as one count row of
the same action, record and detail. A different record, detail, address or user is its own row. One upsert
on the tally's unique key per read, nothing read from the trail; the past windows' counts are written by the
next window's first reads, COUNTS_PER_READ at each, until none is left (then not looked for again in that
window by this process)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from audit.models import AuditEvent, RepeatTally


def _window_start(now: datetime) -> datetime:
    seconds = settings.AUDIT_REPEAT_WINDOW_MINUTES * 60
    return datetime.fromtimestamp(int(now.timestamp()) // seconds * seconds, tz=UTC)


def admit(
    action: str, user: Any, ip: str = "", user_agent: str = "", *, patient_id: int | None = None
) -> bool:
    """True: write this row of `action` by `user` (signed in), or with no user from address `ip` (a failed
    sign-in). False: the caller has had its rows of the window; this one is counted instead, to be written
    as part of a count (the patient's own, if it names one and the window's patients counted one by one are
    not yet the bound)."""
    start = _window_start(timezone.now())
    if user is not None:
        who, mine = f"user:{user.pk}", Q(user_id=user.pk)
    else:
        who, mine = f"ip:{ip}", Q(user__isnull=True, ip=ip or None)
    written = AuditEvent.objects.filter(mine, action=action, at__gte=start).count()
    if written < settings.AUDIT_REPEATS_WRITTEN:
        return True
    with transaction.atomic():
        counted = patient_id is not None and _count(
            action, who, user, start, ip, user_agent, patient_id=patient_id, only_if_there=True
        )
        if not counted:
            patients = RepeatTally.objects.filter(
                action=action, who__startswith=f"{who}:patient:", window=start
            )
            if patient_id is None or patients.count() >= settings.AUDIT_REPEATS_WRITTEN:
                patient_id = None
            _count(action, who, user, start, ip, user_agent, patient_id=patient_id)
    write_counts(before=start)
    return False


def _count(
    action: str,
    who: str,
    user: Any,
    start: datetime,
    ip: str,
    user_agent: str,
    *,
    patient_id: int | None,
    only_if_there: bool = False,
) -> bool:
    """One more in the tally of the caller `who`'s `action` in the window (of `patient_id`, or of no
    patient): made if it is not there, unless `only_if_there`. False: it was not there and was not made."""
    if patient_id is not None:
        who = f"{who}:patient:{patient_id}"
    key = {"action": action, "who": who[:80], "window": start}
    if RepeatTally.objects.filter(**key).update(count=F("count") + 1):
        return True
    if only_if_there:
        return False
    try:
        with transaction.atomic():
            RepeatTally.objects.create(
                **key,
                count=1,
                user_id=getattr(user, "pk", None),
                username=user.get_username() if user is not None else "",
                patient_id=patient_id,
                ip=ip or None,
                user_agent=user_agent[:300],
            )
    except IntegrityError:  # another request made it first
        RepeatTally.objects.filter(**key).update(count=F("count") + 1)
    return True


def first_read(
    action: str,
    user: Any,
    ip: str,
    user_agent: str,
    *,
    object_type: str,
    object_id: str,
    patient_id: int | None,
    detail: dict[str, Any],
) -> bool:
    """True: the first time in this window that `user` reads this (`action` of `object_type` `object_id`,
    of `patient_id`, with `detail`) from `ip`: write its row. False: it is counted instead, in that read's
    tally, to be written as part of a count."""
    start = _window_start(timezone.now())
    what = json.dumps([object_type, object_id, patient_id, ip, detail], sort_keys=True, separators=(",", ":"))
    who = f"user:{user.pk}:read:{hashlib.sha256(what.encode()).hexdigest()[:40]}"
    values = {
        "action": action,
        "who": who,
        "window": start,
        "count": 0,
        "written": 0,
        "user_id": user.pk,
        "username": user.get_username(),
        "patient_id": patient_id,
        "ip": ip or None,
        "user_agent": user_agent[:300],
        "object_type": object_type,
        "object_id": object_id,
        "detail": detail,
    }
    with connection.cursor() as cursor:
        cursor.execute(_upsert_sql(connection.vendor), _prepared(values))
        (count,) = cursor.fetchone()
    if count == 0:
        _write_past_counts(start)
    return count == 0


_KEY = ("action", "who", "window")


_COLUMNS = (
    *_KEY,
    "count",
    "written",
    "user_id",
    "username",
    "patient_id",
    "ip",
    "user_agent",
    "object_type",
    "object_id",
    "detail",
)


def _prepared(values: dict[str, Any]) -> list[Any]:
    fields = {field.name: field for field in RepeatTally._meta.concrete_fields}
    return [fields[name].get_db_prep_save(values[name], connection) for name in _COLUMNS]


_UPSERTS: dict[str, str] = {}


def _upsert_sql(vendor: str) -> str:
    """A new tally with count 0, or one more in the one there: its count after. Django's `bulk_create`
    upsert can only set a column to the new row's value, not add to it; SQLite (3.24+) and PostgreSQL spell
    this the same."""
    if vendor not in _UPSERTS:
        quote = connection.ops.quote_name
        table = quote(RepeatTally._meta.db_table)
        columns = [quote(RepeatTally._meta.get_field(name).column) for name in _COLUMNS]
        count = quote("count")
        _UPSERTS[vendor] = (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))}) "
            f"ON CONFLICT ({', '.join(quote(name) for name in _KEY)}) "
            f"DO UPDATE SET {count} = {table}.{count} + 1 RETURNING {count}"
        )
    return _UPSERTS[vendor]


# The window before which this process has written every count (at the window's first reads).
_counted_before: datetime | None = None
# Counts written by one first read: a window's first reads share the past window's counts, so no one request
# writes them all (a clinic's repeated reads of a window may be thousands of tallies).
COUNTS_PER_READ = 10


def _write_past_counts(start: datetime) -> None:
    global _counted_before
    if _counted_before != start and write_counts(before=start, limit=COUNTS_PER_READ) < COUNTS_PER_READ:
        _counted_before = start


def write_counts(before: datetime | None = None, limit: int | None = None) -> int:
    """Write each tally's count not yet in the trail as one row (of windows before `before`, or all, the
    current one included; the first `limit` of them, oldest first); tallies of past windows wholly written
    are then dropped. Returns rows written (fewer than `limit`: none was left but what another process was
    writing at once)."""
    from audit.services import record

    pending = RepeatTally.objects.filter(count__gt=F("written"))
    if before is not None:
        pending = pending.filter(window__lt=before)
    pending = pending.order_by("window", "pk")
    User = get_user_model()
    rows = 0
    for tally in pending[:limit] if limit is not None else pending:
        with transaction.atomic():
            # Compare and set: of two readers at once, one writes the count.
            if not RepeatTally.objects.filter(pk=tally.pk, written=tally.written).update(written=tally.count):
                continue
            user = User(pk=tally.user_id, username=tally.username) if tally.user_id else None
            record(
                user,
                tally.action,
                origin=(tally.ip or "", tally.user_agent),
                object_type=tally.object_type,
                object_id=tally.object_id or None,
                patient_id=tally.patient_id,
                **tally.detail,  # a read's: which page, stage or file was read
                **({} if user is not None else {"username": tally.username}),  # no user: the name kept
                repeats=tally.count - tally.written,
                window_start=tally.window.isoformat(),
                window_minutes=settings.AUDIT_REPEAT_WINDOW_MINUTES,
            )
            rows += 1
    current = _window_start(timezone.now())
    RepeatTally.objects.filter(window__lt=current, count=F("written")).delete()
    return rows
