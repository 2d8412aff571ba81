"""The four roles, as Django groups and the permissions each holds. `patients.access` and `runs.access` ask
for these permissions; nothing else in the code knows a role by name.

A migration creates the groups, and every `migrate` runs `sync_roles` again, so a permission added by a later
migration reaches its role. Permissions are only ever added to a group here, never taken away, so what an
administrator gave a group in the admin survives.
"""

from __future__ import annotations

from django.apps import apps as global_apps

STAFF = "Staff"
CLINICIANS = "Clinicians"
AUDITORS = "Auditors"
ADMINISTRATORS = "Administrators"

ROLES: dict[str, list[str]] = {
    # Patient records, identifiers, uploads, assigning clinicians, correcting and locking the facts read from
    # a report, the admin (with "staff status").
    # `view_patient` is what reaches every patient; anyone without it sees only the patients assigned to them.
    STAFF: [
        "patients.view_patient",
        "patients.add_patient",
        "patients.change_patient",
        "patients.assign_clinicians",
        "patients.view_identifiers",
        "patients.change_identifiers",
        "patients.view_patientidentifier",
        "patients.add_patientidentifier",
        "patients.change_patientidentifier",
        "patients.delete_patientidentifier",
        "patients.view_redaction",
        "patients.add_redaction",
        "patients.change_redaction",
        "patients.delete_redaction",
        "patients.view_report",
        "patients.add_report",
        "patients.change_report",
        "patients.delete_report",
        "patients.correct_facts",
    ],
    # Only the patients assigned to them: start runs, read every stage, select, correct and lock facts, export.
    CLINICIANS: [
        "runs.view_run",
        "runs.add_run",
        "runs.change_run",
        "patients.correct_facts",
        "patients.view_redaction",
        "patients.add_redaction",
        "patients.delete_redaction",
    ],
    # The audit log only.
    AUDITORS: ["audit.view_auditevent"],
    # Everything (superusers hold every permission anyway; the group is for administrators who are not).
    ADMINISTRATORS: ["*"],
}


def sync_roles(apps=global_apps) -> None:
    """Create the role groups and add each its permissions (those that exist yet; the rest on a later run)."""
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, wanted in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        if wanted == ["*"]:
            group.permissions.add(*Permission.objects.all())
            continue
        for dotted in wanted:
            app_label, codename = dotted.split(".")
            permission = Permission.objects.filter(
                content_type__app_label=app_label, codename=codename
            ).first()
            if permission is not None:
                group.permissions.add(permission)


def sync_roles_after_migrate(sender, using: str = "default", **kwargs) -> None:
    """post_migrate: make every app's permissions first (Django does it app by app, some after us)."""
    from django.contrib.auth.management import create_permissions

    for app_config in global_apps.get_app_configs():
        create_permissions(app_config, verbosity=0, using=using)
    sync_roles()
