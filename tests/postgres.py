"""A real PostgreSQL server for the tests that need one: several processes (web servers, runners) sharing one
database, as several hosts do in production.

Where the server comes from:
- `QEEG_TEST_POSTGRES_URL` (a role with CREATEDB, e.g. `postgres://qeeg_test:pw@127.0.0.1:54329/postgres`);
  `.ci/run` starts a throw-away cluster with this module and exports it:
      python -m tests.postgres start DIR     # prints the URL
      python -m tests.postgres stop DIR
- unset, and `CI` is set: the tests that need it fail (CI must not skip them quietly);
- unset otherwise: the session starts a throw-away cluster itself when Debian's server is installed
  (/usr/lib/postgresql/*/bin), else those tests are skipped with the reason.

The `postgres_db` fixture gives a test a fresh, migrated database of its own (cloned from a template migrated
once per session) with committed rows, not pytest-django's per-test transaction: the test's own ORM calls and
every child process it starts with `postgres_db.env` read and write the same rows. A test using it must not
also ask for `db`/`transactional_db`.

The cluster part uses the standard library only, so `.ci/run` can call it before anything else is set up.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROLE = "qeeg_test"
ROOT = Path(__file__).resolve().parent.parent


class ClusterError(RuntimeError):
    pass


def server_bin() -> Path | None:
    """The newest installed Debian PostgreSQL server's bin folder, if any."""
    found = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin") if Path(p, "initdb").exists()]
    if not found:
        return None
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)


