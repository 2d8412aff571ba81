"""The ASGI application daphne serves: channels' router in front of Django. The live stream goes to its
channels consumer (runs/stream.py), signed in by the session or a bearer token; everything else to Django."""

from __future__ import annotations

import os

from qeeg_site.asgi_handler import get_asgi_application  # Django's, with one kept thread per request

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "qeeg_site.settings")
django_application = get_asgi_application()  # sets Django up before the imports below touch models

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402

from qeeg_site import socket_writes  # noqa: E402
from qeeg_site.asgi_guard import guard  # noqa: E402
from qeeg_site.auth import BearerTokenMiddleware  # noqa: E402
from runs import stream  # noqa: E402


def signed_in(app):
    """Channels' session sign-in, then the JSON API's bearer tokens, in the scope's `user`."""
    return AuthMiddlewareStack(BearerTokenMiddleware(app))


socket_writes.install()  # daphne's process: a response's bytes go out at once (see the module)

application = ProtocolTypeRouter(
    {
        "http": URLRouter([*stream.routes(signed_in), re_path(r"", django_application)]),
    }
)
application = guard(application)  # over-cap and signed-out writes refused from headers, before the body
