from __future__ import annotations

from django.contrib import admin

from jobs.models import Job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    """Read-only: jobs are written by their runners; staff look here to see who holds what."""

    list_display = ("id", "kind", "target", "status", "host", "pid", "heartbeat_at", "cancel_requested")
    list_filter = ("status", "kind", "host")
    search_fields = ("target", "host")
    readonly_fields = [field.name for field in Job._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
