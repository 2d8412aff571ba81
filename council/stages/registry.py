"""What a council step is, as data, and the one registry of them (council/stages/__init__.py fills it).

Each step module ends with its `STEP` entry: number and name, output kind (markdown, or JSON with its schema
from council/schemas.py), who takes part, what it reads from earlier steps, whether the clinician may
select its output for export, its versioned prompt, when it counts as done, and the function that builds
its calls. The orchestrator (runs/pipeline.py), the pages, the API, the export and `runpipeline` read the
registry instead of knowing stage numbers, so adding a step is adding its module and one line in
council/stages/__init__.py.

Anonymity lives here too: a step's call builder sees earlier output only through `StepContext`, which holds
nothing but the inputs the step declared, each redacted of every council model id and the consolidator's.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import ModuleType
from typing import Any

from pydantic import BaseModel

from council import schemas
from council.anonymize import redactor
from council.stages.base import CallLimits, CompletionClient, CouncilInput, StageOutput

Call = Callable[[], Awaitable[StageOutput]]


class Kind(StrEnum):
    """What a step stores; the value is the artifact's file extension and `Artifact.kind`."""

    MARKDOWN = "md"
    JSON = "json"


class Who(StrEnum):
    COUNCIL = "council"  # each council model
    CONSOLIDATOR = "consolidator"  # the run's consolidator alone


@dataclass(frozen=True)
class Takers:
    """Who takes part in a step, in council order."""

    who: Who = Who.COUNCIL
    # Only the members with an OK output of this earlier step (a model that failed it has nothing to revise).
    with_output_of: str | None = None
    # With fewer takers than this the step has nothing to do and is skipped (a lone analysis has no peers).
    at_least: int = 1

    def everyone(self, council: Iterable[str], consolidator: str) -> list[str]:
        return [consolidator] if self.who == Who.CONSOLIDATOR else list(council)

    def of(self, council: Iterable[str], consolidator: str, succeeded: Mapping[str, set[str]]) -> list[str]:
        """`succeeded`: step key → the models with an OK output of that step."""
        members = self.everyone(council, consolidator)
        if self.with_output_of is not None:
            done = succeeded.get(self.with_output_of, set())
            members = [model for model in members if model in done]
        return members if len(members) >= self.at_least else []


@dataclass(frozen=True)
class Input:
    """An earlier step whose OK outputs this step reads (redacted, and parsed when that step is JSON)."""

    step: str
    # When True the step cannot start without at least one output of that step, and the run fails.
    required: bool = False


class StepCannotStart(Exception):
    """A required input is missing (no revision to consolidate, no consolidation to vote on)."""


@dataclass(frozen=True)
class Step:
    number: int  # stored on artifacts and events, shown as "Stage n"; never reused for another step
    key: str  # how code names the step ("peer_review"), stable if numbers ever move
    name: str  # what the clinician reads ("Peer review")
    kind: Kind
    prompt: str  # the current versioned prompt file in council/prompts/, without ".md"
    calls: Callable[[StepContext], dict[str, Call]]  # model id → the call it makes in this step
    takers: Takers = Takers()
    inputs: tuple[Input, ...] = ()
    schema: type[BaseModel] | None = None  # the JSON a JSON step stores, from council/schemas.py
    selectable: bool = False  # the clinician may pick its output for export
    # Its numbers are checked against the report's fact table (council/numbers.py) when shown and exported.
    checks_numbers: bool = False
    # Done when at least this many of its calls succeeded (or it had none): Stage 1 may finish with some
    # models missing; every step today needs one.
    at_least_ok: int = 1

    @property
    def module(self) -> ModuleType:
        """The module that defines the step (where its call builder lives)."""
        return sys.modules[self.calls.__module__]

    @property
    def by_consolidator(self) -> bool:
        return self.takers.who == Who.CONSOLIDATOR

    def satisfied(self, *, ok: int, total: int) -> bool:
        """Whether the step counts as done, so a resumed run moves past it."""
        return ok >= min(self.at_least_ok, total)

    def read(self, text: str) -> BaseModel:
        """A stored output of a JSON step read back through its schema (InvalidReply if it does not fit)."""
        if self.schema is None:
            raise ValueError(f"stage {self.number} stores markdown, not JSON")
        return schemas.parse_reply(self.schema, text)

    def output_name(self, model_id: str) -> str:
        """How pages name one output: "the consolidation", "the final draft by gpt-5"."""
        name = f"the {self.name.lower()}"
        return name if self.by_consolidator else f"{name} by {model_id}"


