"""Per-patient access: a clinician sees only the patients assigned to them; any other patient answers 404 on
every face (page, API, token, download, stream) and is left out of every list."""

from __future__ import annotations

import pytest

from patients.access import patient_for, patients_for
from tests.access_world import World
from tests.conftest import signed_in, token_client


def _urls(world: World) -> list[str]:
    p, r, run, a = world.patient.pk, world.report.pk, world.run.pk, world.artifact.pk
    return [
        f"/patients/{p}/",
        f"/patients/{p}/reports/",
        f"/reports/{r}/",
        f"/reports/{r}/original/",
        f"/reports/{r}/pages/1.png",
        f"/runs/patients/{p}/panel/",
        f"/runs/{run}/",
        f"/runs/{run}/stages/6/",
        f"/api/patients/{p}",
        f"/api/patients/{p}/reports",
        f"/api/patients/{p}/runs",
        f"/api/reports/{r}",
        f"/api/reports/{r}/text",
        f"/api/reports/{r}/original",
        f"/api/reports/{r}/pages/1.png",
        f"/api/runs/{run}",
        f"/api/runs/{run}/artifacts",
        f"/api/runs/{run}/artifacts/{a}",
        f"/api/runs/{run}/export/final.md",
        f"/api/runs/{run}/export/final.pdf",
    ]


def test_a_clinician_not_assigned_gets_404_for_the_patient_and_everything_of_it(world, other_clinician):
    session, token = signed_in(other_clinician), token_client(other_clinician)
    for url in _urls(world):
        # Pages with the session; the API with the session and with the user's token.
        for client in (session, token) if url.startswith("/api/") else (session,):
            response = client.get(url)
            assert response.status_code == 404, (url, response.status_code)
            if url.startswith("/api/"):
                assert response.json()["detail"].startswith(("No ", "There is no", "Run ")), url


def test_the_assigned_clinician_reads_all_of_it(world, clinician):
    session, token = signed_in(clinician), token_client(clinician)
    for url in _urls(world):
        assert (session if not url.startswith("/api/") else token).get(url).status_code == 200, url


def test_lists_leave_out_patients_out_of_reach(world, other_clinician, clinician):
    outsider_lists = [
        signed_in(other_clinician).get("/").content.decode(),
        signed_in(other_clinician).get("/runs/").content.decode(),
        token_client(other_clinician).get("/api/patients").content.decode(),
    ]
    assert all("SYNTH-ACL" not in text for text in outsider_lists)
    assert token_client(other_clinician).get("/api/patients").json()["count"] == 0
    assert "SYNTH-ACL" in signed_in(clinician).get("/").content.decode()
    assert "SYNTH-ACL" in signed_in(clinician).get("/runs/").content.decode()


def test_assigning_a_clinician_opens_the_patient_and_unassigning_closes_it(world, other_clinician):
    client = token_client(other_clinician)
    url = f"/api/patients/{world.patient.pk}"
    assert client.get(url).status_code == 404
    world.patient.clinicians.add(other_clinician)
    assert client.get(url).status_code == 200
    world.patient.clinicians.remove(other_clinician)
    assert client.get(url).status_code == 404


def test_an_inactive_user_reaches_nothing(world, clinician):
    clinician.is_active = False
    clinician.save()
    assert not patients_for(clinician).exists()
    with pytest.raises(Exception, match="No patient"):
        patient_for(clinician, world.patient.pk)


def test_staff_see_every_patient_but_the_clinician_s_page_has_no_edit_form(world, staff, clinician):
    staff_page = signed_in(staff).get(f"/patients/{world.patient.pk}/").content.decode()
    clinician_page = signed_in(clinician).get(f"/patients/{world.patient.pk}/").content.decode()
    edit = f'action="/patients/{world.patient.pk}/edit/"'
    upload = f'action="/patients/{world.patient.pk}/reports/upload/"'
    assert edit in staff_page and upload in staff_page and 'id="runs-panel"' not in staff_page
    assert edit not in clinician_page and upload not in clinician_page and 'id="runs-panel"' in clinician_page
    assert "Staff keep patient records" in clinician_page


def test_a_page_refused_to_the_role_says_why(world, clinician):
    response = signed_in(clinician).post(f"/patients/{world.patient.pk}/edit/", {"label": "X"})
    assert response.status_code == 403
    assert "Your role cannot change patient records." in response.content.decode()
    world.patient.refresh_from_db()
    assert world.patient.label == "SYNTH-ACL"
