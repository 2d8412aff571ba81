"""The texts a clinician signs, as versions: the write-up (edited from the selected model draft) and the
patient version (written by a model from the signed write-up, runs/patient_version.py, then edited). Pages,
the API and the patient-version runner call these; each kind is the same machinery, told apart by
`DraftVersion.kind`.

Each save is a new `DraftVersion` whose text is a file under data/versions/<run>/ (named with its kind,
number and hash, written whole by documents.files) and whose sha256 is in the row; nothing ever rewrites a
version, so a signed version stays exactly as it was signed and a later change is a new, unsigned version.
Versions belong to the model draft they were edited from (`base`): selecting another draft starts its own
history, of both kinds."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from accounts.models import profile_of
from council import numbers
from documents.files import write_atomic
from documents.markdown import clean_markdown
from runs import selectors
from runs.models import Artifact, DraftVersion, Run
from runs.services import RunRefused, numbers_acknowledge

# The longest write-up a version may hold (characters); model drafts are a few thousand.
MAX_VERSION_CHARS = 200_000

CLINICIAN, PATIENT = DraftVersion.Kind.CLINICIAN, DraftVersion.Kind.PATIENT
# What each kind is called in a sentence.
NOUN = {CLINICIAN: "write-up", PATIENT: "patient version"}


@dataclass(frozen=True)
class Edited:
    """What the export and the editor take as the current text of a kind: its latest version of the
    selected draft, or (the write-up only) the draft itself when nobody has edited it."""

    artifact: Artifact
    text: str
    version: DraftVersion | None

    @property
    def signed(self) -> bool:
        return self.version is not None and self.version.signed


def versions_of(run: Run, kind: str = CLINICIAN) -> list[DraftVersion]:
    """The versions of `kind` of the selected draft, oldest first."""
    if run.selected_artifact_id is None:
        return []
    return list(
        DraftVersion.objects.filter(run=run, kind=kind, base_id=run.selected_artifact_id).select_related(
            "author", "source"
        )
    )


def latest_version(run: Run, artifact: Artifact | None = None, kind: str = CLINICIAN) -> DraftVersion | None:
    """The newest version of `kind` of `artifact` (default: the selected draft)."""
    artifact_id = artifact.pk if artifact is not None else run.selected_artifact_id
    if artifact_id is None:
        return None
    rows = DraftVersion.objects.filter(run=run, kind=kind, base_id=artifact_id)
    return rows.select_related("source").order_by("-number").first()


def signed_write_up(run: Run) -> DraftVersion | None:
    """The write-up's latest version if it is signed: what a patient version is written from."""
    version = latest_version(run)
    return version if version is not None and version.signed else None


def version_text(version: DraftVersion) -> str:
    """The text of `version`, refused when the file on disk no longer has the hash recorded for it."""
    try:
        data = version.path.read_bytes()
    except OSError as error:
        raise RunRefused(f"Version {version.number} could not be read: {error}", status=409) from error
    if hashlib.sha256(data).hexdigest() != version.sha256:
        raise RunRefused(
            f"Version {version.number} on disk does not match its recorded hash; it was changed outside "
            "the app. Save the text again as a new version.",
            status=409,
        )
    return data.decode("utf-8")


def current_text(run: Run, artifact: Artifact | None = None, kind: str = CLINICIAN) -> Edited:
    """The text of `kind` of `artifact` (default: the selected draft) as it stands now: its latest version,
    else (the write-up) the model's draft; a patient version must have been written first."""
    artifact = artifact or run.selected_artifact
    if artifact is None:
        raise RunRefused("Select a final draft (or the consolidation) before editing it.", status=409)
    version = latest_version(run, artifact, kind)
    if version is not None:
        return Edited(artifact=artifact, text=version_text(version), version=version)
    if kind == PATIENT:
        raise RunRefused(
            "There is no patient version yet: sign the write-up, then ask a model to write one.", status=409
        )
    try:
        text = artifact.path.read_text(encoding="utf-8")
    except (OSError, ValueError) as error:
        raise RunRefused(f"The selected draft could not be read: {error}", status=409) from error
    # The model's raw HTML never reaches what is edited, checked, signed or exported (the pages drop it too).
    return Edited(artifact=artifact, text=clean_markdown(text), version=None)


def refuse_raw_html(edited: Edited, *, doing: str) -> None:
    """Refuse signing or exporting a version saved before versions were cleaned of raw HTML: what is signed
    is what is exported, so its text is never cleaned on the way out; saving it again makes a clean one."""
    if edited.version is not None and clean_markdown(edited.text) != edited.text:
        raise RunRefused(
            f"Version {edited.version.number} holds raw HTML (saved before the editor took it out); save it "
            f"again as a new version, check it and sign that before {doing}.",
            status=409,
        )


def model_text(run: Run, kind: str = CLINICIAN) -> str:
    """What the clinician's edits of `kind` are compared with: the model's draft, or the patient version
    the model last wrote."""
    if kind == CLINICIAN:
        return clean_markdown(selectors.artifact_text(run.selected_artifact)) if run.selected_artifact else ""
    written = [v for v in versions_of(run, PATIENT) if v.model_id]
    return version_text(written[-1]) if written else ""


