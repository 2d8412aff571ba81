"""A trigram index of what the patient search reads (SQLite FTS5), so a search can count its matches, and read
a few of them, without looking at every patient.

The search itself (patients.selectors.patient_search) stays what it is: the folded label, the notes and the
reason for referral each contain the text (SQLite's LIKE). The index only narrows the rows that search looks
at: every row the LIKE finds is a row the index finds (a trigram phrase is a substring match; FTS5 folds case
for all letters, LIKE only for ASCII ones, so the index may find more, never fewer), and the LIKE is still
asked of each, so the rows and the count are exactly the LIKE's. Fewer than three characters, another
database, or an SQLite without FTS5's trigram tokenizer: no index, the search scans as before.

`patients_patient_search` is an external-content FTS5 table over patients_patient, kept by three triggers.
A later migration that rebuilds patients_patient (SQLite does that to alter a column) drops the triggers
with the old table: tests/test_patient_search_index.py fails until that migration installs them again
(`install`).
"""

from __future__ import annotations

import functools
import logging

from django.db import DatabaseError, connection
from django.db.models.expressions import RawSQL

log = logging.getLogger(__name__)

TABLE = "patients_patient_search"
COLUMNS = ("label_folded", "notes", "referral_reason")
TRIGGERS = (f"{TABLE}_insert", f"{TABLE}_delete", f"{TABLE}_update")

_NEW = ", ".join(f"new.{c}" for c in COLUMNS)
_OLD = ", ".join(f"old.{c}" for c in COLUMNS)
_COLS = ", ".join(COLUMNS)
CREATE = [
    f"CREATE VIRTUAL TABLE {TABLE} USING fts5({_COLS}, content='patients_patient', content_rowid='id', "
    "tokenize='trigram')",
    f"CREATE TRIGGER {TRIGGERS[0]} AFTER INSERT ON patients_patient BEGIN "
    f"INSERT INTO {TABLE}(rowid, {_COLS}) VALUES (new.id, {_NEW}); END",
    f"CREATE TRIGGER {TRIGGERS[1]} AFTER DELETE ON patients_patient BEGIN "
    f"INSERT INTO {TABLE}({TABLE}, rowid, {_COLS}) VALUES ('delete', old.id, {_OLD}); END",
    f"CREATE TRIGGER {TRIGGERS[2]} AFTER UPDATE ON patients_patient BEGIN "
    f"INSERT INTO {TABLE}({TABLE}, rowid, {_COLS}) VALUES ('delete', old.id, {_OLD}); "
    f"INSERT INTO {TABLE}(rowid, {_COLS}) VALUES (new.id, {_NEW}); END",
    f"INSERT INTO {TABLE}({TABLE}) VALUES ('rebuild')",  # the rows there already
]
DROP = [*(f"DROP TRIGGER IF EXISTS {name}" for name in TRIGGERS), f"DROP TABLE IF EXISTS {TABLE}"]

# The shortest text a trigram phrase can find.
SHORTEST = 3


def install(cursor) -> bool:
    """Create (or create again) the index and its triggers and fill it; False when this SQLite cannot."""
    for sql in DROP:
        cursor.execute(sql)
    try:
        for sql in CREATE:
            cursor.execute(sql)
    except DatabaseError as exc:  # no FTS5, or no trigram tokenizer (SQLite before 3.34)
        log.warning("patient search index not installed (%s); searches scan the table", exc)
        for sql in DROP:
            cursor.execute(sql)
        return False
    return True


def candidates(q: str, folded: str) -> RawSQL | None:
    """The ids of the rows the index finds for `q` (the label column for `folded`), for `pk__in`; None when
    there is no index to ask (another database, no FTS5, a text too short for a trigram)."""
    if min(len(q), len(folded)) < SHORTEST or not _installed(
        connection.vendor, connection.settings_dict["NAME"]
    ):
        return None
    return RawSQL(f"SELECT rowid FROM {TABLE} WHERE {TABLE} MATCH %s", (_match(q, folded),))


def finds_at_most(q: str, folded: str, most: int) -> bool:
    """Whether the index finds at most `most` patients for `q` and `folded` (as `candidates` took them),
    reading no more than `most` + 1 of them; only where `candidates` answered."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FROM (SELECT rowid FROM {TABLE} WHERE {TABLE} MATCH %s LIMIT %s)",
            (_match(q, folded), most + 1),
        )
        return cursor.fetchone()[0] <= most


def _match(q: str, folded: str) -> str:
    if q.isascii() and folded == q.lower():
        # One phrase for every column: the two are the same text but for ASCII case, which the tokenizer
        # folds. Asked once rather than once per column group: half the index's time for a common word.
        return _phrase(folded)
    return f"{{label_folded}} : {_phrase(folded)} OR {{notes referral_reason}} : {_phrase(q)}"


def _phrase(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


@functools.cache
def _installed(vendor: str, name: str) -> bool:
    if vendor != "sqlite":
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM sqlite_master WHERE name IN (%s, %s, %s, %s)", (TABLE, *TRIGGERS)
        )
        return cursor.fetchone()[0] == 1 + len(TRIGGERS)
