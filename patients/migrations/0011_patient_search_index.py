"""The patient search's trigram index (patients/search_index.py): SQLite only, and only where SQLite has FTS5's
trigram tokenizer; elsewhere nothing is made and the search scans the table as before."""

from django.db import migrations

from patients import search_index


def install(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        with schema_editor.connection.cursor() as cursor:
            search_index.install(cursor)


def remove(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        with schema_editor.connection.cursor() as cursor:
            for sql in search_index.DROP:
                cursor.execute(sql)


class Migration(migrations.Migration):
    dependencies = [("patients", "0010_report_vision_calls_held")]

    operations = [migrations.RunPython(install, remove)]
