"""The upstream banner on every page: never makes a page wait, says what to do when the upstream is down."""

from __future__ import annotations

import asyncio
import time

import pytest
from django.urls import reverse

from council.health import cached_upstream_health, forget_cached_health

BANNER_URL = "/api/upstream/banner"


@pytest.fixture(autouse=True)
def fresh_health_cache():
    forget_cached_health()
    yield
    forget_cached_health()


@pytest.mark.django_db
def test_cold_cache_page_defers_the_banner_to_htmx(clinician_client, fake_upstream):
    fake_upstream.stop()
    page = clinician_client.get(reverse("patients:list"))
    html = page.content.decode()
    assert page.status_code == 200
    assert f'hx-get="{BANNER_URL}"' in html
    assert 'hx-trigger="load"' in html
    # The page itself did not ask the upstream anything.
    assert "unreachable" not in html


@pytest.mark.django_db
def test_page_render_never_calls_the_upstream(clinician_client, fake_upstream):
    clinician_client.get(reverse("patients:list"))
    clinician_client.get(reverse("runs:list"))
    assert fake_upstream.count() == 0


@pytest.mark.django_db
def test_banner_fragment_says_what_to_do_when_unreachable(clinician_client, fake_upstream):
    fake_upstream.stop()
    started = time.monotonic()
    fragment = clinician_client.get(BANNER_URL).content.decode()
    assert time.monotonic() - started < 3
    assert "CLIProxyAPI is unreachable" in fragment
    assert "fakeupstream" in fragment and "CLIPROXY_BASE_URL" in fragment
    assert 'role="alert"' in fragment


@pytest.mark.django_db
def test_banner_fragment_says_sign_in_when_unauthorized(clinician_client, fake_upstream):
    fake_upstream.set_api_keys(["sekret"])
    fragment = clinician_client.get(BANNER_URL).content.decode()
    assert "CLIProxyAPI needs sign-in" in fragment
    assert "CLIPROXY_API_KEY" in fragment


@pytest.mark.django_db
def test_banner_is_hidden_when_all_is_well(clinician_client, fake_upstream):
    fragment = clinician_client.get(BANNER_URL).content.decode()
    assert "hidden" in fragment
    assert 'role="alert"' not in fragment


@pytest.mark.django_db
def test_warm_cache_renders_the_banner_inline(clinician_client, fake_upstream):
    fake_upstream.stop()
    asyncio.run(cached_upstream_health())
    html = clinician_client.get(reverse("patients:list")).content.decode()
    assert "CLIProxyAPI is unreachable" in html
    assert 'hx-trigger="load"' not in html


@pytest.mark.django_db
def test_banner_fragment_needs_sign_in(outsider, fake_upstream):
    assert outsider.get(BANNER_URL).status_code == 401


@pytest.mark.django_db
def test_no_banner_for_signed_out_pages(outsider, fake_upstream):
    html = outsider.get(reverse("login")).content.decode()
    assert "upstream-banner" not in html


@pytest.mark.django_db
def test_checks_asked_for_at_the_same_time_share_one_request(fake_upstream):

    async def page_and_panel():
        return await asyncio.gather(
            cached_upstream_health(), cached_upstream_health(), cached_upstream_health()
        )

    results = asyncio.run(page_and_panel())
    assert all(r.ok for r in results)
    assert fake_upstream.count(endpoint="models") == 1
