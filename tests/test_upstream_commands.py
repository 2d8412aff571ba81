"""`manage.py checkupstream` for operators and `manage.py fakeupstream` for newcomers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from io import StringIO
from pathlib import Path

import httpx
from django.core.management import call_command

MANAGE = Path(__file__).resolve().parent.parent / "manage.py"


def run_check() -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("checkupstream", stdout=out)
    except SystemExit as exc:
        return int(exc.code), out.getvalue()
    return 0, out.getvalue()


def test_checkupstream_prints_models_table(fake_upstream, settings):
    settings.COUNCIL_MODELS = ["gpt-5", "claude-sonnet-4-5", "gpt-5o"]
    code, out = run_check()
    assert code == 0
    assert "Reachable:  yes" in out
    assert "Auth:       no key needed" in out
    assert re.search(r"^gpt-5\s+openai\s+2023-11-14\s+council$", out, re.MULTILINE)
    assert re.search(r"^claude-sonnet-4-5\s+anthropic\s+-\s+council, consolidator$", out, re.MULTILINE)
    assert re.search(r"^gpt-5o\s+.*NOT AVAILABLE$", out, re.MULTILINE)


def test_checkupstream_with_key(fake_upstream, settings):
    fake_upstream.set_api_keys(["k1"])
    settings.CLIPROXY_API_KEY = "k1"
    code, out = run_check()
    assert code == 0
    assert "Auth:       accepted" in out


def test_checkupstream_fails_when_unauthorized(fake_upstream):
    fake_upstream.set_api_keys(["k1"])
    code, out = run_check()
    assert code == 1
    assert "REJECTED" in out
    assert "Missing API key" in out


def test_checkupstream_fails_fast_when_stopped(fake_upstream):
    fake_upstream.stop()
    code, out = run_check()
    assert code == 1
    assert "Reachable:  no" in out
    assert "connection_refused" in out


def test_fakeupstream_command_serves_and_says_it_is_fake():
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    child = subprocess.Popen(
        [sys.executable, str(MANAGE), "fakeupstream", "--port", "0", "--api-key", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        seen = []
        for line in child.stdout:
            seen.append(line)
            if line.startswith("Listening on "):
                break
        banner = "".join(seen)
        assert "FAKE UPSTREAM" in banner and "NOT a real model" in banner
        base_url = re.search(r"Listening on (\S+)", banner).group(1)
        assert httpx.get(f"{base_url}/v1/models").status_code == 401
        listing = httpx.get(f"{base_url}/v1/models", headers={"Authorization": "Bearer demo"}).json()
        assert "gpt-5" in {m["id"] for m in listing["data"]}
    finally:
        child.send_signal(signal.SIGTERM)
        rest, _ = child.communicate(timeout=10)
    assert child.returncode == 0
    assert "stopped" in rest


def test_fakeupstream_reports_a_busy_port(fake_upstream):
    result = subprocess.run(
        [sys.executable, str(MANAGE), "fakeupstream", "--port", str(fake_upstream.port)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Cannot listen" in result.stderr
