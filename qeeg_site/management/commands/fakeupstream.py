"""`manage.py fakeupstream`: the test suite's fake CLIProxyAPI, started by hand to try the whole app without
any model subscription. Every reply is plainly marked as fake text."""

from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Serve a FAKE CLIProxyAPI (for trying the app and for tests): canned, plainly labelled replies for "
        "every council stage. Not a model router; never use its output for a patient."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="Address to bind (default 127.0.0.1).")
        parser.add_argument("--port", type=int, default=8317, help="Port (default 8317, CLIProxyAPI's own).")
        parser.add_argument(
            "--api-key",
            action="append",
            default=[],
            help="Require this key (Authorization: Bearer …), like CLIProxyAPI's api-keys. Repeatable.",
        )
        parser.add_argument(
            "--latency", type=float, default=0.0, help="Seconds every model waits before answering."
        )

    def handle(self, *args, host: str, port: int, api_key: list[str], latency: float, **options) -> None:
        # Imported here: the fake lives with the tests, and only this command reaches into it.
        from tests.fake_upstream import FakeUpstream

        fake = FakeUpstream(host=host, port=port, api_keys=api_key, default_latency=latency)
        try:
            fake.start()
        except OSError as exc:
            raise CommandError(f"Cannot listen on {host}:{port}: {exc}") from exc
        models = [m["id"] for m in fake.models_listing()["data"]]
        line = "=" * 78
        self.stdout.write(self.style.WARNING(line))
        self.stdout.write(
            self.style.WARNING("  FAKE UPSTREAM — this is NOT CLIProxyAPI and NOT a real model.")
        )
        self.stdout.write(
            self.style.WARNING(
                "  Every reply is canned placeholder text, marked as fake. For trying the app only."
            )
        )
        self.stdout.write(self.style.WARNING(line))
        self.stdout.write(f"Listening on {fake.base_url}  (set CLIPROXY_BASE_URL={fake.base_url})")
        self.stdout.write("API key: " + (", ".join(api_key) + " required" if api_key else "none required"))
        if latency:
            self.stdout.write(f"Latency: {latency:g} s per reply")
        self.stdout.write("Models: " + ", ".join(models))
        self.stdout.write("Ctrl-C to stop.")

        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        try:
            while not stop.wait(0.5):
                pass
        finally:
            fake.stop()
            self.stdout.write("Fake upstream stopped.")
