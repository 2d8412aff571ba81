"""pytest fixtures for the fake upstream (imported by tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from council.health import forget_cached_health
from tests.fake_upstream.server import FakeUpstream


@pytest.fixture
def fake_upstream(settings) -> Iterator[FakeUpstream]:
    """A fresh fake CLIProxyAPI on an ephemeral loopback port; settings point at it, with no key.

    To require a key: `fake_upstream.set_api_keys(["k"])` and `settings.CLIPROXY_API_KEY = "k"`."""
    fake = FakeUpstream().start()
    settings.CLIPROXY_BASE_URL = fake.base_url
    settings.CLIPROXY_API_KEY = ""
    # The banner's health result is cached per process; a new fake must not inherit an old verdict.
    forget_cached_health()
    try:
        yield fake
    finally:
        fake.stop()
        forget_cached_health()


@pytest.fixture
def fake_upstream_env(
    subprocess_env: dict[str, str], fake_upstream: FakeUpstream, settings
) -> dict[str, str]:
    """Environment for a child `manage.py` process (e.g. runpipeline) that must talk to `fake_upstream`.
    The key is copied from settings when this fixture is made; set env["CLIPROXY_API_KEY"] to change it."""
    env = dict(subprocess_env)
    env["CLIPROXY_BASE_URL"] = fake_upstream.base_url
    env["CLIPROXY_API_KEY"] = settings.CLIPROXY_API_KEY
    return env
