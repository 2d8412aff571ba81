"""The one settings module. Every value comes from the environment (or `.env`) with a sane default, and
every value has a row in the README's configuration table."""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")

# Every process that loads the settings (web server, runners, ingesters, commands) creates its files private:
# 0600 files, 0700 folders. Reports and artifacts are health records; other users of the machine get nothing.
os.umask(0o077)

DATA_DIR = Path(env.str("QEEG_DATA_DIR", default=str(BASE_DIR / "data"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    # A fresh clone works without configuration: the key is made once and kept beside the database.
    if key := env.str("SECRET_KEY", default=""):
        return key
    path = DATA_DIR / "secret_key"
    if not path.exists():
        # Several processes may start at once on a fresh folder (a runner and an ingester): each writes its
        # own temporary file and links it into place only if no key is there yet, so all read the same key.
        tmp = path.with_name(f"secret_key.{os.getpid()}.tmp")
        tmp.write_text(secrets.token_urlsafe(50))
        tmp.chmod(0o600)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError:  # no hard links on this file system
            if not path.exists():
                tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
CSRF_FAILURE_VIEW = "qeeg_site.errors.csrf_failure"  # JSON under /api/

# No "daphne" app: it only swaps `runserver` for daphne's, and as an app it is imported by every manage.py
# process (0.5 s and 26 MiB in each runner); `manage.py serve` starts daphne itself.
INSTALLED_APPS = [
    "csp",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "ninja",
    "axes",
    "qeeg_site",
    "jobs",
    "ledger",
    "patients",
    "runs",
    "council",
    "accounts",
    "audit",
]

MIDDLEWARE = [
    "audit.services.ServingMiddleware",  # which request a refusal is of (the access rules see only the user)
    "qeeg_site.errors.ApiJsonErrorsMiddleware",
    "qeeg_site.text_input.UnstorableTextMiddleware",  # a NUL or a lone surrogate: 422, never a 500
    "qeeg_site.head.HeadAsGetMiddleware",  # HEAD wherever GET: views see GET, the answer keeps no body
    "qeeg_site.security.NoStoreMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "qeeg_site.auth.LoginRequiredPagesMiddleware",
    "qeeg_site.htmx.HtmxMiddleware",  # request.htmx (django-htmx); a history restore gets the whole page
    "django.contrib.messages.middleware.MessageMiddleware",
    "qeeg_site.auth.IdleTimeoutMiddleware",  # after messages: it leaves one on the sign-in page
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a lockout into the locked-out page
]

# Served over HTTPS only (behind TLS or a TLS proxy): secure cookies, http -> https redirects and HSTS.
# `manage.py check --deploy` is clean with HTTPS=true, DEBUG=false and real ALLOWED_HOSTS.
HTTPS = env.bool("HTTPS", default=False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = HTTPS
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=HTTPS)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=HTTPS)
# Behind a proxy that terminates TLS, the header it sets to say the client used https (X-Forwarded-Proto).
if proxy_header := env.str("SECURE_PROXY_SSL_HEADER", default=""):
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + proxy_header.upper().replace("-", "_"), "https")
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# Content-Security-Policy (django-csp): scripts, styles, images, fonts and connections from this site only;
# no inline script or style anywhere (htmx's indicator style is in app.css: `includeIndicatorStyles: false`).
# Page images and Swagger's icons use data: URIs for images only.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

ROOT_URLCONF = "qeeg_site.urls"
ASGI_APPLICATION = "qeeg_site.asgi.application"
WSGI_APPLICATION = "qeeg_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "qeeg_site.context_processors.upstream_status",
            ],
        },
    }
]

# SQLite under data/ by default: WAL so the web server reads while a runner writes, a busy timeout, and
# IMMEDIATE transactions so a writer takes the lock up front instead of failing mid-transaction.
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'db.sqlite3'}")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=600)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
            "transaction_mode": "IMMEDIATE",
            "timeout": env.int("SQLITE_BUSY_TIMEOUT_SECONDS", default=20),
        }
    )
    # A file, not :memory:, so tests can hand the database to the runner processes they start.
    DATABASES["default"].setdefault("TEST", {}).setdefault(
        "NAME", str(DATA_DIR / f"test-db-{os.getpid()}.sqlite3")
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "patients:list"
LOGOUT_REDIRECT_URL = "login"
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=12 * 3600)
# Django's database sessions, their look-up compiled once (qeeg_site/sessions.py).
SESSION_ENGINE = "qeeg_site.sessions"
# On top of the absolute age: a session without a request for this long is signed out (qeeg_site/auth.py).
SESSION_IDLE_TIMEOUT_SECONDS = env.int("SESSION_IDLE_TIMEOUT_SECONDS", default=15 * 60)

