from __future__ import annotations

import secrets
import signal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import connections

from jobs import warm
from qeeg_site import startup


class Command(BaseCommand):
    help = (
        "Apply migrations, create the first admin account if there is no user, and serve the app with daphne."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, host: str, port: int, **options) -> None:
        # Ctrl-C stops, as the banner says, however this was started: a process a script starts in the
        # background inherits SIGINT ignored (POSIX), and Twisted then leaves it ignored, so `kill -INT` did
        # nothing. With Python's own handler back, daphne's reactor stops on it as on SIGTERM, and the warm
        # runner ends with its lifeline below.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("Database is up to date.")
        self.create_first_admin()
        connections.close_all()
        # Before recovery launches anything: jobs are forked by it from now on (jobs/warm.py). Held here until
        # daphne returns; it ends with this process (its stdin is a pipe from here).
        warm_runner = warm.start() if settings.JOBS_WARM_RUNNER else None
        for line in startup.recover():
            self.stdout.write(line)
        connections.close_all()

        from daphne.cli import CommandLineInterface

        self.stdout.write(
            self.style.SUCCESS(f"Serving qEEG Council on http://{host}:{port}/ (Ctrl-C stops).")
        )
        try:
            CommandLineInterface().run(["--bind", host, "--port", str(port), "qeeg_site.asgi:application"])
        finally:
            if warm_runner is not None:
                warm_runner.stdin.close()
                warm_runner.wait(10)

    def create_first_admin(self) -> None:
        User = get_user_model()
        if User.objects.exists():
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser(username="admin", email="", password=password)
        self.stdout.write(
            self.style.WARNING(
                "Created the first admin account.\n"
                f"  username: admin\n  password: {password}\n"
                "This password is shown once; change it after signing in (Admin → Users)."
            )
        )
