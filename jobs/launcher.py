"""Start a management command in its own process, detached from the web server.

Long work (report ingestion, council runs) runs in `manage.py <command>` processes: no daemon has to be
running, the web server stays responsive, and the work survives a restart of the web server. What a process
was doing is in the database (jobs.models.Job), so a lost process is detected by its heartbeat and its work
picked up from there. Only jobs/services.py calls this.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

from django.conf import settings

from jobs import warm

log = logging.getLogger(__name__)


def launch_command(
    name: str, *args: str, log_path: Path | None = None, env: dict[str, str] | None = None
) -> int:
    """Start `manage.py name args…` in a new session and return its pid. Output goes to `log_path`
    (default data/logs/<name>-<args>.log), appended; `env` is added to the process's environment (what the
    job reads as it runs, such as its job id; settings are the server's). The warm runner forks it when one
    answers (jobs/warm.py: Django already set up, tens of milliseconds); otherwise a new interpreter starts."""
    log_path = log_path or log_dir() / f"{log_stem(name, *args)}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if (pid := warm.launch(name, list(args), log_path=log_path, env=env or {})) is not None:
        log.info("forked %s %s as pid %s (log: %s)", name, " ".join(args), pid, log_path)
        return pid
    child_env = {**os.environ, **(env or {})}
    # Every job is a fresh process: the project's own modules (not installed, so uv compiles no bytecode for
    # them) were compiled anew by each one where PYTHONDONTWRITEBYTECODE is set, ~50 ms of a runner's start.
    # The first job writes their .pyc files (if it may write there), the next ones load them.
    child_env.pop("PYTHONDONTWRITEBYTECODE", None)
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, str(settings.BASE_DIR / "manage.py"), name, *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=settings.BASE_DIR,
            env=child_env,
            start_new_session=True,
        )
    # Reap the child when it exits so it never lingers as a zombie of the web server.
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    log.info("launched %s %s as pid %s (log: %s)", name, " ".join(args), proc.pid, log_path)
    return proc.pid


def log_dir() -> Path:
    return settings.DATA_DIR / "logs"


def log_stem(name: str, *args: str) -> str:
    """`ingestreport-12-13`; a long batch is cut and made unique with a hash, since a file name over
    255 bytes would stop the launch itself."""
    stem = "-".join((name, *args))
    if len(stem) <= 120:
        return stem
    return f"{stem[:100]}-etc-{hashlib.sha256(stem.encode()).hexdigest()[:12]}"


def pid_alive(pid: int | None) -> bool:
    """Does a process with this pid exist on this machine? Only for files a process of this host left
    (work folders named by pid); whether a job's runner is alive is judged by its heartbeat, never its pid."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, belongs to someone else
    return True