# Failed sign-ins (login page and admin) counted by django-axes, per username and per address: the next one
# is refused for LOGIN_LOCKOUT_MINUTES (0: until an administrator lifts it, Admin -> Axes -> Access attempts).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "qeeg_site.auth.PermissionsBackend",  # permissions in one query (and the whole answer)
    "django.contrib.auth.backends.ModelBackend",  # only so the sessions it signed in stay valid
]
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=m) if (m := env.int("LOGIN_LOCKOUT_MINUTES", default=15)) else None
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False
# The one reading of a client's address, for the lockout as for the audit trail (audit/services.py).
AXES_CLIENT_IP_CALLABLE = "audit.services.client_ip"

# A signed-in user's (or token's) refusals written one by one in each window; the rest are counted and the
# count is written as one row (audit/bounds.py): a flood of 404s cannot fill the append-only trail.
AUDIT_REPEATS_WRITTEN = env.int("AUDIT_REPEATS_WRITTEN", default=200)
AUDIT_REPEAT_WINDOW_MINUTES = env.int("AUDIT_REPEAT_WINDOW_MINUTES", default=10)
if AUDIT_REPEAT_WINDOW_MINUTES < 1 or AUDIT_REPEATS_WRITTEN < 0:
    raise ImproperlyConfigured(
        "AUDIT_REPEAT_WINDOW_MINUTES must be at least 1, AUDIT_REPEATS_WRITTEN 0 or more."
    )

# The reverse proxies in front of the app, as addresses or networks (e.g. `127.0.0.1` or `10.0.0.0/24`): only a
# request that arrives from one of them has its X-Forwarded-For read, right to left past every listed proxy,
# to the client's address. Empty: no header is believed (a client cannot make up its own address).
TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=[])
for _proxy in TRUSTED_PROXIES:
    try:
        ipaddress.ip_network(_proxy, strict=False)
    except ValueError:
        raise ImproperlyConfigured(
            f"TRUSTED_PROXIES: {_proxy!r} is not an address or a network (e.g. 10.0.0.1 or 10.0.0.0/24)."
        ) from None
# The header those proxies write the client's address into: `X-Forwarded-For` or RFC 7239's `Forwarded`. Only
# that one is read, by the same rule; the other is ignored, since a proxy passes through untouched whatever a
# client wrote into a header it does not write itself.
TRUSTED_PROXY_HEADER = env.str("TRUSTED_PROXY_HEADER", default="X-Forwarded-For").strip()
if TRUSTED_PROXY_HEADER.lower() not in ("x-forwarded-for", "forwarded"):
    raise ImproperlyConfigured(
        f"TRUSTED_PROXY_HEADER must be X-Forwarded-For or Forwarded, not {TRUSTED_PROXY_HEADER!r}."
    )

# API tokens: a new token lasts API_TOKEN_DAYS unless asked otherwise, never more than API_TOKEN_MAX_DAYS.
API_TOKEN_DAYS = env.int("API_TOKEN_DAYS", default=90)
API_TOKEN_MAX_DAYS = env.int("API_TOKEN_MAX_DAYS", default=365)

NINJA_PAGINATION_CLASS = "qeeg_site.pagination.BoundedPageNumberPagination"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
# Served straight from the finders: no collectstatic step between a fresh clone and a running app.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
# Files a browser asks for at the site's root (/favicon.ico), served by whitenoise like the static files.
WHITENOISE_ROOT = BASE_DIR / "static" / "root"

