"""`manage.py serve` stops on SIGINT however it was started: sent to the serve process alone (`kill -INT`,
not its group as a terminal's Ctrl-C is), it ends serve and its warm runner promptly, socket removed. A
process started in the background by a script inherits SIGINT ignored (POSIX), which Twisted leaves so:
before, such a `kill -INT` did nothing (SIGTERM did)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.postgres import ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gone(pid: int) -> bool:
    """No such process, or a zombie waiting for its reaper (it runs nothing)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


@pytest.fixture
def serve(tmp_path):
    """`manage.py serve` on an ephemeral port with its own data folder, started with SIGINT ignored (as a
    script's `serve &` starts it), in a session of its own so teardown can kill everything it started."""
    env = {
        **os.environ,
        "QEEG_DATA_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "JOBS_WARM_RUNNER": "true",
    }
    lines: list[str] = []
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(_free_port())],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        yield proc, lines, tmp_path
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # serve, daphne and the warm runner: one group
        for line in lines:
            if match := re.search(r"Warm runner ready \(pid (\d+)\)", line):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(match.group(1)), signal.SIGKILL)
        proc.wait(10)
        reader.join(5)


def _wait_for(lines: list[str], pattern: str, seconds: float) -> re.Match:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for line in list(lines):
            if match := re.search(pattern, line):
                return match
        time.sleep(0.1)
    raise AssertionError(f"no {pattern!r} within {seconds} s: {''.join(lines)[-2000:]}")


def test_sigint_to_serve_alone_stops_it_and_its_warm_runner(serve):
    proc, lines, data_dir = serve
    warm_pid = int(_wait_for(lines, r"Warm runner ready \(pid (\d+)\)", 180).group(1))
    _wait_for(lines, r"Serving qEEG Council on http://127\.0\.0\.1:\d+/", 60)
    port = int(_wait_for(lines, r"http://127\.0\.0\.1:(\d+)/", 1).group(1))
    deadline = time.monotonic() + 30
    while True:  # daphne listening
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "daphne did not listen"
            time.sleep(0.2)
    assert list(data_dir.glob("warm-runner-*.sock"))

    sent = time.monotonic()
    os.kill(proc.pid, signal.SIGINT)  # the serve process alone, not its group
    assert proc.wait(8) == 0, "".join(lines)[-2000:]
    assert time.monotonic() - sent < 8
    deadline = time.monotonic() + 2
    while not _gone(warm_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(warm_pid)
    assert not list(data_dir.glob("warm-runner-*.sock"))  # the socket went with it
    assert "Traceback" not in "".join(lines)
