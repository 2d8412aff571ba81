"""Benchmark the API and pages over a large clinic: 10,000 patients, 50,000 runs, one patient with 200 runs.

    uv run python benchmarks/api_bench.py [--quick] [--clinic DIR] [--server-root TREE] [--only TEXT]

1. A throw-away data folder: the rows made in bulk, and one real run made by the real pipeline against the
   fake upstream (so its page has every stage's artifacts to show), belonging to the patient with 200 runs.
   Every request is a CLINICIAN's (the API by bearer token, the pages signed in), as clinicians use it: the
   access-filtered path. The clinic has 20 clinicians, each patient assigned to two of them; the benchmark's
   clinician has 5,000 patients, the one with 200 runs among them.
   `--clinic DIR` makes the clinic in DIR and keeps it, or uses the one already made there; `--server-root`
   serves another copy of the project (an older commit) on it, to compare code pair by pair.
2. Queries per request, in this process (Django's test client): each list at page sizes 10, 50 and 100.
3. The app under daphne (one process, as `manage.py serve` runs it) on 127.0.0.1: each endpoint asked by 1
   client in turn, then by 10 clients at once; p50 / p95 of the response time and requests per second.
4. Two daphne processes on two ports, 10 clients spread over both: the throughput of the patient list, to
   compare with one process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, PartResult, Target, cpu_seconds, pct, remove, throwaway_django

from tests.stream_helpers import daphne_process

PATIENTS = 10_000
RUNS = 50_000
BIG_PATIENT_RUNS = 200
REASONS = ["attention concerns", "memory complaints", "sleep problems", "headaches", "anxiety", "mood"]
PASSWORD = "bench-pass-123"
CLINICIANS = 20  # the benchmark's clinician is the first; each patient is assigned to two


def make_clinic(fake) -> dict:
    """The rows, in bulk; returns the ids the requests use."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.utils import timezone

    from council.stages import STEPS
    from patients.models import Patient, Report, fold
    from qeeg_site.models import ApiToken
    from qeeg_site.roles import CLINICIANS as CLINICIANS_ROLE
    from runs.models import Artifact, Run
    from tests.run_helpers import run_pipeline_here

    rng = random.Random(5)
    clinicians = [
        get_user_model().objects.create_user(
            username="bench" if n == 0 else f"clinician-{n}", password=PASSWORD if n == 0 else None
        )
        for n in range(CLINICIANS)
    ]
    Group.objects.get(name=CLINICIANS_ROLE).user_set.add(*clinicians)
    user = clinicians[0]
    _, token = ApiToken.issue(user=user, name="bench")
    Patient.objects.bulk_create(
        [
            Patient(
                label=f"P-{i:05d}",
                label_folded=fold(f"P-{i:05d}"),  # what save() keeps; bulk_create skips save()
                age=rng.randint(5, 90),
                referral_reason=rng.choice(REASONS),
                notes=f"Seen in clinic {rng.randint(1, 40)}; follow-up {rng.choice(['yes', 'no'])}.",
            )
            for i in range(PATIENTS)
        ],
        batch_size=2000,
    )
    patient_ids = list(Patient.objects.order_by("pk").values_list("pk", flat=True))
    # Each patient has two clinicians: an even one the bench clinician and another, an odd one two others.
    others = CLINICIANS - 1
    assigned = Patient.clinicians.through
    assigned.objects.bulk_create(
        [
            assigned(patient_id=pk, user_id=clinicians[n].pk)
            for i, pk in enumerate(patient_ids)
            for n in ((0, 1 + i % others) if i % 2 == 0 else (1 + i % others, 1 + (i + 1) % others))
        ],
        batch_size=5000,
    )
    now = timezone.now()
    Report.objects.bulk_create(
        [
            Report(
                patient_id=pk, original_name="report.pdf", sha256=f"{pk:064x}", status="ready", page_count=6
            )
            for pk in patient_ids
        ],
        batch_size=2000,
    )
    report_of = dict(Report.objects.values_list("patient_id", "pk"))
    big = patient_ids[len(patient_ids) // 2]  # an even one: the bench clinician's
    council = ["gpt-5", "claude-sonnet-4-5", "gemini-2.5-pro"]
    labels = {"A": council[0], "B": council[1], "C": council[2]}
    owners = [big] * BIG_PATIENT_RUNS + [
        rng.choice(patient_ids) for _ in range(RUNS - BIG_PATIENT_RUNS - 1)
    ]  # one more run comes from the real pipeline below
    Run.objects.bulk_create(
        [
            Run(
                patient_id=pk,
                report_id=report_of[pk],
                council_models=council,
                consolidator=council[1],
                label_map=labels,
                prompt_versions=STEPS.prompt_versions(),
                status="complete",
                stages_done=STEPS.last.number,
                current_stage=STEPS.last.number,
                started_at=now,
                finished_at=now,
            )
            for pk in owners
        ],
        batch_size=2000,
    )
    # The big patient's runs have their artifacts, as finished runs do (the files are not read by lists).
    artifacts = []
    for run_id in Run.objects.filter(patient_id=big).values_list("pk", flat=True):
        for step in STEPS:
            takers = [council[1]] if step.by_consolidator else council
            for model in takers:
                failed = step.number == 1 and model == council[2] and run_id % 7 == 0
                artifacts.append(
                    Artifact(
                        run_id=run_id,
                        stage=step.number,
                        model_id=model,
                        kind=step.kind.value,
                        status="failed" if failed else "ok",
                        error="timed out" if failed else "",
                        file_path="" if failed else f"artifacts/{run_id}/stage-{step.number}/{model}.md",
                    )
                )
    Artifact.objects.bulk_create(artifacts, batch_size=2000)
    # One real run, every stage written by the pipeline, on the big patient's report.
    real = Run.objects.create(
        patient_id=big,
        report=_ready_text_report(Patient.objects.get(pk=big)),
        council_models=council,
        consolidator=council[1],
        label_map=labels,
        prompt_versions=STEPS.prompt_versions(),
    )
    code, output = run_pipeline_here(real)
    if code != 0:
        raise RuntimeError(f"the real run failed:\n{output[-2000:]}")
    return {"token": token, "big_patient": big, "run": real.pk}


def _ready_text_report(patient):
    import tempfile

    from pipeline_bench import ready_text_report

    with tempfile.TemporaryDirectory() as folder:
        return ready_text_report(patient, Path(folder))


def endpoints(ids: dict) -> dict[str, str]:
    return {
        "GET /api/patients": "/api/patients",
        "GET /api/patients?q=attention": "/api/patients?q=attention",
        "GET /api/patients?q=P-0421": "/api/patients?q=P-0421",
        "GET /api/patients/{id}/runs (200 runs)": f"/api/patients/{ids['big_patient']}/runs",
        "GET / (HTML patient list)": "/",
        "GET /?q=attention (HTML search)": "/?q=attention",
        "GET /runs/{id}/ (HTML run page)": f"/runs/{ids['run']}/",
    }


def query_counts(ids: dict, chosen: dict[str, str]) -> list[dict]:
    """Queries per request at several page sizes (Django's test client, in this process)."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    api = Client(headers={"Authorization": f"Bearer {ids['token']}"}, HTTP_HOST="127.0.0.1")
    pages = Client(HTTP_HOST="127.0.0.1")
    pages.force_login(get_user_model().objects.get(username="bench"))
    rows = []
    for name, url in chosen.items():
        client = api if url.startswith("/api/") else pages
        sizes = [10, 50, 100] if url.startswith("/api/patients") and "/runs" not in url else [None]
        counts = {}
        for size in sizes:
            target = url if size is None else f"{url}{'&' if '?' in url else '?'}page_size={size}"
            client.get(target)  # warm (token last-use write, caches)
            with CaptureQueriesContext(connection) as queries:
                response = client.get(target)
            if response.status_code != 200:
                raise RuntimeError(f"{target}: {response.status_code} {response.content[:300]!r}")
            counts[str(size or "-")] = len(queries)
        rows.append({"endpoint": name, "queries_by_page_size": counts, "queries": max(counts.values())})
    return rows


async def _client(base: str, token: str):
    import httpx

    client = httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    pages = httpx.AsyncClient(base_url=base, timeout=60)
    login = await pages.get("/login/")
    csrf = pages.cookies.get("csrftoken")
    answer = await pages.post(
        "/login/",
        data={"username": "bench", "password": PASSWORD, "csrfmiddlewaretoken": csrf},
        headers={"Referer": f"{base}/login/"},
    )
    if answer.status_code not in (200, 302) or "sessionid" not in pages.cookies:
        raise RuntimeError(f"sign-in failed: {login.status_code} {answer.status_code}")
    return client, pages


async def _timed(clients: list, url: str, per_client: int) -> tuple[list[float], float]:
    async def one(api, pages) -> list[float]:
        client = api if url.startswith("/api/") else pages
        times = []
        for _ in range(per_client):
            started = time.perf_counter()
            response = await client.get(url)
            times.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"{url}: {response.status_code}")
        return times

    started = time.perf_counter()
    results = await asyncio.gather(*(one(api, pages) for api, pages in clients))
    wall = time.perf_counter() - started
    return [t for r in results for t in r], wall


async def latency_rows(
    bases: list[str], ids: dict, chosen: dict[str, str], *, requests: int, server_pid: int
) -> list[dict]:
    made = [await _client(base, ids["token"]) for base in bases for _ in range(10)]
    rows = []
    try:
        for name, url in chosen.items():
            await _timed(made[:1], url, 5)  # warm
            cpu_before = cpu_seconds(server_pid)
            one, wall_one = await _timed(made[:1], url, requests)
            cpu_one = cpu_seconds(server_pid) - cpu_before
            ten, wall_ten = await _timed(made[:10], url, max(5, requests // 5))
            rows.append(
                {
                    "endpoint": name,
                    "p50_ms_1_client": round(1000 * pct(one, 0.50), 1),
                    "p95_ms_1_client": round(1000 * pct(one, 0.95), 1),
                    "p50_ms_10_clients": round(1000 * pct(ten, 0.50), 1),
                    "p95_ms_10_clients": round(1000 * pct(ten, 0.95), 1),
                    "req_per_s_1_client": round(len(one) / wall_one, 1),
                    # The server's CPU per request (1 client): steadier than the latencies on a busy machine.
                    "server_cpu_ms_per_request": round(1000 * cpu_one / len(one), 2),
                    "req_per_s_10_clients": round(len(ten) / wall_ten, 1),
                }
            )
    finally:
        for api, pages in made:
            await api.aclose()
            await pages.aclose()
    return rows


async def throughput(bases: list[str], ids: dict, url: str, *, per_client: int) -> float:
    made = [await _client(bases[i % len(bases)], ids["token"]) for i in range(10)]
    try:
        await _timed(made, url, 3)
        times, wall = await _timed(made, url, per_client)
    finally:
        for api, pages in made:
            await api.aclose()
            await pages.aclose()
    return round(len(times) / wall, 1)


def _clinic(fake, folder: str | None) -> tuple[Path, dict, str]:
    """Django set up on the clinic's data folder: a new throw-away one, or `folder` (made there the first
    time and kept). Returns the folder, the ids the requests use, and how the clinic came to be."""
    if folder is None:
        data_dir = throwaway_django("api", CLIPROXY_BASE_URL=fake.base_url)
    else:
        data_dir = Path(folder).resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        throwaway_django("api", data_dir, CLIPROXY_BASE_URL=fake.base_url)
        made = data_dir / "clinic.json"
        if made.exists():
            return data_dir, json.loads(made.read_text()), f"the clinic kept in {data_dir}"
    started = time.perf_counter()
    ids = make_clinic(fake)
    if folder is not None:
        (data_dir / "clinic.json").write_text(json.dumps(ids))
    return data_dir, ids, f"made in {time.perf_counter() - started:.0f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests per endpoint")
    parser.add_argument("--clinic", metavar="DIR", help="make the clinic in DIR and keep it, or use it again")
    parser.add_argument("--server-root", metavar="TREE", help="serve this copy of the project instead")
    parser.add_argument("--only", metavar="TEXT", help="only the endpoints whose name holds TEXT (a,b,…)")
    args = parser.parse_args()
    requests = 40 if args.quick else 200

    from tests.fake_upstream.server import FakeUpstream

    fake = FakeUpstream().start()
    result = PartResult("api")
    data_dir = None
    try:
        data_dir, ids, made = _clinic(fake, args.clinic)
        result.notes.append(
            f"{PATIENTS:,} patients, {RUNS:,} runs, one patient with {BIG_PATIENT_RUNS + 1} runs ({made}); "
            f"every request a clinician's, with {PATIENTS // 2:,} patients assigned; SQLite, one daphne "
            "process per server" + (f", serving {args.server_root}" if args.server_root else "")
        )
        wanted = [w for w in (args.only or "").split(",") if w]
        chosen = {
            name: url for name, url in endpoints(ids).items() if not wanted or any(w in name for w in wanted)
        }
        counts = {row["endpoint"]: row for row in query_counts(ids, chosen)}
        from django.db import connections

        connections.close_all()
        env = dict(os.environ)
        root = Path(args.server_root).resolve() if args.server_root else ROOT
        with daphne_process(env, stderr=subprocess.DEVNULL, cwd=root) as (first, server):
            rows = asyncio.run(latency_rows([first], ids, chosen, requests=requests, server_pid=server.pid))
            if not wanted:
                one_process = asyncio.run(throughput([first], ids, "/api/patients", per_client=requests // 4))
                with daphne_process(env, stderr=subprocess.DEVNULL, cwd=root) as (second, _):
                    two_processes = asyncio.run(
                        throughput([first, second], ids, "/api/patients", per_client=requests // 4)
                    )
        for row in rows:
            row["queries"] = counts[row["endpoint"]]["queries"]
            row["queries_by_page_size"] = counts[row["endpoint"]]["queries_by_page_size"]
            result.rows.append(row)
            result.targets.append(
                Target(f"p95 at 1 client, {row['endpoint']}", row["p95_ms_1_client"], 25, "ms")
            )
            result.targets.append(Target(f"queries per request, {row['endpoint']}", row["queries"], 5))
            sizes = row["queries_by_page_size"]
            if len(sizes) > 1:
                result.targets.append(
                    Target(
                        f"queries constant in page size, {row['endpoint']}",
                        max(sizes.values()) - min(sizes.values()),
                        0,
                    )
                )
        if not wanted:
            result.rows.append(
                {
                    "endpoint": "GET /api/patients, 10 clients: 1 vs 2 server processes",
                    "req_per_s_1_process": one_process,
                    "req_per_s_2_processes": two_processes,
                }
            )
            result.targets.append(
                Target(
                    "throughput, 2 processes ÷ 1 (10 clients)",
                    round(two_processes / one_process, 2),
                    1.1,
                    "x",
                    below=False,
                )
            )
    finally:
        fake.stop()
        if data_dir is not None and args.clinic is None:
            remove(data_dir)
    result.emit()


if __name__ == "__main__":
    main()
