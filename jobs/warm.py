"""The warm runner: a process with Django already set up that forks a job's process on request.

A job's process used to start from nothing: a new interpreter, `django.setup()` and the command's imports,
0.6 to 0.8 s of CPU before its first query (1 to 2.5 s of wall time on a busy machine). `manage.py serve` starts
one warm runner beside the web server; `jobs.launcher.launch_command` asks it first, and it forks. The child
is the same `manage.py <kind> <args>` command, run by Django's own ManagementUtility in a process that is
already set up, so a job claims its row tens of milliseconds after it was launched. Nothing else changes:
the job runtime (jobs/services.py) claims, heartbeats and settles exactly as before, and with no warm
runner answering (no server running, a command line, the tests) the launcher starts the process cold.

- It lives as long as its standard input is open: `serve` holds the other end of that pipe, so the warm
  runner ends with the server, never outlives it as a daemon, and a restart brings up one with new code.
  Jobs it forked are sessions of their own and go on (they survive a server restart, as before).
- It listens on a Unix socket in the data folder (0600 in a 0700 folder: the operator's user only) and
  forks only the registered job kinds (jobs/kinds.py), never an arbitrary command.
- It never opens a database connection and starts no thread, so what a child inherits is safe to use.
- The job's extra environment (its job id) is set in the child; settings were read when the warm runner
  started, as the web server's were.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from django.conf import settings

log = logging.getLogger(__name__)

# What a socket's path may hold on Linux (sun_path is 108 bytes, one of them the final NUL).
_MAX_SOCKET_PATH = 107


def socket_path() -> Path:
    """Per host: a data folder shared between hosts must not let one host's warm runner answer another's."""
    host = hashlib.sha256(settings.QEEG_HOST_ID.encode()).hexdigest()[:10]
    return settings.DATA_DIR / f"warm-runner-{host}.sock"


# -- the launcher's side -----------------------------------------------------------------------------------


def launch(name: str, args: list[str], *, log_path: Path, env: dict[str, str]) -> int | None:
    """Ask this host's warm runner to fork `manage.py name args…` (output appended to `log_path`, `env` set);
    the child's pid, or None when no warm runner answered (then nothing was started)."""
    path = socket_path()
    if not path.exists() or len(str(path)) > _MAX_SOCKET_PATH:
        return None
    request = {"name": name, "args": list(args), "log_path": str(log_path), "env": env}
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(10)
            conn.connect(str(path))
            conn.sendall(json.dumps(request).encode() + b"\n")
            answer = conn.makefile("rb").readline()
    except OSError as exc:  # none listening (a stale socket), or it did not answer in time
        log.info("no warm runner answered at %s (%s); starting %s cold", path, exc, name)
        return None
    try:
        reply = json.loads(answer)
        return int(reply["pid"])
    except (ValueError, KeyError, TypeError):
        log.warning(
            "the warm runner refused %s %s: %s", name, " ".join(args), answer[:300].decode(errors="replace")
        )
        return None


def start(
    env: dict[str, str] | None = None, wait: float = 30.0, stdout: int | None = None
) -> subprocess.Popen | None:
    """Start `manage.py warmrunner` as a child of this process (the web server) and wait until it listens.
    It ends when this process does (its stdin is a pipe from here). None if it did not come up (jobs then
    start cold) or this data folder's path is too long for a socket."""
    if len(str(socket_path())) > _MAX_SOCKET_PATH:
        log.warning("the data folder's path is too long for the warm runner's socket; jobs start cold")
        return None
    proc = subprocess.Popen(
        [sys.executable, str(settings.BASE_DIR / "manage.py"), "warmrunner"],
        stdin=subprocess.PIPE,
        stdout=stdout,
        cwd=settings.BASE_DIR,
        env=env,
        text=True,
    )
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and proc.poll() is None:
        if ready():
            return proc
        time.sleep(0.05)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    log.warning("the warm runner did not start; jobs start cold")
    return None


def ready() -> bool:
    """Does a warm runner answer on this host's socket?"""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(2)
            conn.connect(str(socket_path()))
        return True
    except OSError:
        return False


# -- the warm runner ---------------------------------------------------------------------------------------