# Uploads are streamed to disk by Django; the caps below are ours. A file over REPORT_MAX_BYTES is not
# written past the cap while the body is parsed (patients/uploads.py), then refused by the upload.
FILE_UPLOAD_PERMISSIONS = 0o600
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
FILE_UPLOAD_HANDLERS = [
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "patients.uploads.ReportSizeCapUploadHandler",
]
REPORT_MAX_BYTES = env.int("REPORT_MAX_BYTES", default=50 * 1024 * 1024)
# The most one request may carry (several reports in one upload); larger ones are refused from their
# Content-Length before the server reads the body (qeeg_site/asgi_guard.py).
REQUEST_MAX_BYTES = env.int("REQUEST_MAX_BYTES", default=2 * REPORT_MAX_BYTES + 1024 * 1024)
REPORT_MAX_PAGES = env.int("REPORT_MAX_PAGES", default=200)
REPORT_RENDER_DPI = env.int("REPORT_RENDER_DPI", default=110)
# Bounds on what one report may cost to read (patients/ingest.py, patients/sandbox.py): a render has at most
# this many pixels (a larger page is rendered coarser), no stream may inflate past this, and each PDF is read
# in a child process with this much address space and time (a measured OCR ingestion peaks near 1.5 GB of
# address space, 0.8 GB resident).
REPORT_MAX_PAGE_PIXELS = env.int("REPORT_MAX_PAGE_PIXELS", default=12_000_000)
REPORT_MAX_STREAM_MB = env.int("REPORT_MAX_STREAM_MB", default=256)
INGEST_MAX_MEMORY_MB = env.int("INGEST_MAX_MEMORY_MB", default=2048)
INGEST_MAX_SECONDS = env.float("INGEST_MAX_SECONDS", default=900.0)
REPORT_OCR_ENABLED = env.bool("REPORT_OCR_ENABLED", default=True)
# A page whose text layer has fewer characters than this is treated as an image and OCR'd.
REPORT_OCR_MIN_CHARS = env.int("REPORT_OCR_MIN_CHARS", default=200)
# ...and so is a page whose images cover at least this share of it (tables pasted in as pictures).
REPORT_OCR_IMAGE_AREA = env.float("REPORT_OCR_IMAGE_AREA", default=0.3)

# Upstream: CLIProxyAPI, and nothing else.
CLIPROXY_BASE_URL = env.str("CLIPROXY_BASE_URL", default="http://127.0.0.1:8317").rstrip("/")
CLIPROXY_API_KEY = env.str("CLIPROXY_API_KEY", default="")
CLIPROXY_CONNECT_TIMEOUT = env.float("CLIPROXY_CONNECT_TIMEOUT", default=5.0)
CLIPROXY_READ_TIMEOUT = env.float("CLIPROXY_READ_TIMEOUT", default=600.0)
CLIPROXY_MAX_ATTEMPTS = env.int("CLIPROXY_MAX_ATTEMPTS", default=5)
CLIPROXY_MAX_RETRY_SECONDS = env.float("CLIPROXY_MAX_RETRY_SECONDS", default=300.0)
CLIPROXY_MAX_COOLDOWN_SECONDS = env.float("CLIPROXY_MAX_COOLDOWN_SECONDS", default=120.0)
CLIPROXY_MODELS_CACHE_SECONDS = env.float("CLIPROXY_MODELS_CACHE_SECONDS", default=30.0)
# The health check (banner, /api/health, /api/models) must answer in seconds, not wait like a completion.
CLIPROXY_HEALTH_TIMEOUT = env.float("CLIPROXY_HEALTH_TIMEOUT", default=2.0)
CLIPROXY_HEALTH_CACHE_SECONDS = env.float("CLIPROXY_HEALTH_CACHE_SECONDS", default=5.0)

# The council: defaults offered by the run wizard; each must be discovered upstream to be used.
COUNCIL_MODELS = env.list("COUNCIL_MODELS", default=["gpt-5", "claude-sonnet-4-5", "gemini-2.5-pro"])
COUNCIL_CONSOLIDATOR = env.str("COUNCIL_CONSOLIDATOR", default="claude-sonnet-4-5")
# The model that writes a run's patient version unless the clinician picks another; empty: the run's consolidator.
PATIENT_VERSION_MODEL = env.str("PATIENT_VERSION_MODEL", default="")
# Each model is its own subscription behind CLIProxyAPI, so the limit that matters is per model: at most
# COUNCIL_PER_MODEL_CONCURRENCY requests to one model in flight from a runner. A stage asks each model one
# thing, so every model of the council is in flight at once. COUNCIL_CONCURRENCY caps the calls of a stage in
# flight together only when an operator sets it (unset or 0: no cap).
COUNCIL_PER_MODEL_CONCURRENCY = max(1, env.int("COUNCIL_PER_MODEL_CONCURRENCY", default=1))
COUNCIL_CONCURRENCY = env.int("COUNCIL_CONCURRENCY", default=0) or None
COUNCIL_JSON_RETRIES = env.int("COUNCIL_JSON_RETRIES", default=2)
COUNCIL_MAX_CONTINUATIONS = env.int("COUNCIL_MAX_CONTINUATIONS", default=2)
COUNCIL_MAX_TOKENS = env.int("COUNCIL_MAX_TOKENS", default=8000)
# Stage 1 may also see the images of up to N pages that needed OCR (painted out); 0 sends text only.
COUNCIL_PAGE_IMAGES = env.int("COUNCIL_PAGE_IMAGES", default=0)