@dataclass(frozen=True)
class StepContext:
    """What a step's call builder gets: the step, its takers, and its declared inputs, already redacted."""

    step: Step
    source: CouncilInput
    client: CompletionClient
    limits: CallLimits
    members: list[str]
    labels: Mapping[str, str]  # model id → the run's anonymous label
    _texts: Mapping[str, dict[str, str]] = field(default_factory=dict)
    _parsed: Mapping[str, dict[str, Any]] = field(default_factory=dict)

    def texts(self, key: str) -> dict[str, str]:
        """model id → redacted text of each OK output of input step `key`."""
        return dict(self._undeclared_guard(self._texts, key))

    def parsed(self, key: str) -> dict[str, Any]:
        """model id → validated JSON of each readable OK output of JSON input step `key`."""
        return dict(self._undeclared_guard(self._parsed, key))

    def by_label(self, by_model: Mapping[str, Any]) -> dict[str, Any]:
        return {self.labels[model]: value for model, value in by_model.items()}

    def call(self, run: Callable[..., Awaitable[StageOutput]], model: str, **kwargs: Any) -> Call:
        """A call of a stage module's `run(client, model, source, limits, **kwargs)`, made later."""
        return lambda: run(self.client, model, self.source, self.limits, **kwargs)

    def _undeclared_guard(self, outputs: Mapping[str, Any], key: str) -> Any:
        if key not in outputs:
            raise KeyError(f"stage {self.step.number} does not declare {key!r} among its inputs")
        return outputs[key]


@dataclass
class Unreadable:
    """A stored JSON output that no longer parses: left out of the context, for the caller to log."""

    step: str
    model_id: str
    error: str


