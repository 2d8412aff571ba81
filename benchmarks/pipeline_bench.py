"""Benchmark the council pipeline against the fake upstream: overhead over the models' own latency, runner
start, and the characters every run sends.

    uv run python benchmarks/pipeline_bench.py [--quick] [--part pipeline|prompts]

pipeline: every model answers after a fixed latency L (1 s), so a run's physical limit is 6 x L (six stages,
each as slow as its slowest call). Runs are started the way the web app starts them (`run_start` launches
`manage.py runpipeline <id>` as a child process); the figures come from the run's own events:
  spawn → claim   the `queued` event → the runner's `running` event (process start, Django, claim);
  run ÷ 6L        the `running` event → the `complete` event, divided by 6 x L;
  claim → Stage 1 the `running` event → the first `stage_started` (reading and de-identifying the report);
  overhead/stage  (stage_started → stage_finished) - L, and the gap between one stage's end and the next's start;
  exit            the `complete` event → the runner process gone.
Cases: one run of 3, 5 and 8 models; 4 runs of 5 models at once; runners forked by the warm runner, as
`manage.py serve` starts them (jobs/warm.py), and one run of 3 whose runner starts cold (no server running).

prompts: the fake answers at once; every request body it received is read back, per run: prompt characters
per stage and per run, and the share of them that is a prefix shared with an earlier call of the same run
(what a provider's prompt cache can serve). With 3, 5 and 8 models, and with long (real-length) replies.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PartResult, Target, median, remove, throwaway_django

from council.deid import shared_start  # how many leading characters two prompts share

STAGES = 6
SITES = [
    "Fp1",
    "Fp2",
    "F7",
    "F3",
    "Fz",
    "F4",
    "F8",
    "T3",
    "C3",
    "Cz",
    "C4",
    "T4",
    "T5",
    "P3",
    "Pz",
    "P4",
    "T6",
    "O1",
    "O2",
]
BANDS = ["Delta", "Theta", "Alpha", "Beta", "High beta"]
TERMINAL = {"complete", "failed", "needs_auth", "interrupted", "cancelled"}


def report_text(pages: int = 6, seed: int = 3) -> str:
    """A vendor-like report as dense as a real one (~2,000 characters a page): absolute and relative power
    z-scores over the 19 sites of the 10-20 system, coherence, ERP, in page order."""
    import random

    rng = random.Random(seed)
    out = []
    for page in range(1, pages + 1):
        out.append(f"Synthetic qEEG report (bench) — page {page} of {pages}\n")
        for title in ("Absolute power, eyes closed (z)", "Relative power, eyes open (z)"):
            out.append(f"{title}\nSite  " + "  ".join(f"{b:>9}" for b in BANDS))
            for site in SITES:
                out.append(f"{site:<5} " + "  ".join(f"{rng.gauss(0, 1.3):>9.2f}" for _ in BANDS))
            out.append("")
        pairs = [f"{a}-{b}" for a, b in itertools.pairwise(SITES)][:6]
        out.append("Coherence (z): " + ", ".join(f"{p} {rng.gauss(0, 1.5):.2f}" for p in pairs))
        out.append(
            f"ERP P300 latency {rng.randint(260, 420)} ms, amplitude {rng.uniform(4, 14):.1f} uV; "
            f"peak alpha frequency {rng.uniform(8, 11.5):.1f} Hz; theta/beta ratio {rng.uniform(1.5, 4):.2f}.\n"
        )
    return "\n".join(out)


def _launcher():
    try:
        from jobs import launcher  # where the job runtime keeps it
    except ImportError:
        from qeeg_site import launcher
    return launcher


def ready_text_report(patient, folder: Path):
    """The bench report uploaded as a text file for `patient` and ingested here, ready for the council."""
    from unittest import mock

    from django.core.files.uploadedfile import SimpleUploadedFile

    from patients.models import Report
    from patients.services import report_ingest, report_upload

    path = folder / "bench-report.txt"
    path.write_text(report_text(), encoding="utf-8")
    upload = SimpleUploadedFile(path.name, path.read_bytes(), content_type="text/plain")
    with mock.patch.object(_launcher(), "launch_command", return_value=0):
        [report] = report_upload(patient=patient, files=[upload])
    report_ingest(report_id=report.pk)
    report.refresh_from_db()
    assert report.status == Report.Status.READY, report.error
    return report


# What a clinic records about a real patient: the guard looks for each of them in every prompt, and a given
# name that is also a word ("May") is looked for wherever "may" is written.
IDENTIFIERS = [
    ("name", "Maren May Okonkwo-Lindqvist"),
    ("birth_date", "1990-05-17"),
    ("record_number", "00447192"),
    ("other", "Lindenhof School"),
]


def ready_report(folder: Path):
    from patients.models import Patient, PatientIdentifier

    patient = Patient.objects.create(
        label="BENCH-001", age=34, sex="female", medications="none", referral_reason="attention concerns"
    )
    for kind, value in IDENTIFIERS:
        PatientIdentifier.objects.create(patient=patient, kind=kind, value=value)
    return patient, ready_text_report(patient, folder)


def _events(run_id: int) -> list:
    from runs.models import RunEvent

    return list(RunEvent.objects.filter(run_id=run_id).order_by("id"))


def _status_at(events: list, status: str) -> float | None:
    for event in events:
        if event.kind == "status" and event.data.get("status") == status:
            return event.created_at.timestamp()
    return None


def _runner_pid(run) -> int | None:
    pid = getattr(run, "runner_pid", None)
    if pid is None and getattr(run, "job", None) is not None:
        pid = getattr(run.job, "pid", None)
    return pid


def _start_and_wait(runs: list, timeout: float) -> dict[int, float | None]:
    """Start every run as the web app does, wait for each to end; run id → seconds from its `complete` to
    its runner process being gone (None when unknown)."""
    from runs import services
    from runs.models import Run

    for run in runs:
        services.run_start(run=run)
    deadline = time.monotonic() + timeout
    pids: dict[int, int | None] = {}
    ended: dict[int, tuple[str, float]] = {}  # run id → (final status, when this loop saw it)
    exits: dict[int, float | None] = {}
    next_look = 0.0
    while len(exits) < len(runs) and time.monotonic() < deadline:
        if time.monotonic() >= next_look:
            # The database every 0.1 s only: the fake upstream answers from this process, and a tighter poll
            # took its GIL (1.2 ms of CPU every 20 ms) from the replies being measured.
            next_look = time.monotonic() + 0.1
            waiting = [r.pk for r in runs if r.pk not in ended]
            for run in Run.objects.filter(pk__in=waiting).select_related("job"):
                pids[run.pk] = pids.get(run.pk) or _runner_pid(run)
                if run.status in TERMINAL:
                    ended[run.pk] = (run.status, time.time())
        for pk, (status, seen) in ended.items():  # the process, every 10 ms: a cheap look
            if pk in exits:
                continue
            pid = pids.get(pk)
            if pid is None:
                exits[pk] = None
            elif not _alive(pid):
                exits[pk] = time.time() - (_status_at(_events(pk), status) or seen)
        time.sleep(0.01)
    if len(exits) < len(runs):
        raise RuntimeError(f"runs did not finish within {timeout:.0f} s")
    return exits


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # our child (the launcher's Popen): reap it if it is done
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:  # gone between the two looks
        return False


def _stage_figures(events: list, latency: float) -> tuple[list[float], list[float]]:
    """(per-stage overhead beyond L, gaps between a stage's end and the next stage's start), seconds."""
    started: dict[int, float] = {}
    finished: dict[int, float] = {}
    for event in events:
        if event.kind == "stage_started":
            started[event.stage] = event.created_at.timestamp()
        elif event.kind == "stage_finished":
            finished[event.stage] = event.created_at.timestamp()
    overheads = [finished[s] - started[s] - latency for s in started if s in finished]
    stages = sorted(started)
    gaps = [started[b] - finished[a] for a, b in itertools.pairwise(stages) if a in finished]
    return overheads, gaps


def pipeline_part(fake, patient, report, *, latency: float, repeat: int) -> PartResult:
    from jobs import warm
    from runs import services

    result = PartResult("pipeline")
    # As `manage.py serve` runs them: jobs forked by the warm runner. The last case starts its runner cold, as
    # with no server running (a command line) or JOBS_WARM_RUNNER=false.
    cases = [(3, 1, True), (5, 1, True), (8, 1, True), (5, 4, True), (3, 1, False)]
    for name in [f"bench-model-{i}" for i in range(1, 9)]:
        fake.script(name, latency=latency)
    warm_runner = None
    try:
        for models, at_once, warm_start in cases:
            if warm_start and warm_runner is None:
                warm_runner = warm.start()
                if warm_runner is None:
                    raise RuntimeError("the warm runner did not start")
            elif not warm_start and warm_runner is not None:
                warm_runner.stdin.close()
                warm_runner.wait(10)
                warm_runner = None
            result.rows.append(
                _pipeline_case(services, patient, report, models, at_once, warm_start, latency, repeat)
            )
            row = result.rows[-1]
            limit = 1.10 if at_once == 1 else 1.25
            result.targets.append(
                Target(f"run ÷ 6L, {row['case']}, L = {latency:g} s", row["run_over_6L_median"], limit, "x")
            )
            if warm_start:  # the cold start is the fallback's figure, for comparison: no target
                result.targets.append(
                    Target(f"spawn → claim, {row['case']} (worst)", row["spawn_to_claim_s_worst"], 0.5, "s")
                )
    finally:
        if warm_runner is not None:
            warm_runner.stdin.close()
            warm_runner.wait(10)
    return result


def _pipeline_case(services, patient, report, models, at_once, warm_start, latency, repeat) -> dict:
    """One case's row: `repeat` samples of `at_once` runs of `models` models started together."""
    six_l = STAGES * latency
    council = [f"bench-model-{i}" for i in range(1, models + 1)]
    samples = []
    for _ in range(repeat):
        runs = [
            services.run_create(
                patient=patient, report=report, council_models=council, consolidator=council[0]
            )
            for _ in range(at_once)
        ]
        exits = _start_and_wait(runs, timeout=six_l * 4 + 60)
        for run in runs:
            run.refresh_from_db()
            events = _events(run.pk)
            queued, running = _status_at(events, "queued"), _status_at(events, "running")
            done = _status_at(events, "complete")
            if run.status != "complete" or None in (queued, running, done):
                raise RuntimeError(f"run {run.pk} ended {run.status}: {run.error}")
            overheads, gaps = _stage_figures(events, latency)
            first = min(e.created_at.timestamp() for e in events if e.kind == "stage_started")
            samples.append(
                {
                    "spawn_to_claim_s": running - queued,
                    "claim_to_stage_1_ms": 1000 * (first - running),
                    "run_s": done - running,
                    "stage_overhead_ms": 1000 * (sum(overheads) / len(overheads)),
                    "between_stages_ms": 1000 * (sum(gaps) / len(gaps)) if gaps else 0.0,
                    "exit_s": exits[run.pk],
                }
            )
    ratio = median([s["run_s"] / six_l for s in samples])
    worst = max(s["run_s"] / six_l for s in samples)
    row = {
        "case": f"{at_once} run(s) x {models} models" + ("" if warm_start else ", cold start"),
        "warm_runner": warm_start,
        "models": models,
        "runs_at_once": at_once,
        "L_s": latency,
        "samples": len(samples),
        "run_s_median": round(median([s["run_s"] for s in samples]), 2),
        "run_over_6L_median": round(ratio, 3),
        "run_over_6L_worst": round(worst, 3),
        "spawn_to_claim_s_median": round(median([s["spawn_to_claim_s"] for s in samples]), 3),
        "spawn_to_claim_s_worst": round(max(s["spawn_to_claim_s"] for s in samples), 3),
        "stage_overhead_ms_median": round(median([s["stage_overhead_ms"] for s in samples]), 1),
        "claim_to_stage_1_ms_median": round(median([s["claim_to_stage_1_ms"] for s in samples]), 1),
        "between_stages_ms_median": round(median([s["between_stages_ms"] for s in samples]), 1),
        "complete_to_exit_s_median": (
            round(median([s["exit_s"] for s in samples if s["exit_s"] is not None]), 3)
            if any(s["exit_s"] is not None for s in samples)
            else None
        ),
    }
    return row