def preload() -> list[str]:
    """Import every job kind's command (and what it imports) and do each kind's `prepare` once, here, so no
    child does it again."""
    from django.core.management import get_commands, load_command_class

    from jobs import kinds

    commands = get_commands()
    for kind in kinds.registered():
        load_command_class(commands[kind.name], kind.name)
        kind.prepare()
    return [kind.name for kind in kinds.registered()]


def serve(out=None) -> int:
    """Listen until standard input closes; fork each asked-for job. Returns the exit status."""
    from django.db import connections

    out = out or sys.stdout
    path = socket_path()
    if len(str(path)) > _MAX_SOCKET_PATH:
        out.write(f"The socket path {path} is too long; jobs start cold.\n")
        return 1
    if ready():
        out.write(f"A warm runner already answers at {path}.\n")
        return 0
    path.unlink(missing_ok=True)  # a stale socket left by a runner that was killed
    kinds = set(preload())
    connections.close_all()  # none should be open; a child must never share one
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))  # the umask (settings) makes it 0600
    except OSError as exc:  # another one bound it this instant
        out.write(f"A warm runner already answers at {path} ({exc}).\n")
        listener.close()
        return 0
    listener.listen(64)
    # Children are reaped by the kernel: a forked job is never a zombie of this process.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    # Stopped with the server: SIGTERM, or Ctrl-C in the terminal (the whole foreground group gets SIGINT).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(0))
    watch = selectors.DefaultSelector()
    watch.register(listener, selectors.EVENT_READ, "job")
    watch.register(sys.stdin.fileno(), selectors.EVENT_READ, "lifeline")
    out.write(f"Warm runner ready (pid {os.getpid()}): {', '.join(sorted(kinds))}.\n")
    out.flush()
    try:
        while True:
            for key, _ in watch.select():
                if key.data == "lifeline":
                    if not os.read(sys.stdin.fileno(), 4096):
                        return 0  # the server is gone
                    continue
                conn, _ = listener.accept()
                with conn:
                    _answer(conn, listener, kinds, out)
    finally:
        listener.close()
        path.unlink(missing_ok=True)


def _answer(conn: socket.socket, listener: socket.socket, kinds: set[str], out) -> None:
    conn.settimeout(5)
    try:
        request = _request(conn.makefile("rb").readline(), kinds)
    except (OSError, ValueError) as exc:
        _reply(conn, {"error": str(exc)})
        return
    if threading.active_count() > 1:  # a child of a threaded process may inherit a held lock
        _reply(conn, {"error": "the warm runner has threads running; start the job cold"})
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError as exc:  # out of processes or memory: the launcher starts it cold
        _reply(conn, {"error": f"could not fork: {exc}"})
        return
    if pid == 0:
        _child(request, conn, listener)  # never returns
    _reply(conn, {"pid": pid})
    out.write(f"{request['name']} {' '.join(request['args'])}: pid {pid}\n")
    out.flush()


def _request(line: bytes, kinds: set[str]) -> dict[str, Any]:
    request = json.loads(line)
    name, args, log_path, env = request["name"], request["args"], request["log_path"], request["env"]
    if name not in kinds:
        raise ValueError(f"{name!r} is not a job kind (known: {', '.join(sorted(kinds))})")
    if not all(isinstance(a, str) for a in args) or not isinstance(log_path, str) or not log_path:
        raise ValueError("args must be strings and log_path a path")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise ValueError("env must map strings to strings")
    return request


def _reply(conn: socket.socket, answer: dict[str, Any]) -> None:
    # The launcher may have given up waiting; a forked child finds its job (or nothing) either way.
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps(answer).encode() + b"\n")


def _child(request: dict[str, Any], conn: socket.socket, listener: socket.socket) -> None:
    """In the forked process: become `manage.py name args…` as a cold start would, then exit."""
    code = 1
    try:
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        os.setsid()  # a session of its own: it outlives the server, as a cold-started job does
        conn.close()
        listener.close()
        out = os.open(request["log_path"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        nothing = os.open(os.devnull, os.O_RDONLY)
        os.dup2(nothing, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        os.close(nothing)
        os.chdir(settings.BASE_DIR)
        os.environ.update(request["env"])
        sys.argv = [str(settings.BASE_DIR / "manage.py"), request["name"], *request["args"]]
        from django.core.management import ManagementUtility

        try:
            ManagementUtility(sys.argv).execute()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            from django.db import connections

            connections.close_all()
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
