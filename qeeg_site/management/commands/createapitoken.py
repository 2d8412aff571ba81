from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from qeeg_site.models import ApiToken


class Command(BaseCommand):
    help = "Print a new API token for a user. Only its hash is stored: copy it now."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "--name", default="", help="A note to tell this token apart, e.g. the client's name."
        )

    def handle(self, *args, username: str, name: str, **options) -> None:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        if not user.is_active:
            raise CommandError(f"User {username!r} is inactive.")
        _, token = ApiToken.issue(user=user, name=name)
        self.stdout.write(token)