# -- prompts ----------------------------------------------------------------------------------------------


def _serialised(body: dict) -> str:
    """A request's prompt as a provider reads it, message by message in order (what a prompt cache keys)."""
    from tests.fake_upstream.replies import message_text
    from tests.fake_upstream.server import _messages_of

    endpoint = "chat/completions" if "messages" in body else "responses"
    return "".join(f"<|{m.get('role')}|>{message_text(m)}" for m in _messages_of(endpoint, body))


def prompt_figures(calls: list) -> dict:
    """Per stage and per run: calls, prompt characters, and the characters that are a prefix shared with an
    earlier call of the run (the longest common prefix with any earlier request, in arrival order), and with
    an earlier call to the same model (what one provider's prompt cache can actually serve: each model is a
    different subscription, so caches are not shared between models)."""
    seen: list[tuple[str, str]] = []
    stages: dict[int, dict[str, int]] = {}
    for call in sorted(calls, key=lambda c: c.at):
        if call.body is None or call.endpoint not in ("chat/completions", "responses"):
            continue
        text = _serialised(call.body)
        shared = max((shared_start(text, earlier) for _, earlier in seen), default=0)
        same = max((shared_start(text, e) for m, e in seen if m == call.model), default=0)
        seen.append((call.model, text))
        row = stages.setdefault(
            call.stage or 0, {"calls": 0, "chars": 0, "shared_prefix_chars": 0, "same_model_prefix_chars": 0}
        )
        row["calls"] += 1
        row["chars"] += len(text)
        row["shared_prefix_chars"] += shared
        row["same_model_prefix_chars"] += same
    total = sum(r["chars"] for r in stages.values())
    shared = sum(r["shared_prefix_chars"] for r in stages.values())
    same = sum(r["same_model_prefix_chars"] for r in stages.values())
    for row in stages.values():
        row["shared_share"] = round(row["shared_prefix_chars"] / row["chars"], 3)
    return {
        "stages": {str(k): v for k, v in sorted(stages.items())},
        "calls": sum(r["calls"] for r in stages.values()),
        "chars": total,
        "shared_prefix_chars": shared,
        "shared_share": round(shared / total, 4) if total else None,
        "same_model_share": round(same / total, 4) if total else None,
    }


