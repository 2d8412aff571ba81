"""Staff see runs, their artifacts and events; everything the runner derives is read-only here."""

from __future__ import annotations

from django.contrib import admin

from council.stages import STEPS
from runs.models import Artifact, CouncilChange, Run, RunEvent, RunReport


@admin.display(description="stage", ordering="stage")
def stage_name(artifact: Artifact) -> str:
    return f"{artifact.stage} · {STEPS.name_of(artifact.stage)}"


class ArtifactInline(admin.TabularInline):
    model = Artifact
    extra = 0
    can_delete = False
    show_change_link = True
    fields = [
        stage_name,
        "model_id",
        "kind",
        "status",
        "completion_tokens",
        "latency_ms",
        "attempts",
        "error",
    ]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class CouncilChangeInline(admin.TabularInline):
    """Who took part changed (runs/services.council_change): read here, made on the run page or the API."""

    model = CouncilChange
    extra = 0
    can_delete = False
    fields = ["at", "kind", "stage", "model_id", "replacement", "by_name", "reason", "discarded"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class RunReportInline(admin.TabularInline):
    """The reports the run reads, in its (timeline) order."""

    model = RunReport
    extra = 0
    can_delete = False
    fields = ["position", "report"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ["id", "patient", "status", "stages_done", "consolidator", "created_at", "finished_at"]
    list_filter = ["status", "created_at"]
    search_fields = ["patient__label", "consolidator"]
    list_select_related = ["patient"]
    # What the runner writes is its record, not something to edit by hand.
    readonly_fields = [
        "patient",
        "report",
        "council_models",
        "consolidator",
        "status",
        "current_stage",
        "stages_done",
        "label_map",
        "dropped",
        "catch_up",
        "prompt_versions",
        "selected_artifact",
        "error",
        "job",
        "created_by",
        "created_at",
        "queued_at",
        "started_at",
        "finished_at",
        "worked_seconds",
        "working_since",
    ]
    inlines = [RunReportInline, CouncilChangeInline, ArtifactInline]

    def has_add_permission(self, request) -> bool:
        # Runs are made through the run wizard or POST /api/runs, which check the models upstream.
        return False


@admin.register(Artifact)
class ArtifactAdmin(admin.ModelAdmin):
    list_display = ["id", "run", stage_name, "model_id", "kind", "status", "completion_tokens", "latency_ms"]
    list_filter = ["stage", "status", "kind"]
    search_fields = ["model_id", "run__id"]
    readonly_fields = [
        "run",
        "stage",
        "model_id",
        "kind",
        "file_path",
        "sha256",
        "prompt_tokens",
        "completion_tokens",
        "latency_ms",
        "attempts",
        "endpoint",
        "status",
        "error",
        "created_at",
    ]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(RunEvent)
class RunEventAdmin(admin.ModelAdmin):
    list_display = ["id", "run", "kind", "stage", "model_id", "created_at"]
    list_filter = ["kind"]
    search_fields = ["run__id", "model_id"]
    readonly_fields = ["run", "kind", "stage", "model_id", "data", "created_at"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
