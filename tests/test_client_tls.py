"""A client does not load the CA bundle anew: one TLS context per process, made before the warm runner forks
(council.client.prepare), shared by every client after."""

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
