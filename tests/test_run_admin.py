"""Staff can look at runs, artifacts and events in the admin; what the runner derived is not editable."""

from __future__ import annotations

import pytest
from django.test import Client

from runs import services
from runs.models import Artifact, RunEvent
from tests.run_helpers import CONSOLIDATOR, COUNCIL, make_patient, make_ready_report

pytestmark = pytest.mark.django_db


def test_admin_lists_and_shows_runs_artifacts_and_events_read_only(administrator, tmp_path):
    client = Client()
    client.force_login(administrator)
    patient = make_patient()
    run = services.run_create(
        patient=patient,
        report=make_ready_report(patient, tmp_path),
        council_models=COUNCIL,
        consolidator=CONSOLIDATOR,
        available=set(COUNCIL),
    )
    artifact = services.artifact_record(
        run_id=run.pk, stage=1, model_id="gpt-5", outcome=services.Outcome(text="# Analysis\n")
    )
    event = RunEvent.objects.filter(run=run).first()
    for url in (
        "/admin/runs/run/",
        f"/admin/runs/run/{run.pk}/change/",
        "/admin/runs/artifact/",
        f"/admin/runs/artifact/{artifact.pk}/change/",
        "/admin/runs/runevent/",
        f"/admin/runs/runevent/{event.pk}/change/",
    ):
        response = client.get(url)
        assert response.status_code == 200, url
    page = client.get(f"/admin/runs/run/{run.pk}/change/").content.decode()
    assert 'name="status"' not in page and 'name="label_map"' not in page
    assert client.get("/admin/runs/run/add/").status_code == 403
    client.post(f"/admin/runs/artifact/{artifact.pk}/change/", {"sha256": "forged"})
    assert Artifact.objects.get(pk=artifact.pk).sha256 != "forged"
