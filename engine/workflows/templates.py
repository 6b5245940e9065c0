"""Templates: a step `use: login` with `with: {user: ada}` stands for another workflow's steps,
put in its place when a session is created.

They are expanded at creation, as inputs are written in: the session records ordinary steps,
each with its origin, `{"template": "login@2"}` (a registered workflow: the version used) or
`{"template": "login.yaml"}` (a file: its path from the file that uses it), and for a template
used inside another, the ones around it, outermost first: `{"template": "login@2", "via":
["checkout@1"]}`. So the views, replay and fork see ordinary steps, the step history says where
each came from, and a later push of a template never changes a session made before it. A
template inside a loop keeps its origin in each iteration (`domain.loops` adds its own keys).

Where a template is found is for whoever creates the session to say (a `TemplateSource`): the
creating tenant's registry, and only its (`engine.workflows.registry.RegisteredTemplates`: the
API, a registered workflow wherever it runs, a push); for `stepline run FILE`, first a file
beside the workflow (`FileTemplates`). The API never reads a file.

A template's `with` values are checked against the inputs it declares (INPUT_INVALID naming
the template and the input) once the using workflow's own inputs are written into them — a
value that is exactly `{{inputs.NAME}}` passes that value on with its type — and are written
into its steps. Only a template's steps and inputs are taken: its executor, base URL, config,
labels and webhook are the using workflow's. A template naming a definitions module is
refused: its steps run with the definitions of the workflow that uses it. Templates that use
each other are refused naming the cycle; how deep they nest (MAX_DEPTH) and how many steps they
make (MAX_STEPS, a loop's own steps counted) are bounded, so that a few lines cannot stand for
millions of steps.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from domain.errors import InvalidInput, InvalidWorkflow, TemplateCycle, TemplateNotFound
from domain.session import MAX_STEPS, StepSpec
from engine.workflows.file import StepForms, WorkflowFile, load_workflow
from engine.workflows.inputs import (
    INPUT,
    filled,
    json_length,
    not_declared,
    resolved,
    used,
    written_in,
)

MAX_DEPTH = 10
"""How deep templates may nest: a template used by a template … used by the workflow."""
FILE_SUFFIXES = (".yaml", ".yml")


class Unknown:
    """A value of the using workflow's that is not known yet: at a push, or in a check whose
    values do not fit. A template given one is checked, and left as the step `use NAME`."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = Unknown()


def unknown_values(declared: Iterable[str]) -> dict[str, Any]:
    """The values of a workflow's inputs before a run gives them."""
    return dict.fromkeys(declared, UNKNOWN)


@dataclass(frozen=True)
class Template:
    """A workflow a `use:` names, as found."""

    key: str
    """What it is, whatever names it: the same key twice in a chain is a cycle."""
    label: str
    """What its steps' origin records: `login@2`, `login.yaml`."""
    document: WorkflowFile
    source: TemplateSource
    """Where its own `use:` are found."""


class TemplateSource(Protocol):
    def template(self, use: str) -> Template:
        """The template `use` names; TemplateNotFound if there is none."""
        ...


@dataclass(frozen=True)
class Root:
    """The workflow whose steps are expanded: as a cycle back to it is named, and its key
    (None for one that no `use:` can name, an inline workflow of the API's)."""

    name: str
    key: str | None = None


def registered_key(name: str) -> str:
    return f"workflow:{name}"


def file_key(path: Path) -> str:
    return f"file:{path.resolve()}"


def expanded(
    steps: Sequence[StepForms | str],
    source: TemplateSource,
    values: Mapping[str, Any],
    root: Root | None = None,
) -> list[StepSpec]:
    """`steps` as a session records them: each template (in a loop's steps too) replaced by
    its steps, its `with` values written in, with their origin. `values` are the using
    workflow's inputs, written into the `with` values (UNKNOWN: checked, not expanded)."""
    chain = () if root is None else (_Link(root.name, root.key, None),)
    return _Expansion().steps(steps, source, values, chain)


@dataclass(frozen=True)
class _Link:
    """One workflow of the chain from the workflow expanded to the template under way."""

    name: str
    key: str | None
    label: str | None
    """None for the workflow expanded, whose steps have no origin of their own."""


