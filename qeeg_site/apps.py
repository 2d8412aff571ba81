from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class QeegSiteConfig(AppConfig):
    name = "qeeg_site"
    verbose_name = "Access"

    def ready(self) -> None:
        from qeeg_site.roles import sync_roles_after_migrate

        post_migrate.connect(sync_roles_after_migrate, sender=self, dispatch_uid="qeeg_site.sync_roles")