class Registry:
    """The council's steps in run order. Numbers and keys are unique; inputs point at earlier steps."""

    def __init__(self, steps: Iterable[Step] = ()) -> None:
        self._steps: dict[int, Step] = {}
        for step in steps:
            self.register(step)

    # -- building it ---------------------------------------------------------------------------------

    def register(self, step: Step) -> Step:
        if step.number in self._steps:
            raise ValueError(f"stage {step.number} is already registered ({self._steps[step.number].key})")
        if self._steps and step.number < max(self._steps):
            raise ValueError(f"stage {step.number} ({step.key}) must come after stage {max(self._steps)}")
        if step.number < 1:
            raise ValueError(f"stage numbers start at 1, not {step.number}")
        if any(other.key == step.key for other in self):
            raise ValueError(f"a step is already called {step.key!r}")
        known = {other.key for other in self}
        for needed in [i.step for i in step.inputs] + [step.takers.with_output_of]:
            if needed is not None and needed not in known:
                raise ValueError(f"stage {step.number} ({step.key}) reads {needed!r}, which is not earlier")
        if (step.kind == Kind.JSON) != (step.schema is not None):
            raise ValueError(f"stage {step.number} ({step.key}): a JSON step has a schema, markdown none")
        if step.selectable and step.kind != Kind.MARKDOWN:
            raise ValueError(f"stage {step.number} ({step.key}): only markdown can be exported")
        self._steps[step.number] = step
        return step

    def unregister(self, key: str) -> None:
        """Drop a step no later step reads (for tests that register a step of their own)."""
        step = self[key]
        if any(i.step == key for other in self for i in other.inputs):
            raise ValueError(f"another step reads {key!r}")
        del self._steps[step.number]

    # -- reading it ----------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Step]:
        return iter(sorted(self._steps.values(), key=lambda step: step.number))

    def __len__(self) -> int:
        return len(self._steps)

    def __contains__(self, number_or_key: object) -> bool:
        if isinstance(number_or_key, str):
            return any(step.key == number_or_key for step in self._steps.values())
        return number_or_key in self._steps

    def __getitem__(self, number_or_key: int | str) -> Step:
        if isinstance(number_or_key, int):
            return self._steps[number_or_key]
        for step in self._steps.values():
            if step.key == number_or_key:
                return step
        raise KeyError(number_or_key)

    def get(self, number: int | None) -> Step | None:
        return self._steps.get(number) if number is not None else None

    @property
    def numbers(self) -> list[int]:
        return [step.number for step in self]

    @property
    def first(self) -> Step:
        return next(iter(self))

    @property
    def last(self) -> Step:
        return self[max(self._steps)]

    def after(self, number: int) -> list[Step]:
        """The steps a run still has to do once steps up to `number` are done."""
        return [step for step in self if step.number > number]

    def readers_of(self, number: int) -> list[Step]:
        """The later steps that depend on step `number`'s outputs, directly or through another step (they
        read it, or take their members from it), in run order: what must be redone when one of its outputs
        changes."""
        changed = {self[number].key}
        readers = []
        for step in self.after(number):
            needs = {declared.step for declared in step.inputs}
            if step.takers.with_output_of is not None:
                needs.add(step.takers.with_output_of)
            if needs & changed:
                readers.append(step)
                changed.add(step.key)
        return readers

    def name_of(self, number: int) -> str:
        step = self.get(number)
        return step.name if step is not None else f"Stage {number}"

    def kind_of(self, number: int) -> Kind:
        step = self.get(number)
        return step.kind if step is not None else Kind.MARKDOWN

    def parse_artifact(self, number: int, text: str) -> BaseModel:
        """For pages and exports: a stored output of a JSON step read back into its schema."""
        step = self.get(number)
        if step is None:
            raise ValueError(f"there is no stage {number}")
        return step.read(text)

    @property
    def selectable(self) -> list[Step]:
        return [step for step in self if step.selectable]

    @property
    def selection_step(self) -> Step:
        """Where the clinician compares, selects and exports: the last selectable step's page."""
        return self.selectable[-1]

    def selectable_phrase(self) -> str:
        """ "a Stage 6 final draft or the Stage 4 consolidation": what may be selected, latest first."""
        return " or ".join(
            f"{'the' if step.by_consolidator else 'a'} Stage {step.number} {step.name.lower()}"
            for step in reversed(self.selectable)
        )

    def requirement(self, step: Step) -> str:
        """What must hold for the step to start and to count as done, in words (for the API and pages)."""
        needs = [f"at least one {self[i.step].name.lower()}" for i in step.inputs if i.required]
        calls = "one call" if step.at_least_ok == 1 else f"{step.at_least_ok} calls"
        done = f"done when at least {calls} succeeded, or it had nothing to do"
        return f"needs {' and '.join(needs)}; {done}" if needs else done

    def number_range(self) -> str:
        return f"{self.first.number} to {self.last.number}"

    def prompt_versions(self) -> dict[str, str]:
        """What a new run records (Run.prompt_versions), so an old run stays explainable."""
        return {str(step.number): step.prompt for step in self}

    def participants(
        self, number: int, *, council: Iterable[str], consolidator: str, succeeded: Mapping[int, set[str]]
    ) -> list[str]:
        """Who takes part in a step, given which models succeeded in each stage so far (number → models)."""
        by_key = {step.key: succeeded.get(step.number, set()) for step in self}
        return self[number].takers.of(council, consolidator, by_key)

    def context(
        self,
        step: Step,
        *,
        source: CouncilInput,
        client: CompletionClient,
        limits: CallLimits,
        members: list[str],
        labels: Mapping[str, str],
        model_ids: Iterable[str],
        outputs: Mapping[int, Mapping[str, str]],
    ) -> tuple[StepContext, list[Unreadable]]:
        """The context a step's calls are built from. `outputs`: stage number → model id → stored text of
        each OK output so far. Only the step's declared inputs go in, every one redacted of every model id
        in `model_ids` (the council and the consolidator) before any prompt can see it."""
        redact = redactor(model_ids)
        texts: dict[str, dict[str, str]] = {}
        parsed: dict[str, dict[str, Any]] = {}
        unreadable: list[Unreadable] = []
        for declared in step.inputs:
            earlier = self[declared.step]
            texts[earlier.key] = {m: redact(t) for m, t in outputs.get(earlier.number, {}).items()}
            if declared.required and not texts[earlier.key]:
                raise StepCannotStart(f"there is no {earlier.name.lower()} to work from")
            if earlier.schema is not None:
                parsed[earlier.key] = {}
                for model, text in texts[earlier.key].items():
                    try:
                        parsed[earlier.key][model] = earlier.read(text)
                    except schemas.InvalidReply as exc:
                        unreadable.append(Unreadable(earlier.key, model, str(exc)))
        context = StepContext(
            step=step,
            source=source,
            client=client,
            limits=limits,
            members=members,
            labels=labels,
            _texts=texts,
            _parsed=parsed,
        )
        return context, unreadable
