from django.db import migrations, models


def from_start_and_finish(apps, schema_editor):
    """Runs from before working time was kept: what their clock showed (start to finish), or the current
    runner's time for one still running."""
    Run = apps.get_model("runs", "Run")
    for run in Run.objects.exclude(started_at=None).only("status", "started_at", "finished_at"):
        if run.status == "running":
            Run.objects.filter(pk=run.pk).update(working_since=run.started_at)
        elif run.finished_at is not None:
            worked = max(0.0, (run.finished_at - run.started_at).total_seconds())
            Run.objects.filter(pk=run.pk).update(worked_seconds=worked)


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0006_draftversion_numbers"),
    ]

    operations = [
        migrations.AddField(
            model_name="run",
            name="worked_seconds",
            field=models.FloatField(default=0.0),
        ),
        migrations.AddField(
            model_name="run",
            name="working_since",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(from_start_and_finish, migrations.RunPython.noop),
    ]
