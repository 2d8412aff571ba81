"""Bytes written to a socket go out at once (qeeg_site/socket_writes.py); what the kernel does not take waits
in Twisted's buffer for the reactor as before, and later writes queue behind it in order."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor

from qeeg_site import socket_writes


@pytest.fixture
def pair() -> Iterator[tuple[tcp.Connection, socket.socket, MemoryReactor]]:
    socket_writes.install()
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.settimeout(2)
    reactor = MemoryReactor()
    connection = tcp.Connection(ours, Protocol(), reactor)
    connection.connected = True
    yield connection, theirs, reactor
    ours.close()
    theirs.close()


def _read_all(theirs: socket.socket) -> bytes:
    got = b""
    theirs.setblocking(False)
    try:
        while chunk := theirs.recv(1 << 20):
            got += chunk
    except BlockingIOError:
        pass
    theirs.settimeout(2)
    return got


def test_a_write_reaches_the_socket_at_once_without_asking_the_reactor(pair):
    connection, theirs, reactor = pair
    connection.write(b"event: snapshot\n\n")
    assert theirs.recv(100) == b"event: snapshot\n\n"
    connection.writeSequence([b"3\r\n", b"abc", b"\r\n"])
    assert theirs.recv(100) == b"3\r\nabc\r\n"
    assert connection not in reactor.getWriters()  # no poller change for either
    assert connection.dataBuffer == b"" and connection._tempDataBuffer == []


def test_what_the_kernel_does_not_take_waits_for_the_reactor_and_later_writes_keep_their_order(pair):
    connection, theirs, reactor = pair
    big = bytes(range(256)) * 40_000  # 10 MB: more than a socket buffer holds
    connection.write(big)
    assert connection in reactor.getWriters()  # the rest waits for the socket to drain
    connection.write(b"after")  # behind the waiting bytes, not before them
    connection.writeSequence([b" and ", b"last"])
    got = b""
    while connection in reactor.getWriters():
        got += _read_all(theirs)
        connection.doWrite()  # what the reactor does once the socket is writable
    got += _read_all(theirs)
    assert got == big + b"after and last"
    connection.write(b"fresh")  # drained: straight out again
    assert theirs.recv(100) == b"fresh"
    assert connection not in reactor.getWriters()


def test_a_closed_peer_is_left_to_twisted_to_find(pair):
    connection, theirs, reactor = pair
    theirs.close()
    connection.write(b"x" * 100_000)  # the peer is gone: send fails; Twisted's own path notices it
    assert connection in reactor.getWriters()


def test_nothing_is_written_once_the_connection_is_closing(pair):
    connection, theirs, reactor = pair
    connection.disconnecting = True
    connection.write(b"late")
    assert connection in reactor.getWriters()  # Twisted's own path: flushed, then closed, by the reactor
    assert _read_all(theirs) == b""


def test_daphne_gives_each_http_request_a_direct_body_write_that_stops_once_the_connection_is_gone():
    """`BODY_NOW` (the live stream's hand-over) writes a body chunk as daphne's `http.response.body` would:
    chunked, after the headers its first ASGI body wrote; False once the connection is closed or gone."""
    from daphne.http_protocol import WebRequest
    from daphne.server import Server
    from twisted.internet.testing import StringTransport
    from twisted.web.http import HTTPChannel

    socket_writes.install()
    assert Server.create_application is socket_writes._create_application
    server = Server(application=None, endpoints=["tcp:port=0:interface=127.0.0.1"])  # never run here
    server.connections = {}  # what Server.run starts with
    scopes = []

    def application(scope, receive, send):
        scopes.append(scope)
        return asyncio.sleep(0)

    server.application = application
    channel = HTTPChannel()
    channel.factory = SimpleNamespace(server=server)  # daphne's HTTPFactory, as far as a request looks
    transport = StringTransport()
    channel.makeConnection(transport)
    request = WebRequest(channel)  # counts itself in server.connections
    request.clientproto, request.method = b"HTTP/1.1", b"GET"
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        server.create_application(request, {"type": "http", "path": "/api/runs/1/stream"})
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    body_now = scopes[0]["extensions"][socket_writes.BODY_NOW]
    assert body_now(b"too early") is False  # no response yet: the headers go through ASGI
    request.handle_reply({"type": "http.response.start", "status": 200, "headers": []})
    request.handle_reply({"type": "http.response.body", "body": b"retry: 2000\n\n", "more_body": True})
    transport.clear()
    assert body_now(b"event: x\n\n") is True
    assert transport.value() == b"a\r\nevent: x\n\n\r\n"
    server.connections[request]["disconnected"] = 1.0
    assert body_now(b"late") is False
    assert transport.value() == b"a\r\nevent: x\n\n\r\n"