def _as_owner(args: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; root runs it as the `postgres` user the Debian package creates.
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def _run(args: list[str]) -> None:
    done = subprocess.run(_as_owner(args), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise ClusterError(f"{' '.join(args[:2])} failed ({done.returncode}): {done.stderr or done.stdout}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_cluster(root: Path) -> str:
    """initdb into `root/data`, start it on a free loopback port, make a CREATEDB role; returns its URL."""
    pg = server_bin()
    if pg is None:
        raise ClusterError("PostgreSQL is not installed (apt-get install postgresql)")
    root.mkdir(parents=True, exist_ok=True)
    sock, password = root / "sock", secrets.token_hex(16)
    sock.mkdir(exist_ok=True)
    pwfile = root / "pw"
    pwfile.write_text(secrets.token_hex(16) + "\n")
    pwfile.chmod(0o600)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        for path in (sock, pwfile):
            shutil.chown(path, "postgres")
    _run(
        [
            str(pg / "initdb"),
            "-D",
            str(root / "data"),
            "-U",
            "postgres",
            "--pwfile",
            str(pwfile),
            "--auth-local=trust",  # the socket folder is the owner's alone
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]
    )
    pwfile.unlink()  # the superuser is reached through the socket only; nobody needs its password
    for attempt in range(3):
        port = _free_port()
        # A throw-away cluster: durability off, loopback only.
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={sock} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        try:
            _run([str(pg / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "log"), "-w", "-t", "30",
                  "-o", options, "start"])  # fmt: skip
            break
        except ClusterError:
            if attempt == 2:
                log = root / "log"
                raise ClusterError(log.read_text() if log.exists() else "pg_ctl start failed") from None
    sql = f"CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD '{password}'"
    _run([str(pg / "psql"), "-h", str(sock), "-p", str(port), "-U", "postgres", "-d", "postgres",
          "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])  # fmt: skip
    url = f"postgres://{ROLE}:{password}@127.0.0.1:{port}/postgres"
    (root / "url").write_text(url + "\n")
    return url


def stop_cluster(root: Path) -> None:
    pg = server_bin()
    if pg is not None and (root / "data" / "postmaster.pid").exists():
        with contextlib.suppress(ClusterError):
            _run([str(pg / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "-w", "stop"])
    shutil.rmtree(root, ignore_errors=True)


# ---- pytest fixtures (registered in tests/conftest.py) ----

try:
    import pytest
except ImportError:  # `python -m tests.postgres` from a bare interpreter needs only the part above
    pytest = None


@dataclass
class PostgresServer:
    url: str  # a database to connect to for CREATE/DROP DATABASE (the maintenance database)

    def url_for(self, name: str) -> str:
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(path=f"/{name}"))

    def execute(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(_libpq_url(self.url), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql)


def _libpq_url(url: str) -> str:
    return "postgresql" + url[len("postgres") :] if url.startswith("postgres://") else url


@dataclass
class SharedDatabase:
    """A migrated PostgreSQL database of one test's own, shared with the processes it starts."""

    url: str
    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)

    def child_env(self, **extra: str) -> dict[str, str]:
        """Environment for a child process (daphne, `manage.py runpipeline`, …) on this database."""
        return {**self.env, **extra}


def _fresh_name(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"


if pytest is not None:

    @pytest.fixture(scope="session")
    def postgres_server() -> Iterator[PostgresServer]:
        url = os.environ.get("QEEG_TEST_POSTGRES_URL", "").strip()
        if url:
            yield PostgresServer(url)
            return
        if os.environ.get("CI"):
            pytest.fail(
                "CI is set but QEEG_TEST_POSTGRES_URL is not: .ci/run starts PostgreSQL and exports it; "
                "a CI run must not skip the PostgreSQL tests"
            )
        if server_bin() is None:
            pytest.skip(
                "no PostgreSQL for the multi-process tests: set QEEG_TEST_POSTGRES_URL to a role with "
                "CREATEDB, or install Debian's postgresql so the tests start a throw-away cluster"
            )
        root = Path(tempfile.mkdtemp(prefix="qeeg-pg-"))
        try:
            url = start_cluster(root)
        except ClusterError as exc:
            stop_cluster(root)
            pytest.fail(f"could not start a throw-away PostgreSQL cluster: {exc}")
        try:
            yield PostgresServer(url)
        finally:
            stop_cluster(root)

    @pytest.fixture(scope="session")
    def postgres_template(postgres_server: PostgresServer, tmp_path_factory) -> Iterator[str]:
        """A database migrated once per session; each test's database is a copy of it."""
        name = _fresh_name("qeeg_template")
        postgres_server.execute(f"CREATE DATABASE {name}")
        env = dict(
            os.environ,
            DATABASE_URL=postgres_server.url_for(name),
            QEEG_DATA_DIR=str(tmp_path_factory.mktemp("pg-template-data")),
        )
        done = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            postgres_server.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            pytest.fail(f"migrating the PostgreSQL template failed:\n{done.stderr}")
        try:
            yield name
        finally:
            postgres_server.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    @pytest.fixture
    def postgres_db(
        postgres_server: PostgresServer, postgres_template: str, data_dir: Path, django_db_blocker
    ) -> Iterator[SharedDatabase]:
        """This test's own migrated PostgreSQL database; the test's Django connection points at it too."""
        import environ
        from django.db import connections
        from django.db.utils import load_backend

        name = _fresh_name("qeeg_test")
        postgres_server.execute(f"CREATE DATABASE {name} TEMPLATE {postgres_template}")
        url = postgres_server.url_for(name)
        config = connections.configure_settings({"default": environ.Env.db_url_config(url)})["default"]
        with django_db_blocker.unblock():
            previous = connections["default"]
            shared = load_backend(config["ENGINE"]).DatabaseWrapper(config, "default")
            connections["default"] = shared
            try:
                yield SharedDatabase(
                    url=url,
                    data_dir=data_dir,
                    env=dict(os.environ, DATABASE_URL=url, QEEG_DATA_DIR=str(data_dir)),
                )
            finally:
                shared.close()
                connections["default"] = previous
                postgres_server.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    usage = "usage: python -m tests.postgres start|stop DIR"
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
        sys.exit(usage)
    folder = Path(sys.argv[2])
    if sys.argv[1] == "start":
        try:
            print(start_cluster(folder))
        except ClusterError as exc:
            stop_cluster(folder)
            sys.exit(f"PostgreSQL: {exc}")
    else:
        stop_cluster(folder)