# The vision reader (patients/readers/vision.py): pages the deterministic readers are unsure of go, painted
# out, to this vision-capable model during ingestion; empty = off.
FACTS_VISION_MODEL = env.str("FACTS_VISION_MODEL", default="").strip()
FACTS_VISION_MAX_PAGES = env.int("FACTS_VISION_MAX_PAGES", default=6)
FACTS_VISION_TIMEOUT_SECONDS = env.float("FACTS_VISION_TIMEOUT_SECONDS", default=180.0)
FACTS_VISION_DPI = env.int("FACTS_VISION_DPI", default=200)

# De-identification (council/deid.py): page images leave only painted out ("paint") or never ("off").
DEID_PAGE_IMAGES = env.str("DEID_PAGE_IMAGES", default="off").strip().lower()
if DEID_PAGE_IMAGES not in ("off", "paint"):
    raise ImproperlyConfigured(f"DEID_PAGE_IMAGES must be 'off' or 'paint', not {DEID_PAGE_IMAGES!r}")
# How 03/04/2024 reads in a report that does not show it (a day over 12 settles it per report).
DEID_DATE_ORDER = env.str("DEID_DATE_ORDER", default="mdy").strip().lower()
if DEID_DATE_ORDER not in ("mdy", "dmy"):
    raise ImproperlyConfigured(f"DEID_DATE_ORDER must be 'mdy' or 'dmy', not {DEID_DATE_ORDER!r}")

# Jobs (ingestion, runs): every runner heartbeats; one silent for RUN_STALE_SECONDS is dead, on any host.
RUN_HEARTBEAT_SECONDS = env.float("RUN_HEARTBEAT_SECONDS", default=5.0)
# Per person: runs queued or running at once, and model calls a day (0: no limit). runs/limits.py
RUNS_MAX_IN_FLIGHT_PER_USER = env.int("RUNS_MAX_IN_FLIGHT_PER_USER", default=3)
MODEL_CALLS_PER_USER_PER_DAY = env.int("MODEL_CALLS_PER_USER_PER_DAY", default=200)
RUN_STALE_SECONDS = env.float("RUN_STALE_SECONDS", default=30.0)
# Who this machine is on a job's claim (several hosts may share one PostgreSQL), and how many jobs may be in
# flight at once; more wait queued and start as slots free.
QEEG_HOST_ID = env.str("QEEG_HOST_ID", default=socket.gethostname())
JOBS_MAX_RUNNING = env.int("JOBS_MAX_RUNNING", default=6)
# `serve` starts a warm runner that forks each job's process with Django already set up (jobs/warm.py);
# off: every job starts a new interpreter.
JOBS_WARM_RUNNER = env.bool("JOBS_WARM_RUNNER", default=True)

# Live stream: how often the one per-process reader looks for new run events, and the keep-alive period.
SSE_POLL_SECONDS = env.float("SSE_POLL_SECONDS", default=0.1)
SSE_KEEPALIVE_SECONDS = env.float("SSE_KEEPALIVE_SECONDS", default=15.0)
# How often each web process looks, in one query for all its open streams, whether the sessions and tokens
# that signed them in still stand: a sign-out in another tab ends a stream within this (runs/stream.py).
SSE_SIGN_OUT_SECONDS = env.float("SSE_SIGN_OUT_SECONDS", default=2.0)
# The live stream's groups are in-process: each web process's one feed fills them from the database (polling
# on SQLite, LISTEN/NOTIFY on PostgreSQL), so no channel layer server is needed (runs/feed.py). The capacity is
# per stream; a stream reads the table for anything its group could not hold.
CHANNEL_LAYERS = {"default": {"BACKEND": "runs.feed.RunStreamLayer", "CONFIG": {"capacity": 2000}}}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"httpx": {"level": "WARNING"}, "daphne": {"level": "WARNING"}, "axes": {"level": "WARNING"}},
}
