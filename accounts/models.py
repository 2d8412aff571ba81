"""A user's profile: how a signature reads (display name and credentials), edited by the user."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Profile(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile")
    display_name = models.CharField(max_length=120, blank=True, help_text="As printed under a signature.")
    credentials = models.CharField(max_length=120, blank=True, help_text="e.g. MD, board-certified in…")

    def __str__(self) -> str:
        return self.signature_name()

    def signature_name(self) -> str:
        return self.display_name.strip() or self.user.get_full_name() or self.user.get_username()

    def signature_line(self) -> str:
        """Name, then credentials when given: "Dr A. Rivera, MD"."""
        name = self.signature_name()
        return f"{name}, {self.credentials.strip()}" if self.credentials.strip() else name


def profile_of(user) -> Profile:
    """The user's profile, made empty on first use."""
    profile, _ = Profile.objects.get_or_create(user=user)
    return profile
