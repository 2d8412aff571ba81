"""Production settings: no-store on everything with patient data, a CSP header on pages, HSTS and secure cookies
behind HTTPS=true, private files, and `check --deploy` clean with production settings."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from patients import services
from patients.models import Patient
from tests.synthetic_reports import make_qeeg_pdf

MANAGE = Path(__file__).resolve().parents[1] / "manage.py"


def _no_store(reply) -> bool:
    return "no-store" in reply.get("Cache-Control", "") and "private" in reply["Cache-Control"]


@pytest.mark.django_db
def test_pages_api_and_downloads_are_never_stored(clinician_client, api, clinician, tmp_path, launched):
    patient = services.patient_create(label="SYNTH-CACHE", user=clinician)
    pdf = tmp_path / "r.pdf"
    make_qeeg_pdf(pdf, pages=1, image_only_pages=())
    [report] = services.report_upload(
        patient=patient, files=[SimpleUploadedFile("r.pdf", pdf.read_bytes(), "application/pdf")]
    )
    for reply in (
        clinician_client.get("/"),
        clinician_client.get(f"/patients/{patient.pk}/"),
        clinician_client.get(f"/reports/{report.pk}/original/"),
        api.get("/api/patients"),
        api.get(f"/api/reports/{report.pk}/original"),
        api.get("/api/patients/-1"),  # errors too
        clinician_client.get("/login/"),
    ):
        assert reply.status_code in (200, 302, 404), reply.status_code
        assert _no_store(reply), (reply.request["PATH_INFO"], reply.get("Cache-Control"))


@pytest.mark.django_db
def test_static_files_stay_cacheable(outsider):
    reply = outsider.get("/static/css/app.css")
    assert reply.status_code == 200
    assert "no-store" not in reply.get("Cache-Control", "")


@pytest.mark.django_db
def test_pages_carry_a_strict_csp(clinician_client):
    policy = clinician_client.get("/")["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";") if d.strip())
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert "unsafe" not in policy


def test_htmx_is_told_not_to_inject_its_indicator_style():
    base = (Path(__file__).resolve().parents[1] / "templates" / "base.html").read_text()
    config = re.search(r"""<meta name="htmx-config" content='([^']*)'>""", base)
    assert config and json.loads(config.group(1))["includeIndicatorStyles"] is False
    css = (Path(__file__).resolve().parents[1] / "static" / "css" / "app.css").read_text()
    assert ".htmx-request .htmx-indicator" in css  # the indicator still works, from our own style sheet


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE",)}
    environment |= env
    return subprocess.run(
        [sys.executable, str(MANAGE), *args], env=environment, capture_output=True, text=True, timeout=120
    )


PRODUCTION = {
    "DEBUG": "false",
    "HTTPS": "true",
    "ALLOWED_HOSTS": "qeeg.clinic.example",
    "SECRET_KEY": "k" * 20 + "-production-secret-key-of-sufficient-length-and-variety-0123456789",
}


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    done = _manage("check", "--deploy", "--fail-level", "WARNING", QEEG_DATA_DIR=str(tmp_path), **PRODUCTION)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout


def test_check_deploy_warns_without_https(tmp_path):
    """The test above can fail: with the defaults (plain http on loopback) the same check complains."""
    done = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        QEEG_DATA_DIR=str(tmp_path),
        **PRODUCTION | {"HTTPS": ""},
    )
    assert done.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in done.stderr + done.stdout


def test_https_turns_on_hsts_and_secure_cookies(tmp_path):
    code = (
        "from django.conf import settings as s; "
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS,"
        " s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SECURE_PROXY_SSL_HEADER)"
    )
    done = _manage(
        "shell",
        "-c",
        code,
        QEEG_DATA_DIR=str(tmp_path),
        **PRODUCTION,
        SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto",
    )
    assert (
        done.stdout.strip().splitlines()[-1]
        == "True True True 31536000 True ('HTTP_X_FORWARDED_PROTO', 'https')"
    )
    done = _manage(
        "shell", "-c", code.replace(", s.SECURE_PROXY_SSL_HEADER", ""), QEEG_DATA_DIR=str(tmp_path)
    )
    assert done.stdout.strip().splitlines()[-1] == "False False False 0 False"


@pytest.mark.django_db(transaction=True)
def test_files_and_folders_are_created_private(subprocess_env, data_dir, launched, tmp_path):
    """Uploaded in this process, ingested in an `ingestreport` child started with a lax umask: every file the
    app made is 0600 and every folder 0700."""
    patient = Patient.objects.create(label="SYNTH-PRIVATE")
    pdf = tmp_path / "r.pdf"
    make_qeeg_pdf(pdf, pages=2, image_only_pages=())
    [report] = services.report_upload(
        patient=patient, files=[SimpleUploadedFile("r.pdf", pdf.read_bytes(), "application/pdf")]
    )
    subprocess_env["REPORT_OCR_ENABLED"] = "false"
    done = subprocess.run(
        [sys.executable, str(MANAGE), "ingestreport", str(report.pk)],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.umask(0o022),  # what a shell usually hands a process
    )
    assert done.returncode == 0, done.stderr
    made = [p for p in (data_dir / "reports").rglob("*")]
    assert any(p.name == "text.md" for p in made) and any(p.suffix == ".png" for p in made)
    for path in [data_dir / "reports", *made]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
