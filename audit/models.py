from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from audit.actions import ACTIONS


class AuditEvent(models.Model):
    """One thing someone did: who, what, to which record (and which patient), when, from where. Append-only:
    the code never updates or deletes a row, the admin cannot, and the database refuses (audit/triggers.py).

    No foreign keys to the records: a deleted patient or user must not take its trail with it (nor be kept
    from deletion by it). `detail` holds ids and counts, never identifiers or free text from a record."""

    at = models.DateTimeField(default=timezone.now, db_index=True)
    # The user's id and name as they were; db_constraint=False and DO_NOTHING so deleting a user touches no row.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    username = models.CharField(max_length=150, blank=True, db_index=True)
    action = models.CharField(max_length=40, choices=sorted(ACTIONS.items()), db_index=True)
    object_type = models.CharField(max_length=40, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    patient_id = models.PositiveBigIntegerField(null=True, blank=True, db_index=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-pk"]
        indexes = [
            models.Index(fields=["patient_id", "at"]),
            models.Index(fields=["action", "at"]),
            # A failed sign-in's address, counted against its bound (audit.bounds): one address, one window.
            models.Index(fields=["action", "ip", "at"], name="audit_action_ip_at"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.username or 'anonymous'} {self.action}"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            raise PermissionError("Audit events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("Audit events are append-only.")


class RepeatTally(models.Model):
    """How many rows of `action` one caller (`who`) was not written one by one in the window starting at
    `window`, and how many of those are already in the trail as a count (`written`): audit/bounds.py. For a
    read, `who` is the user and what was read from where, and the tally is made (count 0) by the read's first
    row of the window. A counter, not the trail: it is updated, and dropped once its window is past and all of
    it written."""

    action = models.CharField(max_length=40)
    who = models.CharField(max_length=80)
    window = models.DateTimeField()
    count = models.PositiveIntegerField(default=0)
    written = models.PositiveIntegerField(default=0)
    # Who and from where, for the row that writes the count (the first counted request's address).
    user_id = models.BigIntegerField(null=True, blank=True)
    username = models.CharField(max_length=150, blank=True)
    # The patient whose records the counted refusals asked for (in `who` too); null: no existing patient's.
    patient_id = models.BigIntegerField(null=True, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    # A counted read's record and detail (what was seen, as its first row says; in `who`'s digest too).
    object_type = models.CharField(max_length=40, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["action", "who", "window"], name="audit_repeat_tally_one"),
        ]
        indexes = [models.Index(fields=["window"])]

    def __str__(self) -> str:
        return f"{self.who} {self.action} {self.window:%Y-%m-%d %H:%M}: {self.count} ({self.written} written)"
