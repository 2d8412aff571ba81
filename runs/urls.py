from __future__ import annotations

from django.urls import path

from runs import views
from runs.versions import PATIENT as PATIENT_KIND

PATIENT = {"kind": PATIENT_KIND}

app_name = "runs"
urlpatterns = [
    path("", views.run_list, name="list"),
    path("patients/<int:patient_id>/panel/", views.patient_runs_panel, name="patient_panel"),
    path("patients/<int:patient_id>/start/", views.run_start_from_wizard, name="create"),
    path("<int:pk>/", views.run_detail, name="detail"),
    path("<int:pk>/live/", views.run_live, name="live"),
    path("<int:pk>/resume/", views.run_resume, name="resume"),
    path("<int:pk>/cancel/", views.run_cancel, name="cancel"),
    path("<int:pk>/changes/", views.run_answer_changes, name="answer_changes"),
    path("<int:pk>/drop/", views.run_council_change, {"change": "drop"}, name="drop"),
    path("<int:pk>/reask/", views.run_council_change, {"change": "reask"}, name="reask"),
    path("<int:pk>/replace/", views.run_council_change, {"change": "replace"}, name="replace"),
    path("<int:pk>/rejoin/", views.run_council_change, {"change": "rejoin"}, name="rejoin"),
    path("<int:pk>/stages/<int:stage>/", views.run_stage, name="stage"),
    path("<int:pk>/select/", views.run_select, name="select"),
    path("<int:pk>/export/", views.run_export, name="export"),
    path("<int:pk>/write-up/", views.write_up, name="write_up"),
    path("<int:pk>/write-up/preview/", views.write_up_preview, name="write_up_preview"),
    path("<int:pk>/write-up/save/", views.write_up_save, name="write_up_save"),
    path("<int:pk>/write-up/<int:number>/sign/", views.write_up_sign, name="write_up_sign"),
    path("<int:pk>/write-up/versions/<int:number>/", views.write_up_version, name="write_up_version"),
    # The patient version: the same editor, versions and signing as the write-up, of the other kind.
    path("<int:pk>/patient-version/", views.write_up, PATIENT, name="patient_version"),
    path("<int:pk>/patient-version/ask/", views.patient_version_ask, name="patient_version_ask"),
    path(
        "<int:pk>/patient-version/preview/", views.write_up_preview, PATIENT, name="patient_version_preview"
    ),
    path("<int:pk>/patient-version/save/", views.write_up_save, PATIENT, name="patient_version_save"),
    path(
        "<int:pk>/patient-version/<int:number>/sign/",
        views.write_up_sign,
        PATIENT,
        name="patient_version_sign",
    ),
    path(
        "<int:pk>/patient-version/versions/<int:number>/",
        views.write_up_version,
        PATIENT,
        name="patient_version_version",
    ),
    path("<int:pk>/patient-version/export/", views.patient_version_export, name="patient_version_export"),
    path("<int:pk>/council-view/", views.run_preview, name="preview"),
    path("patients/<int:patient_id>/council-view/", views.reports_preview, name="reports_preview"),
    path("reports/<int:pk>/council-view/", views.report_preview, name="report_preview"),
    path(
        "reports/<int:pk>/council-view/pages/<int:number>.png",
        views.report_preview_page,
        name="report_preview_page",
    ),
]
