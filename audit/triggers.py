"""The database's own refusal to change the audit trail: triggers that raise on UPDATE and DELETE (on
PostgreSQL TRUNCATE, on SQLite a REPLACE of a row already there) of audit_auditevent. Made by migrations 0002
and 0008; the SQL lives here so tests can lift them for the test database's flush and put them back, exactly
as made."""

from __future__ import annotations

TABLE = "audit_auditevent"
MESSAGE = "audit events are append-only"

# SQLite's REPLACE (INSERT OR REPLACE) deletes a row in its way without firing DELETE triggers (recursive
# triggers are off): a row written again under an id already there is refused before that.
NO_REPLACE_SQLITE = [
    f"CREATE TRIGGER IF NOT EXISTS {TABLE}_no_replace BEFORE INSERT ON {TABLE} "
    f"WHEN EXISTS (SELECT 1 FROM {TABLE} WHERE id = NEW.id) BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END;",
]

CREATE: dict[str, list[str]] = {
    "sqlite": [
        f"CREATE TRIGGER {TABLE}_no_update BEFORE UPDATE ON {TABLE} "
        f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END;",
        f"CREATE TRIGGER {TABLE}_no_delete BEFORE DELETE ON {TABLE} "
        f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END;",
        *NO_REPLACE_SQLITE,
    ],
    "postgresql": [
        f"CREATE OR REPLACE FUNCTION {TABLE}_refuse() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN RAISE EXCEPTION '{MESSAGE}'; END; $$;",
        f"CREATE TRIGGER {TABLE}_no_change BEFORE UPDATE OR DELETE ON {TABLE} "
        f"FOR EACH ROW EXECUTE FUNCTION {TABLE}_refuse();",
        f"CREATE TRIGGER {TABLE}_no_truncate BEFORE TRUNCATE ON {TABLE} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {TABLE}_refuse();",
    ],
}

DROP: dict[str, list[str]] = {
    "sqlite": [
        f"DROP TRIGGER IF EXISTS {TABLE}_no_update;",
        f"DROP TRIGGER IF EXISTS {TABLE}_no_delete;",
        f"DROP TRIGGER IF EXISTS {TABLE}_no_replace;",
    ],
    "postgresql": [
        f"DROP TRIGGER IF EXISTS {TABLE}_no_change ON {TABLE};",
        f"DROP TRIGGER IF EXISTS {TABLE}_no_truncate ON {TABLE};",
        f"DROP FUNCTION IF EXISTS {TABLE}_refuse();",
    ],
}


def create_sql(vendor: str) -> list[str]:
    if vendor not in CREATE:
        raise NotImplementedError(f"No append-only triggers for {vendor}; add them to audit/triggers.py.")
    return CREATE[vendor]
