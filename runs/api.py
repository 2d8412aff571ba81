"""API endpoints for council runs, their artifacts, selection and export."""

from __future__ import annotations

from ninja import Router

router = Router(tags=["runs"])
