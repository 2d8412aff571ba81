"""A client does not load the CA bundle anew: one TLS context per process, made before the warm runner forks
(council.client.prepare), shared by every client after; and no request looks for a module."""

from __future__ import annotations

from unittest import mock

import httpx

from council import client as client_module
from council.client import CLIProxyClient
from jobs import kinds


def test_every_client_shares_one_tls_context():
    client_module.tls_context.cache_clear()
    with mock.patch.object(httpx, "create_ssl_context", wraps=httpx.create_ssl_context) as made:
        client_module.prepare()
        clients = [CLIProxyClient(base_url="https://127.0.0.1:1") for _ in range(3)]
    assert made.call_count == 1
    pools = {id(c._http._transport._pool._ssl_context) for c in clients}
    assert pools == {id(client_module.tls_context())}


def test_the_warm_runner_prepares_the_client_for_the_kinds_that_call_models():
    assert kinds.get("runpipeline").prepare is client_module.prepare
    assert kinds.get("patientversion").prepare is client_module.prepare


FIRST_REQUEST = """
import sys
sys.path.insert(0, sys.argv[2])
import asyncio, threading
from council.client import CLIProxyClient, prepare
prepare()
assert threading.active_count() == 1, "prepare left a thread running: a fork would inherit its locks"
before = set(sys.modules)
async def ask():
    async with CLIProxyClient(base_url=sys.argv[1]) as client:
        await client.list_models()
asyncio.run(ask())
print(sorted(set(sys.modules) - before))
"""


def test_after_prepare_a_clients_first_request_imports_nothing(fake_upstream):
    import subprocess
    import sys

    from django.conf import settings

    child = subprocess.run(
        [sys.executable, "-c", FIRST_REQUEST, fake_upstream.base_url, str(settings.BASE_DIR)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.strip() == "[]"


LATER_REQUESTS = """
import sys
sys.path.insert(0, sys.argv[2])
import asyncio
from council.client import CLIProxyClient, prepare
prepare()
looked = []
class Spy:
    def find_spec(self, name, path=None, target=None):
        looked.append(name)
        return None
async def ask():
    async with CLIProxyClient(base_url=sys.argv[1]) as client:
        await client.list_models()
        sys.meta_path.insert(0, Spy())
        for _ in range(3):
            await client.list_models()
asyncio.run(ask())
print(sorted(set(looked)))
"""


def test_a_request_never_searches_for_a_module(fake_upstream):
    # httpcore asks for sniffio on every lock and event it makes (several a request) and falls back to
    # asyncio when it is missing; Python does not remember a failed import, so without sniffio installed
    # each ask walked sys.path: ~0.1 s of an 8-model run's event loop (encode/httpcore discussion 1102).
    import subprocess
    import sys

    from django.conf import settings

    child = subprocess.run(
        [sys.executable, "-c", LATER_REQUESTS, fake_upstream.base_url, str(settings.BASE_DIR)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.strip() == "[]"
