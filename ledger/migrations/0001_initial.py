# ModelCall, moved here from runs (runs/0014) with its table `runs_modelcall` and every row in it: the table is
# not touched, only the model's state (and its content type, so permissions granted on it follow).

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


def move_content_type(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    if not ContentType.objects.filter(app_label="ledger", model="modelcall").exists():
        ContentType.objects.filter(app_label="runs", model="modelcall").update(app_label="ledger")


def move_content_type_back(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    if not ContentType.objects.filter(app_label="runs", model="modelcall").exists():
        ContentType.objects.filter(app_label="ledger", model="modelcall").update(app_label="runs")


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("runs", "0014_model_call_to_ledger"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="ModelCall",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        (
                            "kind",
                            models.CharField(
                                choices=[("stage", "Stage answer"), ("patient_version", "Patient version")],
                                max_length=20,
                            ),
                        ),
                        ("stage", models.PositiveSmallIntegerField(blank=True, null=True)),
                        ("model_id", models.CharField(max_length=200)),
                        ("made_at", models.DateTimeField(default=django.utils.timezone.now)),
                        (
                            "run",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="+",
                                to="runs.run",
                            ),
                        ),
                        (
                            "user",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={
                        "db_table": "runs_modelcall",
                        "indexes": [models.Index(fields=["user", "made_at"], name="modelcall_user_day")],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(move_content_type, move_content_type_back),
    ]
