from __future__ import annotations

from django.apps import AppConfig


class QeegSiteConfig(AppConfig):
    name = "qeeg_site"
    verbose_name = "Access"
