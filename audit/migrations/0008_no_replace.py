"""SQLite: a REPLACE of an audit row already there is refused too (it deletes without firing DELETE triggers).
Databases made before this had 0002's triggers only; a new one already has this from 0002 (IF NOT EXISTS)."""

from django.db import migrations

from audit.triggers import NO_REPLACE_SQLITE, TABLE


def create_trigger(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "sqlite":
        for sql in NO_REPLACE_SQLITE:
            schema_editor.execute(sql)


def drop_trigger(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {TABLE}_no_replace;")


class Migration(migrations.Migration):
    dependencies = [("audit", "0007_actions_acknowledged_viewed")]

    operations = [migrations.RunPython(create_trigger, drop_trigger)]