def prompts_part(fake, patient, report, *, long_reply_chars: int) -> PartResult:
    from runs import services
    from runs.models import Run
    from tests.run_helpers import run_pipeline_here

    result = PartResult("prompts")
    cases = [(3, 0), (5, 0), (8, 0), (3, long_reply_chars), (5, long_reply_chars), (8, long_reply_chars)]
    report_chars = len(report_text())
    for models, reply_chars in cases:
        council = [f"bench-model-{i}" for i in range(1, models + 1)]
        for name in council:
            fake.script(name, latency=0.0, reply_chars=reply_chars)
        run = services.run_create(
            patient=patient, report=report, council_models=council, consolidator=council[0]
        )
        fake.reset_calls()
        _code, output = run_pipeline_here(run)  # in this process, so every call is this run's
        run.refresh_from_db()
        if run.status != Run.Status.COMPLETE:
            raise RuntimeError(f"prompts run {run.pk} ended {run.status}: {run.error}\n{output[-2000:]}")
        figures = prompt_figures(fake.calls)
        replies = "fake's short replies" if not reply_chars else f"replies of {reply_chars:,} characters"
        row = {
            "case": f"{models} models, {replies}",
            "models": models,
            "reply_chars": reply_chars,
            "report_chars": report_chars,
            **figures,
        }
        result.rows.append(row)
        result.targets.append(
            Target(f"shared prefix share, {row['case']}", figures["shared_share"], 0.70, "", below=False)
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one sample per case (default: 3)")
    parser.add_argument("--part", choices=["pipeline", "prompts"], action="append")
    parser.add_argument("--latency", type=float, default=1.0, help="L, seconds every model call takes")
    parser.add_argument("--long-reply-chars", type=int, default=12000)
    args = parser.parse_args()
    parts = args.part or ["pipeline", "prompts"]

    from tests.fake_upstream.server import FakeUpstream, ModelBehaviour

    fake = FakeUpstream(models={f"bench-model-{i}": ModelBehaviour(owned_by="bench") for i in range(1, 9)})
    fake.start()
    data_dir = throwaway_django("pipeline", CLIPROXY_BASE_URL=fake.base_url)
    try:
        with tempfile.TemporaryDirectory() as folder:
            patient, report = ready_report(Path(folder))
        if "pipeline" in parts:
            pipeline_part(fake, patient, report, latency=args.latency, repeat=1 if args.quick else 3).emit()
        if "prompts" in parts:
            prompts_part(fake, patient, report, long_reply_chars=args.long_reply_chars).emit()
    finally:
        fake.stop()
        remove(data_dir)


if __name__ == "__main__":
    main()
