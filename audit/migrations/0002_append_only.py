"""The database refuses UPDATE and DELETE on the audit trail (SQLite and PostgreSQL triggers)."""

from django.db import migrations

from audit.triggers import DROP, create_sql


def create_triggers(apps, schema_editor) -> None:
    for sql in create_sql(schema_editor.connection.vendor):
        schema_editor.execute(sql)


def drop_triggers(apps, schema_editor) -> None:
    for sql in DROP.get(schema_editor.connection.vendor, []):
        schema_editor.execute(sql)


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]

    operations = [migrations.RunPython(create_triggers, drop_triggers)]
