"""The fake CLIProxyAPI for tests and for trying the app by hand (`manage.py fakeupstream`).

Production code never imports this package."""

from __future__ import annotations

from tests.fake_upstream.replies import CONTINUE_PREFIX, END_MARKER, FAKE_MARK, INVALID_PREFIX
from tests.fake_upstream.server import Call, FakeUpstream, ModelBehaviour, default_models

__all__ = [
    "CONTINUE_PREFIX",
    "END_MARKER",
    "FAKE_MARK",
    "INVALID_PREFIX",
    "Call",
    "FakeUpstream",
    "ModelBehaviour",
    "default_models",
]
