"""The run page's stage cards and its "where the council disagreed" summary: each rendered again only when
something it shows changed, and the same HTML as the page's template made before they were kept (the loop
below is that template's, as it was)."""

from __future__ import annotations

import re

import pytest
from django.template import engines

from runs import views as run_views
from runs.models import Artifact, CouncilChange
from tests.run_helpers import COUNCIL, run_pipeline_here

pytestmark = pytest.mark.django_db(transaction=True)

# runs/_live.html's stage cards before each was rendered once per state (`runs/_stage_card.html`).
BEFORE = """<div class="stages">
  {% for s in stages %}
  <article class="stage-card {{ s.state }}" id="stage-{{ s.stage }}" data-state="{{ s.state }}">
    <header class="spread">
      <strong>{{ s.stage }} · {{ s.name }}</strong>
      <span class="badge {{ s.state }}">{{ s.state }}</span>
    </header>
    <p class="small stage-count"><span>{{ s.summary }}</span>{% if s.failed %} · <span class="error">{{ s.failed }} failed</span>{% endif %}{% if s.dropped %} · <span class="muted">{{ s.dropped }} left out</span>{% endif %}{% if s.seconds is not None %} · <span data-elapsed="{{ s.seconds|stringformat:".1f" }}"{% if s.ticking %} data-ticking{% endif %}>{{ s.seconds }} s</span>{% endif %}</p>
    <ul class="model-list">
      {% for m in s.models %}
      <li class="model-row {{ m.status }}">
        <span class="dot {{ m.status }}" aria-hidden="true"></span>
        <code>{{ m.model_id }}</code>{% if m.label and s.live_labels %} <span class="small muted">({{ m.label }})</span>{% endif %}
        <span class="small muted">{{ m.status }}{% if m.latency %} · {{ m.latency }}{% endif %}</span>
        {% if m.status == "failed" %}{% include "runs/_model_error.html" with error=m.error %}{% elif m.error %}<div class="small muted model-note">{{ m.error }}</div>{% endif %}
        {% if m.retry %}<div class="small retrying" role="status">{{ m.retry.sentence }} · <span data-elapsed="{{ m.retry.ago|stringformat:".1f" }}" data-ticking>{{ m.retry.ago }} s</span> ago</div>{% endif %}
        {% if m.changeable %}<details class="row-changes" hx-get="{% url 'runs:answer_changes' run.pk %}?stage={{ s.stage }}&amp;model={{ m.model_id|urlencode }}" hx-trigger="toggle once" hx-target="find .row-changes-body"><summary class="small">Ask again or replace…</summary>
          <div class="row-changes-body small muted">Working out what it would redo…</div>
        </details>{% endif %}
      </li>
      {% empty %}
      <li class="small muted">{% if s.state == "skipped" %}Nothing to do in this stage.{% else %}Waiting for earlier stages.{% endif %}</li>
      {% endfor %}
    </ul>
    {% if s.readable %}<a class="small read-link" href="{% url 'runs:stage' run.pk s.stage %}">Read stage {{ s.stage }} →</a>{% endif %}
  </article>
  {% endfor %}
</div>"""


def _stages_html(html: str) -> str:
    start = html.index('<div class="stages">')
    return html[start : html.index("\n</div>", start) + len("\n</div>")]


@pytest.fixture
def finished_run(run):
    code, output = run_pipeline_here(run)
    assert code == 0, output
    run.refresh_from_db()
    return run


@pytest.fixture
def counted(monkeypatch):
    rendered = []
    original = run_views.render_to_string

    def counting(name, context=None, *args, **kwargs):
        rendered.append(name)
        return original(name, context, *args, **kwargs)

    monkeypatch.setattr(run_views, "render_to_string", counting)
    run_views._stage_card_html.cache_clear()
    run_views._disagreement_kept.cache_clear()
    return rendered


def _html(response) -> str:
    """The page, its CSRF tokens blanked (new on every request)."""
    return re.sub(r'(csrfmiddlewaretoken" value="|"X-CSRFToken": ")[^"]+', r"\1-", response.content.decode())


def _same_as_before(response) -> str:
    html = _html(response)
    before = (
        engines["django"]
        .from_string(BEFORE)
        .render({"stages": response.context["stages"], "run": response.context["run"]})
    )
    assert _stages_html(html) == before
    return html


def test_stage_cards_are_the_same_html_and_rendered_once_per_state(admin_client, finished_run, counted):
    url = f"/runs/{finished_run.pk}/"
    first = _same_as_before(admin_client.get(url))
    cards = counted.count("runs/_stage_card.html")
    assert cards == 6 and "Ask again or replace" in first  # an administrator may change the council
    assert _same_as_before(admin_client.get(url)) == first
    assert counted.count("runs/_stage_card.html") == cards  # nothing rendered again
    # A failed call, a model left out: the cards that show them change, the others are kept.
    Artifact.objects.filter(run=finished_run, stage=3, model_id=COUNCIL[0]).update(
        status=Artifact.Status.FAILED, file_path="", sha256="", error="Upstream 502 after 5 attempts"
    )
    changed = _same_as_before(admin_client.get(url))
    assert "Upstream 502 after 5 attempts" in changed and changed != first
    assert counted.count("runs/_stage_card.html") == cards + 1
    CouncilChange.objects.create(run=finished_run, kind="drop", stage=5, model_id=COUNCIL[2], summary="x")
    finished_run.dropped = {COUNCIL[2]: 5}
    finished_run.save(update_fields=["dropped"])
    _same_as_before(admin_client.get(url))


def test_a_clinician_sees_the_same_cards_as_before(clinician_client, finished_run, counted):
    _same_as_before(clinician_client.get(f"/runs/{finished_run.pk}/"))
    _same_as_before(clinician_client.get(f"/runs/{finished_run.pk}/live/"))


def test_the_disagreement_summary_is_read_again_only_when_its_run_changed(
    clinician_client, finished_run, counted, monkeypatch
):
    url = f"/runs/{finished_run.pk}/"
    read = []
    summary = run_views.reading.disagreement_summary
    monkeypatch.setattr(
        run_views.reading, "disagreement_summary", lambda run: read.append(run.pk) or summary(run)
    )
    first = _html(clinician_client.get(url))
    assert "Where the council disagreed" in first and read == [finished_run.pk]
    assert _html(clinician_client.get(url)) == first and len(read) == 1
    # A reviewer's review lost: its places go from the table, as a fresh read says.
    Artifact.objects.filter(run=finished_run, stage=2, model_id=COUNCIL[0]).update(
        status=Artifact.Status.FAILED, file_path="", sha256="", error="timed out"
    )
    changed = _html(clinician_client.get(url))
    assert len(read) == 2 and changed != first
    run_views._disagreement_kept.cache_clear()
    assert _html(clinician_client.get(url)) == changed
