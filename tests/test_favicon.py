"""/favicon.ico is served (whitenoise, from static/root/) to anyone, as an icon, with the site's headers; pages
name it."""

from __future__ import annotations

import io

import pytest
from django.test import Client
from PIL import Image


@pytest.mark.parametrize("method", ["get", "head"])
def test_the_icon_is_served_to_anyone_without_signing_in(method):
    reply = getattr(Client(), method)("/favicon.ico")
    assert reply.status_code == 200
    assert reply["Content-Type"] in ("image/x-icon", "image/vnd.microsoft.icon")
    assert "img-src 'self'" in reply["Content-Security-Policy"]
    assert int(reply["Content-Length"]) > 0


def test_the_icon_is_an_icon_in_the_sizes_browsers_ask_for():
    reply = Client().get("/favicon.ico")
    icon = Image.open(io.BytesIO(b"".join(reply.streaming_content)))
    assert icon.format == "ICO" and {(16, 16), (32, 32)} <= set(icon.info["sizes"])


def test_pages_link_the_icon(db):
    page = Client().get("/login/").content.decode()
    assert '<link rel="icon" href="/favicon.ico"' in page