class _Expansion:
    """One expansion: it counts the steps it makes, so that templates used by templates
    cannot make more than MAX_STEPS (those a push only checks, too)."""

    def __init__(self) -> None:
        self.made = 0

    def steps(
        self,
        entries: Sequence[StepForms | str],
        source: TemplateSource,
        values: Mapping[str, Any],
        chain: tuple[_Link, ...],
    ) -> list[StepSpec]:
        return [spec for entry in entries for spec in self.step(entry, source, values, chain)]

    def step(
        self,
        entry: StepForms | str,
        source: TemplateSource,
        values: Mapping[str, Any],
        chain: tuple[_Link, ...],
    ) -> list[StepSpec]:
        if isinstance(entry, str):
            return [self.made_in(StepSpec(entry), chain)]
        if entry.use is not None:
            return self.template(entry.use, entry.with_ or {}, source, values, chain)
        if entry.for_each is not None:
            body = self.steps(entry.steps or [], source, values, chain)
            loop = entry.loop(body)
            assert loop is not None  # for_each with steps: `one_or_the_other` checked
            spec = StepSpec(loop.header, None, entry.step_policy(), entry.if_, loop)
            return [self.made_in(spec, chain)]
        return [self.made_in(entry.spec(), chain)]

    def template(
        self,
        use: str,
        given: Mapping[str, Any],
        source: TemplateSource,
        values: Mapping[str, Any],
        chain: tuple[_Link, ...],
    ) -> list[StepSpec]:
        """The steps of the template `use` names, its values (`given`, the using workflow's
        `values` written in) checked and written in; one given a value not known yet is
        checked as far as it can be, and stands as the step `use NAME`."""
        template = source.template(use)
        link = _Link(use, template.key, template.label)
        _refuse_cycle(chain, link)
        _refuse_depth(chain, link)
        _refuse_module(template)
        own = template_values(template, given, values)
        inner = (*chain, link)
        steps = self.steps(template.document.steps, template.source, own, inner)
        try:
            if any(value is UNKNOWN for value in own.values()):
                _refuse_undeclared(used(steps) - own.keys(), own)
                return [StepSpec(f"use {use}", origin=_origin(inner))]
            return written_in(steps, own)
        except InvalidInput as error:
            raise _in_template(error, template) from None

    def made_in(self, spec: StepSpec, chain: tuple[_Link, ...]) -> StepSpec:
        """`spec`, counted, with the origin of the template it was written in."""
        self.made += 1
        if self.made > MAX_STEPS:
            raise InvalidWorkflow(
                f"with its templates expanded, the workflow has more than {MAX_STEPS} steps "
                "(a loop's own steps counted)",
                suggested_action="Use fewer or smaller templates, or split the workflow in two",
                field="steps",
                limit=MAX_STEPS,
            )
        origin = _origin(chain)
        return spec if origin is None else replace(spec, origin=origin)


def _origin(chain: tuple[_Link, ...]) -> dict[str, Any] | None:
    """`{"template": innermost, "via": [outer ones, outermost first]}`, or None for a step of
    the workflow itself."""
    labels = [link.label for link in chain if link.label is not None]
    if not labels:
        return None
    origin: dict[str, Any] = {"template": labels[-1]}
    if len(labels) > 1:
        origin["via"] = labels[:-1]
    return origin


def _refuse_cycle(chain: tuple[_Link, ...], link: _Link) -> None:
    keys = [known.key for known in chain]
    if link.key not in keys:
        return
    names = [known.name for known in chain[keys.index(link.key) :]] + [link.name]
    cycle = " -> ".join(names)
    raise TemplateCycle(
        f"templates use each other: {cycle}; expanded, they would never end",
        suggested_action=f"Remove the use: {link.name} that leads back ({cycle})",
        field="use",
        cycle=names,
    )


def _refuse_depth(chain: tuple[_Link, ...], link: _Link) -> None:
    if sum(known.label is not None for known in chain) < MAX_DEPTH:
        return
    path = " -> ".join([known.name for known in chain] + [link.name])
    raise InvalidWorkflow(
        f"templates nest more than {MAX_DEPTH} deep: {path}",
        suggested_action="Use the inner templates' steps directly in an outer one",
        field="use",
        limit=MAX_DEPTH,
    )


def _refuse_module(template: Template) -> None:
    """A template's steps run with the using workflow's step definitions: a module of the
    template's own would be matched against none of them, so it is refused, not ignored."""
    if template.document.definitions is None:
        return
    raise InvalidWorkflow(
        f"template {template.label} names a definitions module ({template.document.definitions})"
        ": a template's steps run with the definitions of the workflow that uses it",
        suggested_action=f"Remove definitions from {template.label}, and name the module in the "
        "workflow that uses it",
        field="use",
        template=template.label,
    )


# ---- a template's values ----------------------------------------------------------------


def template_values(
    template: Template, given: Mapping[str, Any], values: Mapping[str, Any]
) -> dict[str, Any]:
    """The template's input values: `given` (its `with`) with the using workflow's `values`
    written in, checked against the inputs the template declares, its defaults filled in;
    InvalidInput names the template and the input. A value made of one not known yet is
    UNKNOWN, and only its name is checked."""
    declared = template.document.inputs
    passed = {
        name: _passed(value, values, f"the value of {name} for {template.label}")
        for name, value in given.items()
    }
    unknown = {name for name, value in passed.items() if value is UNKNOWN}
    try:
        _refuse_large(passed)
        known = resolved(
            {name: spec for name, spec in declared.items() if name not in unknown},
            {name: value for name, value in passed.items() if name not in unknown},
        )
        _refuse_undeclared(unknown - declared.keys(), declared)
    except InvalidInput as error:
        raise _in_template(error, template) from None
    return known | unknown_values(unknown)


