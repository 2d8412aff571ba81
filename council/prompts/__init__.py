"""Versioned prompt templates, one file per stage: `stage<n>_<name>.v<k>.md`.

Every call of a run starts with the same text, byte for byte: `shared.v<k>.md` (the council's rules as the
system message, then the clinical context and the report opening the user message). A stage's file holds only
what follows it: a `[[shared]]` section naming the shared start it follows and a `[[stage]]` section (its
instructions and the earlier council output it is given). Providers' prompt caches serve the shared start to
every later call, and what differs between calls is at the end. (A file with `[[system]]` and `[[user]]`
sections is a whole prompt of its own, as version 1 of each stage was.)

`{{name}}` placeholders are filled in one pass, so text pasted in (a report, an earlier stage's output) is
never itself treated as a template. To change a prompt, add the next version's file and point the step's
registry entry (`STEP.prompt` at the end of its module in council/stages/) at it; to change the shared start,
add its next version and the next version of every stage file that names it: runs record which versions they
used (Run.prompt_versions), so old runs stay explainable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PROMPT_DIR = Path(__file__).resolve().parent

_SECTION = re.compile(r"^\[\[(system|user|shared|stage)\]\]\s*$", re.MULTILINE)
_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_][a-z0-9_]*)\s*\}\}")


@dataclass(frozen=True)
class PromptTemplate:
    version: str
    system: str
    user: str  # a stage file: its own part, which follows the shared start in the user message
    shared: str = ""  # the shared start a stage file follows ("shared.v1"); "" for a whole prompt

    def render(self, **values: str) -> tuple[str, str]:
        """(system, user). A stage file's system message is the shared one, and its user message is the
        shared start, then a blank line, then its own part."""
        if not self.shared:
            return render(self.system, values), render(self.user, values)
        system, start = load(self.shared).render(**values)
        return system, f"{start}\n\n{render(self.user, values)}"


def render(template: str, values: dict[str, str]) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"prompt placeholder {{{{{name}}}}} has no value")
        return str(values[name])

    return _PLACEHOLDER.sub(fill, template)


@cache
def load(version: str) -> PromptTemplate:
    """`version` is a file stem such as "stage1_analysis.v1"."""
    text = (PROMPT_DIR / f"{version}.md").read_text(encoding="utf-8")
    parts = _SECTION.split(text)
    # split() gives [preamble, "system", body, "user", body]; the preamble is a comment for maintainers.
    sections = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
    if set(sections) == {"shared", "stage"}:
        shared = load(sections["shared"])
        if shared.shared:
            raise ValueError(f"prompt {version} follows {sections['shared']}, which is a stage file itself")
        return PromptTemplate(
            version=version, system=shared.system, user=sections["stage"], shared=shared.version
        )
    if set(sections) != {"system", "user"}:
        raise ValueError(
            f"prompt {version} needs [[system]] and [[user]] sections, or [[shared]] and [[stage]]"
        )
    return PromptTemplate(version=version, system=sections["system"], user=sections["user"])
