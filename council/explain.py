"""A model's error as one sentence a clinician can act on; the raw error stays beside it, one click away.

Errors are stored as the operator reads them (council/client.py and the stages write them: "gpt-5:
CLIProxyAPI answered 429: … (gave up after 5 attempts)"). They are explained on read, from the forms those
modules write, so old runs read the same way and nothing is stored twice. An error in no known form gets a
plain sentence that says so, never a guess at its cause.
"""

from __future__ import annotations

import re

_GAVE_UP = re.compile(r"gave up after (\d+) attempts")
_ANSWERED = re.compile(r"CLIProxyAPI answered (\d{3})")
_INVALID = re.compile(r"invalid (.+?) JSON after (\d+) attempt")


def _tries(raw: str) -> str:
    match = _GAVE_UP.search(raw)
    return f" after {match.group(1)} tries" if match else ""


def explain(raw: str) -> str:
    """The clinician's sentence for a stored error ("" for no error)."""
    text = raw.strip()
    if not text:
        return ""
    lowered = text.lower()
    answered = _ANSWERED.search(text)
    status = int(answered.group(1)) if answered else None
    if "needs you to sign in" in lowered or status == 401 or "auth_unavailable" in lowered:
        return (
            "CLIProxyAPI is not signed in to this model's provider, so nothing could be asked; sign in again "
            "there, then resume the run."
        )
    if "identifier" in lowered and ("refused" in lowered or "not painted" in lowered):
        return (
            "The call was not sent because it still held something that identifies the patient; record it "
            "as an identifier or redact it, then resume."
        )
    unknown_model = status in (400, 404) and ("does not exist" in lowered or "not found" in lowered)
    if "model_not_found" in lowered or "unknown provider" in lowered or unknown_model:
        return (
            "CLIProxyAPI does not offer this model (its name may have changed, or it was removed); choose "
            "another model for the run."
        )
    if status == 429:
        return (
            f"The model's provider refused more requests for now (rate limit){_tries(text)}; resume the run "
            "later, and only the missing calls are made."
        )
    if status is not None and status >= 500:
        return (
            f"The model's provider had a server error ({status}){_tries(text)}; this is usually temporary, "
            "so resume the run later."
        )
    if status is not None:
        return f"CLIProxyAPI refused the request ({status}); the details below say why."
    if "refused the connection" in lowered or "did not accept the connection" in lowered:
        return (
            f"CLIProxyAPI could not be reached{_tries(text)} (is it running?); start it, then resume the run."
        )
    if "did not answer" in lowered and "in time" in lowered:
        return (
            "The model took longer than the time allowed (CLIPROXY_READ_TIMEOUT) and was stopped; resume "
            "the run to ask it again."
        )
    if "dropped the connection" in lowered or "not valid json on" in lowered:
        return f"The connection to CLIProxyAPI broke off{_tries(text)}; resume the run to ask again."
    if "empty reply" in lowered or "returned no text" in lowered:
        return "The model sent back an empty answer, so there was nothing to use; resume to ask it again."
    invalid = _INVALID.search(text)
    if invalid:
        return (
            f"The model's {invalid.group(1)} was not in the required form after {invalid.group(2)} tries, so "
            "it could not be used; resume to ask it again, or run without it."
        )
    if "the chat completion has no choices" in lowered or "the response has no output" in lowered:
        return "CLIProxyAPI answered without any text from the model; resume to ask it again."
    if lowered.startswith("internal error"):
        return "Something went wrong inside this application, not with the model; the details below are for support."
    return "The call did not succeed; the details below are the error as it was reported."
