"""`manage.py checkupstream`: is CLIProxyAPI reachable, does it accept our key, which models does it offer?"""

from __future__ import annotations

import asyncio
import datetime as dt

from django.conf import settings
from django.core.management.base import BaseCommand

from council.health import UpstreamHealth, check_upstream


class Command(BaseCommand):
    help = (
        "Check the CLIProxyAPI at CLIPROXY_BASE_URL: reachability, auth, and the discovered models as a table. "
        "Exits 0 when it lists models, 1 otherwise."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--timeout",
            type=float,
            default=None,
            help="Seconds to wait to connect and to read (default: CLIPROXY_HEALTH_TIMEOUT).",
        )

    def handle(self, *args, timeout: float | None, **options) -> None:
        health = asyncio.run(
            check_upstream(
                base_url=settings.CLIPROXY_BASE_URL,
                api_key=settings.CLIPROXY_API_KEY,
                timeout=timeout if timeout is not None else settings.CLIPROXY_HEALTH_TIMEOUT,
            )
        )
        self._report(health)
        if not health.ok:
            raise SystemExit(1)

    def _report(self, health: UpstreamHealth) -> None:
        write = self.stdout.write
        key = "set" if settings.CLIPROXY_API_KEY else "not set"
        write(f"Upstream:   {health.base_url}  (CLIPROXY_API_KEY {key})")
        write(f"Reachable:  {'yes' if health.reachable else 'no'}  ({health.latency_ms} ms)")
        if health.problem == "unauthorized":
            auth = "REJECTED — the proxy refused our key"
        elif not health.reachable:
            auth = "unknown (not reachable)"
        elif health.problem == "bad_response":
            auth = "unknown (not a CLIProxyAPI answer)"
        else:
            auth = "accepted" if settings.CLIPROXY_API_KEY else "no key needed"
        write(f"Auth:       {auth}")
        status = self.style.SUCCESS("OK") if health.ok else self.style.ERROR(f"PROBLEM: {health.problem}")
        write(f"Status:     {status}")
        write(f"            {health.message}")
        write(f"Hint:       {health.hint}")

        roles: dict[str, list[str]] = {}
        for model in settings.COUNCIL_MODELS:
            roles.setdefault(model, []).append("council")
        roles.setdefault(settings.COUNCIL_CONSOLIDATOR, []).append("consolidator")
        rows = [
            (m.id, m.owned_by or "-", _date(m.created), ", ".join(roles.get(m.id, [])) or "-")
            for m in sorted(health.models, key=lambda m: m.id)
        ]
        discovered = set(health.model_ids)
        rows += [
            (model, "-", "-", ", ".join(r) + " — NOT AVAILABLE")
            for model, r in roles.items()
            if model not in discovered
        ]
        write("")
        write(f"Discovered models: {len(health.models)}")
        if rows:
            header = ("model", "owned_by", "created", "configured as")
            widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(4)]
            for row in [header, tuple("-" * w for w in widths), *rows]:
                write(
                    "  ".join(
                        str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)
                    ).rstrip()
                )


def _date(created: int | None) -> str:
    if created is None:
        return "-"
    return dt.datetime.fromtimestamp(created, tz=dt.UTC).strftime("%Y-%m-%d")