MAX_WITH_CHARS = 100_000
"""A `with` value once the using workflow's inputs are in it, about, as JSON: templates that
pass a value on many times, nested, would otherwise make one of untold size to check."""


def _refuse_large(passed: Mapping[str, Any]) -> None:
    for name, value in passed.items():
        if value is not UNKNOWN and json_length(value, MAX_WITH_CHARS + 1) > MAX_WITH_CHARS:
            raise InvalidInput(name, f"the value is larger than {MAX_WITH_CHARS:,} characters")


def _refuse_undeclared(names: set[str], declared: Iterable[str]) -> None:
    if names:
        name = sorted(names)[0]
        takes = ", ".join(sorted(declared)) or "none"
        raise InvalidInput(name, f"the workflow declares no input {name} (it takes: {takes})")


def _passed(value: Any, values: Mapping[str, Any], where: str) -> Any:
    """`value` with the using workflow's inputs written in: one that is exactly
    `{{inputs.NAME}}` is that input's value, of its type; UNKNOWN if one it uses is."""
    if isinstance(value, dict):
        members = {key: _passed(member, values, where) for key, member in value.items()}
        return UNKNOWN if UNKNOWN in members.values() else members
    if isinstance(value, list):
        items = [_passed(item, values, where) for item in value]
        return UNKNOWN if any(item is UNKNOWN for item in items) else items
    if not isinstance(value, str) or not INPUT.search(value):
        return value
    names = INPUT.findall(value)
    for name in names:
        if name not in values:
            raise not_declared(name, values, where)
    if any(values[name] is UNKNOWN for name in names):
        return UNKNOWN
    whole = INPUT.fullmatch(value)
    return values[whole.group(1)] if whole else filled(value, values, where)


def _in_template(error: InvalidInput, template: Template) -> InvalidInput:
    """The error, saying which template's input it is."""
    name = str(error.details.get("input"))
    said = InvalidInput(
        name, f"template {template.label}: {error.message}", suggested_action=error.suggested_action
    )
    said.details["template"] = template.label
    return said


# ---- files beside the workflow (`stepline run FILE` only) ---------------------------------


@dataclass(frozen=True)
class FileTemplates:
    """The templates of a workflow file run from the command line: `use: login` is login.yaml
    (or login.yml) beside the file that uses it, `use: parts/login.yaml` that path from it;
    a name with no such file is looked up in `registered`, the tenant's registry.

    A file used is the top workflow's folder's or below it (`root`, its folder when not
    given): a workflow from someone else's repository cannot have `stepline run` read
    `../../etc/...` or a link out of its folder into the log of a CI run."""

    directory: Path
    registered: TemplateSource | None = None
    root: Path | None = None

    def template(self, use: str) -> Template:
        found = self._file(use)
        if found is not None:
            path, label = found
            self._refuse_outside(use, path)
            document = load_workflow(path)
            within = FileTemplates(path.parent, self.registered, self.root or self.directory)
            return Template(file_key(path), label, document, within)
        if self.registered is None or _a_path(use):
            raise TemplateNotFound(
                f"use: {use}: there is no {self._candidates(use)} in {self.directory}",
                field="use",
                template=use,
            )
        try:
            return self.registered.template(use)
        except TemplateNotFound as error:
            raise TemplateNotFound(
                f"use: {use}: there is no {self._candidates(use)} in {self.directory}, and "
                f"{error.details.get('reason', error.message)}",
                field="use",
                template=use,
            ) from None

    def _refuse_outside(self, use: str, path: Path) -> None:
        root = (self.root or self.directory).resolve()
        if not path.resolve().is_relative_to(root):
            raise TemplateNotFound(
                f"use: {use}: a template file must be in {root} or a folder below it",
                suggested_action="Copy the template into the workflow's folder, or push it to "
                "the registry and use it by name",
                field="use",
                template=use,
            )

    def _file(self, use: str) -> tuple[Path, str] | None:
        """The file `use` names, and its path as the origin records it."""
        names = [use] if _a_path(use) else [use + suffix for suffix in FILE_SUFFIXES]
        for name in names:
            if (self.directory / name).is_file():
                return self.directory / name, name
        return None

    @staticmethod
    def _candidates(use: str) -> str:
        return use if _a_path(use) else " or ".join(use + suffix for suffix in FILE_SUFFIXES)


_PATH = re.compile(r"[/\\]|\.ya?ml$")


def _a_path(use: str) -> bool:
    """Whether `use` can only be a file's path: it holds a `/` or ends in .yaml or .yml."""
    return _PATH.search(use) is not None
