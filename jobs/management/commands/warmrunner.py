"""`manage.py warmrunner`: the warm runner (jobs/warm.py). `manage.py serve` starts it; it lives as long as its
standard input is open."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand

from jobs import warm


class Command(BaseCommand):
    help = (
        "Keep Django set up and fork each job's process on request (serve starts it); "
        "ends when its standard input closes."
    )
    requires_system_checks: list[str] = []  # the web server's business, as for every worker

    def handle(self, *args: Any, **options: Any) -> None:
        sys.exit(warm.serve(self.stdout))
