"""Related rows read in their parent's query as JSON (qeeg_site/json_rows.py) come back as the same instances
an ORM query makes, on SQLite and on PostgreSQL: times with their zone, keys, empty and null values."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.db.models import OuterRef
from django.test.utils import CaptureQueriesContext

from qeeg_site.json_rows import compiled, instances, json_rows, prefetched
from runs.models import CouncilChange, Run, RunEvent
from tests.test_stream import make_run

CHANGE = tuple(field.attname for field in CouncilChange._meta.concrete_fields)
EVENT = ("id", "kind", "stage", "model_id", "created_at")


def _rows(model, objects, fields):
    return [tuple(getattr(obj, name) for name in fields) for obj in objects]


def _round_trip(django_user_model) -> None:
    run, other = make_run(), make_run()
    user = django_user_model.objects.create_user(username="roe")
    CouncilChange.objects.create(
        run=run, kind="drop", stage=2, model_id="gpt-5", summary="Stage 2: on without gpt-5", by=user
    )
    CouncilChange.objects.create(run=run, kind="rejoin", stage=3, model_id="gpt-5", summary='é ∑ "x"\n')
    CouncilChange.objects.create(run=other, kind="drop", stage=1, model_id="other", summary="not this run's")
    RunEvent.objects.create(run=run, kind="stage_started", stage=None)
    RunEvent.objects.create(run=run, kind="stage_finished", stage=1, model_id="m")
    RunEvent.objects.filter(run=run).update(created_at=datetime(2026, 3, 1, 9, 5, 7, 123456, tzinfo=UTC))

    reads = {
        "changes": json_rows(CouncilChange.objects.filter(run=OuterRef("pk")), *CHANGE),
        "read": json_rows(RunEvent.objects.filter(run=OuterRef("pk")), *EVENT),
        "none": json_rows(RunEvent.objects.filter(run=OuterRef("pk"), kind="nothing"), *EVENT),
    }
    found = Run.objects.annotate(**reads).get(pk=run.pk)
    # Compiled once, the same SQL gives the same values (here in a query with a join and a filter of its own).
    once = (
        Run.objects.select_related("patient")
        .filter(patient__label__startswith="P")
        .annotate(**compiled(Run, **reads))
    )
    assert {name: getattr(once.get(pk=run.pk), name) for name in reads} == {
        name: getattr(found, name) for name in reads
    }

    changes = instances(CouncilChange, found.changes, *CHANGE)
    assert _rows(CouncilChange, changes, CHANGE) == _rows(
        CouncilChange, CouncilChange.objects.filter(run=run).order_by("pk"), CHANGE
    )
    assert changes[0].by_id == user.pk and changes[1].by_id is None and changes[0].at.tzinfo is not None
    assert not changes[0]._state.adding
    events = instances(RunEvent, found.read, *EVENT)
    assert _rows(RunEvent, events, EVENT) == _rows(RunEvent, RunEvent.objects.filter(run=run), EVENT)
    assert events[0].created_at == datetime(2026, 3, 1, 9, 5, 7, 123456, tzinfo=UTC)
    assert instances(RunEvent, found.none, *EVENT) == []

    prefetched(found, "council_changes", changes)
    with CaptureQueriesContext(connection) as queries:
        assert list(found.council_changes.all()) == changes
    assert len(queries) == 0  # from the rows, as from a prefetch


@pytest.mark.django_db
def test_rows_read_as_json_are_the_rows_on_sqlite(django_user_model):
    _round_trip(django_user_model)


def test_rows_read_as_json_are_the_rows_on_postgresql(postgres_db, django_user_model):
    _round_trip(django_user_model)


def test_a_json_field_is_refused():
    with pytest.raises(ValueError, match="data"):
        json_rows(RunEvent.objects.all(), "id", "data")
