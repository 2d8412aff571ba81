"""Django's database sessions (SESSION_ENGINE), their look-up compiled once (qeeg_site.prepared): every
signed-in page reads its session first, and building that query was 0.3 ms against 0.03 ms of SQL. The rest
(saving, expiry, cycling keys, the async reads) is Django's own."""

from __future__ import annotations

from django.contrib.sessions.backends import db
from django.contrib.sessions.models import Session
from django.utils import timezone

from qeeg_site.prepared import Prepared

# Django's `get(session_key=…, expire_date__gt=now)`: the key is the primary key, so one row or none.
_session_read = Prepared(
    lambda key, now: Session.objects.filter(session_key=key, expire_date__gt=now)[:1],
    Session._meta.get_field("session_key"),
    Session._meta.get_field("expire_date"),
)


class SessionStore(db.SessionStore):
    def _get_session_from_db(self):
        found = _session_read(self.session_key, timezone.now())
        if found:
            return found[0]
        self._session_key = None  # as Django's: no such session (or expired), a new key when saved
        return None