def _normalised(text: str) -> str:
    # A textarea posts CRLF; the file keeps LF and one final newline.
    return text.replace("\r\n", "\n").replace("\r", "\n").rstrip() + "\n"


def _within_length(text: str, noun: str) -> None:
    if len(text) > MAX_VERSION_CHARS:
        raise RunRefused(
            f"The {noun} is {len(text):,} characters; at most {MAX_VERSION_CHARS:,} can be saved.",
            status=413,
        )


def version_save(*, run: Run, text: str, user, kind: str = CLINICIAN) -> DraftVersion:
    """Save `text` as the next version of `kind` of the selected draft. Refused when empty, too long, or
    unchanged (and a patient version before a model has written one). Raw HTML is taken out (the pages and
    the export show none)."""
    noun = NOUN[kind]
    _within_length(text, noun)  # as posted, before any work on it (a body may be 100 MB)
    text = _normalised(clean_markdown(text))
    if not text.strip():
        raise RunRefused(f"The {noun} is empty; write something before saving.")
    _within_length(text, noun)
    current = current_text(run, kind=kind)
    if _normalised(current.text) == text:
        what = f"version {current.version.number}" if current.version else "the model's draft"
        raise RunRefused(f"Nothing changed since {what}; there is no new version to save.", status=409)
    return version_write(
        run=run,
        kind=kind,
        base=current.artifact,
        source=current.version.source if current.version else None,
        text=text,
        author=user,
    )


def version_write(
    *,
    run: Run,
    kind: str,
    base: Artifact,
    text: str,
    author=None,
    model_id: str = "",
    source: DraftVersion | None = None,
) -> DraftVersion:
    """Write `text` as the next version of `kind`: file first (whole), then the row. Its numbers are checked
    as it is saved and the summary kept on the row (pages check again on read, so a correction of the fact
    table after the save shows at once). Its raw HTML and unsafe links are taken out first: the text saved is
    the text checked, signed and exported."""
    text = _normalised(clean_markdown(text))
    # The number check of the fidelity work, on the text as saved.
    checked = selectors.text_numbers(base, selectors.fact_table(run), text, kind=kind)
    data = text.encode("utf-8")
    digest = hashlib.sha256(data).hexdigest()
    rows = DraftVersion.objects.filter(run=run, kind=kind)
    number = (rows.aggregate(n=Max("number"))["n"] or 0) + 1
    prefix = "" if kind == CLINICIAN else f"{kind}-"
    relpath = f"versions/{run.pk}/{prefix}v{number}-{digest[:12]}.md"
    version = DraftVersion(
        run=run,
        kind=kind,
        number=number,
        base=base,
        source=source,
        model_id=model_id,
        file_path=relpath,
        sha256=digest,
        author=author,
        numbers=numbers.summary(checked.checks) if checked.checks is not None else None,
    )
    write_atomic(version.path, data)
    try:
        with transaction.atomic():
            version.save()
    except IntegrityError as error:
        version.path.unlink(missing_ok=True)
        raise RunRefused(
            f"Someone else saved version {number} a moment ago; reload the editor and apply your change "
            "to their version.",
            status=409,
        ) from error
    return version


def version_sign(
    *, run: Run, number: int, user, acknowledge: Sequence[str] = (), kind: str = CLINICIAN
) -> DraftVersion:
    """Sign version `number` of `kind` as `user` (name and credentials from their profile, now). Only the
    latest version of the selected draft can be signed, and only once; its text must still match its hash,
    and each of its flagged numbers must be acknowledged first (`acknowledge`, as for an export; else
    NumbersUnresolved lists them)."""
    version = DraftVersion.objects.filter(run=run, kind=kind, number=number).first()
    if version is None:
        raise RunRefused(f"Run {run.pk} has no {NOUN[kind]} version {number}.", status=404)
    latest = latest_version(run, kind=kind)
    if latest is None or latest.pk != version.pk:
        newest = f"version {latest.number}" if latest else f"a version of the {NOUN[kind]}"
        raise RunRefused(
            f"Version {number} is not the current {NOUN[kind]}; sign {newest} instead.", status=409
        )
    if version.signed:
        raise RunRefused(
            f"Version {number} is already signed by {version.signer_name}; change the text to make a new "
            "version to sign.",
            status=409,
        )
    profile = profile_of(user)
    if not profile.display_name.strip():
        raise RunRefused("Add your name (and credentials) to your profile before signing.", status=422)
    text = version_text(version)  # refuses a text that no longer matches its hash
    refuse_raw_html(Edited(artifact=version.base, text=text, version=version), doing="signing")
    numbers_acknowledge(
        run=run,
        artifact=version.base,
        text=text,
        acknowledge=acknowledge,
        user=user,
        doing="signing",
        kind=kind,
    )
    claimed = DraftVersion.objects.filter(pk=version.pk, signed_at__isnull=True).update(
        signed_by=user,
        signer_name=profile.display_name.strip(),
        signer_credentials=profile.credentials.strip(),
        signed_at=timezone.now(),
    )
    if claimed != 1:
        raise RunRefused(f"Version {number} was signed a moment ago by someone else.", status=409)
    version.refresh_from_db()
    return version
