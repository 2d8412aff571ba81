"""Bytes written to a socket go out at once (qeeg_site/socket_writes.py); what the kernel does not take waits
in Twisted's buffer for the reactor as before, and later writes queue behind it in order."""

from __future__ import annotations

import socket
from collections.abc import Iterator

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
