"""The role groups (Staff, Clinicians, Auditors, Administrators) and their permissions; see qeeg_site/roles.py."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

from qeeg_site.roles import sync_roles


def create_roles(apps, schema_editor) -> None:
    # Permissions are normally made after all migrations; the roles need them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    sync_roles(apps)


def remove_roles(apps, schema_editor) -> None:
    from qeeg_site.roles import ROLES

    apps.get_model("auth", "Group").objects.filter(name__in=list(ROLES)).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("qeeg_site", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("patients", "0008_patient_clinicians"),
        ("runs", "0002_run_stages_done"),
    ]

    operations = [migrations.RunPython(create_roles, remove_roles)]
