from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.html import format_html

import audit
from patients import services
from patients.models import Patient, PatientIdentifier, Redaction, Report


class ReportInline(admin.TabularInline):
    model = Report
    fields = ["original_name", "kind", "status", "page_count", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # reports come in through the upload, which stores and checks the file


class PatientIdentifierInline(admin.TabularInline):
    """Names, date of birth, record numbers: used only to de-identify what the council sees."""

    model = PatientIdentifier
    fields = ["kind", "value", "created_by", "created_at"]
    readonly_fields = ["created_by", "created_at"]
    extra = 1
    verbose_name = "identifier (never sent to a model)"
    verbose_name_plural = "identifiers (kept here, used only to remove them before any model call)"


class RedactionInline(admin.TabularInline):
    model = Redaction
    fields = ["phrase", "report", "created_by", "created_at"]
    readonly_fields = ["created_by", "created_at"]
    extra = 0
    verbose_name_plural = "redactions (phrases always removed from what the council sees)"

    def formfield_for_foreignkey(self, db_field, request: HttpRequest, **kwargs):
        if db_field.name == "report" and (pk := request.resolver_match.kwargs.get("object_id")):
            kwargs["queryset"] = Report.objects.filter(patient_id=pk)  # only this patient's reports
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin):
    list_display = ["label", "age", "sex", "handedness", "report_count", "created_at", "updated_at"]
    list_filter = ["sex", "handedness", "created_at"]
    search_fields = ["label", "notes", "medications", "referral_reason"]
    readonly_fields = ["created_by", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["label", "notes"]}),
        ("Clinical context", {"fields": ["age", "sex", "handedness", "medications", "referral_reason"]}),
        ("Access", {"fields": ["clinicians"]}),
        ("Record", {"fields": ["created_by", "created_at", "updated_at"]}),
    ]
    filter_horizontal = ["clinicians"]
    inlines = [PatientIdentifierInline, RedactionInline, ReportInline]

    def formfield_for_manytomany(self, db_field, request: HttpRequest, **kwargs):
        if db_field.name == "clinicians":
            # Those whose role works on runs (the Clinicians group, or granted one by one), not everyone.
            reads_runs = Q(groups__permissions__codename="view_run") | Q(
                user_permissions__codename="view_run"
            )
            kwargs["queryset"] = (
                get_user_model().objects.filter(reads_runs, is_active=True).distinct().order_by("username")
            )
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Patient | None = None) -> list[str]:
        readonly = list(super().get_readonly_fields(request, obj))
        if not request.user.has_perm("patients.assign_clinicians"):
            readonly.append("clinicians")
        return readonly

    def get_queryset(self, request: HttpRequest) -> QuerySet[Patient]:
        return super().get_queryset(request).annotate(report_count=Count("reports"))

    @admin.display(description="reports", ordering="report_count")
    def report_count(self, patient: Patient) -> int:
        return patient.report_count

    # The admin is one more way to read and change a patient: the trail records it as the pages do.
    def render_change_form(
        self, request: HttpRequest, context, add=False, change=False, form_url="", obj=None
    ):
        if obj is not None:
            audit.record(request, "patient.viewed", obj)
            if request.user.has_perm("patients.view_patientidentifier") and (
                count := obj.identifiers.count()
            ):
                audit.record(request, "identifiers.viewed", obj, count=count)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def save_model(self, request, obj: Patient, form, change: bool) -> None:
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)
        fields = sorted(name for name in form.changed_data if name != "clinicians")
        if not change:
            audit.record(request, "patient.created", obj)
        elif fields:
            audit.record(request, "patient.edited", obj, fields=fields)

    def save_related(self, request: HttpRequest, form, formsets, change: bool) -> None:
        patient = form.instance
        before = set(patient.clinicians.values_list("pk", flat=True)) if change else set()
        super().save_related(request, form, formsets, change)
        after = set(patient.clinicians.values_list("pk", flat=True))
        if before != after:
            audit.record(
                request,
                "patient.assigned",
                patient,
                added=sorted(after - before),
                removed=sorted(before - after),
            )

    def save_formset(self, request: HttpRequest, form, formset, change: bool) -> None:
        saved = formset.save(commit=False)
        for row in saved:
            if row.created_by_id is None:
                row.created_by = request.user
            row.save()
        for row in formset.deleted_objects:
            row.delete()
        formset.save_m2m()
        if formset.model is PatientIdentifier:
            added = len(formset.new_objects)
            for change_name, count in [
                ("added", added),
                ("edited", len(saved) - added),
                ("removed", len(formset.deleted_objects)),
            ]:
                if count:
                    audit.record(
                        request, "identifiers.changed", form.instance, change=change_name, count=count
                    )

    def delete_model(self, request: HttpRequest, obj: Patient) -> None:
        services.patient_delete(patient=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Patient]) -> None:
        for patient in queryset:
            services.patient_delete(patient=patient)


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin):
    list_display = ["original_name", "patient", "kind", "status", "page_count", "size", "created_at"]
    list_filter = ["status", "kind", "created_at"]
    search_fields = ["original_name", "patient__label", "sha256", "error"]
    list_select_related = ["patient"]
    derived = [
        "kind",
        "size",
        "sha256",
        "page_count",
        "status",
        "error",
        "job",
        "uploaded_by",
        "created_at",
        "updated_at",
        "started_at",
        "processed_at",
        "files",
    ]
    # The patient is fixed too: runs point at both the report and its patient, and must keep agreeing.
    readonly_fields = ["patient", *derived]
    fields = ["patient", "original_name", *derived]
    actions = ["reingest"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # reports come in through the upload, which stores and checks the file

    @admin.display(description="size", ordering="size_bytes")
    def size(self, report: Report) -> str:
        return filesizeformat(report.size_bytes)

    @admin.display(description="files")
    def files(self, report: Report) -> str:
        return format_html(
            '<a href="{}">page</a> · <a href="{}">original</a>',
            reverse("patients:report", args=[report.pk]),
            reverse("patients:report_original", args=[report.pk]),
        )

    @admin.action(description="Read the selected finished reports again")
    def reingest(self, request: HttpRequest, queryset: QuerySet[Report]) -> None:
        count = 0
        for report in queryset:
            if services.report_reingest(report=report):
                audit.record(request, "report.reingested", report)
                count += 1
        messages.info(request, f"{count} report(s) queued for ingestion again.")

    def delete_model(self, request: HttpRequest, obj: Report) -> None:
        services.report_delete(report=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Report]) -> None:
        for report in queryset:
            services.report_delete(report=report)
