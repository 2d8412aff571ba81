from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

import audit
from qeeg_site import tokens


class Command(BaseCommand):
    help = "Print a new API token for a user. Only its hash is stored: copy it now."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "--name", default="", help="A note to tell this token apart, e.g. the client's name."
        )
        parser.add_argument(
            "--days", type=int, default=None, help="Days until it expires (default API_TOKEN_DAYS)."
        )

    def handle(self, *args, username: str, name: str, days: int | None, **options) -> None:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        try:
            row, token = tokens.token_issue(user=user, name=name, days=days)
        except tokens.TokenRefused as exc:
            raise CommandError(exc.message) from exc
        audit.record(user, "token.created", row, days=row.lifetime_days, via="command")
        self.stdout.write(token)
