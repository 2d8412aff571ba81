"""API endpoints about the upstream: /api/health and /api/models."""

from __future__ import annotations

from ninja import Router

router = Router(tags=["upstream"])
