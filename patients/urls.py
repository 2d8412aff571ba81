from __future__ import annotations

from django.urls import path

from patients import views

app_name = "patients"
urlpatterns = [
    path("", views.patient_list, name="list"),
    path("patients/new/", views.patient_create, name="create"),
    path("patients/<int:pk>/", views.patient_detail, name="detail"),
    path("patients/<int:pk>/edit/", views.patient_update, name="update"),
    path("patients/<int:pk>/reports/", views.patient_reports, name="reports"),
    path("patients/<int:pk>/trend.svg", views.patient_trend, name="trend"),
    path("patients/<int:pk>/reports/upload/", views.report_upload, name="upload"),
    path("patients/<int:pk>/identifiers/", views.identifier_add, name="identifier_add"),
    path(
        "patients/<int:pk>/identifiers/<int:identifier_id>/delete/",
        views.identifier_delete,
        name="identifier_delete",
    ),
    path("reports/<int:pk>/", views.report_detail, name="report"),
    path("reports/<int:pk>/redactions/", views.redaction_add, name="redaction_add"),
    path(
        "reports/<int:pk>/redactions/<int:redaction_id>/delete/",
        views.redaction_delete,
        name="redaction_delete",
    ),
    path("reports/<int:pk>/facts/view/", views.report_fact, name="report_fact"),
    path("reports/<int:pk>/facts/correct/", views.report_fact_correct, name="report_fact_correct"),
    path("reports/<int:pk>/facts/lock/", views.report_facts_lock, name="report_facts_lock"),
    path("reports/<int:pk>/reingest/", views.report_reingest, name="report_reingest"),
    path("reports/<int:pk>/original/", views.report_original, name="report_original"),
    path("reports/<int:pk>/pages/<int:number>.png", views.report_page_image, name="report_page"),
    path("reports/<int:pk>/thumbs/<int:number>.png", views.report_thumb, name="report_thumb"),
]
