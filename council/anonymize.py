"""Keep model ids out of prompts from Stage 2 on.

Labels alone are not enough: models sign their work now and then ("as gpt-5, I…"), and that text is pasted
into later prompts. Earlier output is redacted before it is shown to any model; the stored artifacts keep
exactly what each model wrote.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[council member]"


def redactor(model_ids: Iterable[str]):
    """A function that replaces every given model id (any case) with a neutral phrase."""
    ids = sorted({model_id for model_id in model_ids if model_id}, key=len, reverse=True)
    if not ids:
        return lambda text: text
    # Longest first, so "gpt-5-mini" is not half-replaced by "gpt-5"; whole tokens only, so a model called
    # "auto" or "o3" leaves "automatic" and "CO3" alone.
    alternatives = "|".join(re.escape(model_id) for model_id in ids)
    pattern = re.compile(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])", re.IGNORECASE)
    return lambda text: pattern.sub(REDACTED, text)
