"""Views: how one case turns an output row into training records, looked up by workflow name.

A case's view module (e.g. `matrix.cases.coral.export`) calls `register_view` when imported, as a
case module registers its workflow. The exporter never imports a case by name: it imports the
modules it is told (`--views MODULE`), and otherwise finds the `export` modules that the packages
under `matrix.cases` ship, so that a new case (in or outside this distribution) brings its own view.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from matrix.export.rows import RunInfo

Record = dict[str, Any]
KINDS = ("str", "int", "float", "bool", "json")


@dataclass(frozen=True)
class Field:
    """A metadata field of a record: its name, its kind (one of `KINDS`; `json` is any nested value,
    a JSON string in the hf and parquet formats) and what it means."""

    name: str
    kind: str
    doc: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"field {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")


class LeftOut(Exception):
    """Raised by a view for a finished row that holds nothing to train on (e.g. a document that a
    curation stage dropped); the message is the reason the summary counts it under."""


class View(Protocol):
    """One workflow's records. `fields` are the metadata fields beyond `COMMON_FIELDS`."""

    @property
    def workflow(self) -> str: ...

    @property
    def fields(self) -> Sequence[Field]: ...

    def records(self, row: Mapping[str, Any], run: RunInfo) -> list[Record]:
        """The records of one finished (`status == "done"`) row; `LeftOut` when it has none."""
        ...


COMMON_FIELDS = (
    Field("run_id", "str", "the run directory's name"),
    Field("case", "str", "the case study (config.json), else the workflow"),
    Field("system", "str", "the system that ran it (matrix, coral-controller, ...)"),
    Field("workflow", "str", "the workflow name in the output row"),
    Field("task_id", "str", "the task's id (input row id)"),
    Field("trial", "int", "the trial number of the task"),
    Field("view", "str", "whose view of the trajectory this record is"),
    Field("model", "str", "the model the run was configured with"),
    Field("sampling", "json", "temperature, top_p, max_tokens of the calls in this view"),
    Field("backend", "str", "the serving backend (sim means the replies were SIMULATED)"),
    Field("simulated", "bool", "true when a simulated engine wrote the replies"),
    Field("prompt_tokens", "int", "prompt tokens of the whole trajectory (every role)"),
    Field("completion_tokens", "int", "completion tokens of the whole trajectory (every role)"),
)

_VIEWS: dict[str, View] = {}


def register_view(view: View) -> View:
    """Make `view` the exporter of its workflow's rows (the last registration wins)."""
    names = [f.name for f in (*COMMON_FIELDS, *view.fields)]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"view of {view.workflow!r}: metadata fields named twice: {dupes}")
    _VIEWS[view.workflow] = view
    return view


def registered() -> dict[str, View]:
    return dict(_VIEWS)


def _case_view_modules() -> Iterable[str]:
    """`matrix.cases.<package>.export` for every package under `matrix.cases` that has one."""
    spec = importlib.util.find_spec("matrix.cases")
    if spec is None or not spec.submodule_search_locations:
        return []
    names = []
    for info in pkgutil.iter_modules(spec.submodule_search_locations):
        if info.ispkg and importlib.util.find_spec(f"matrix.cases.{info.name}.export") is not None:
            names.append(f"matrix.cases.{info.name}.export")
    return sorted(names)


def view_for(workflow: str, modules: Sequence[str] = ()) -> View:
    """The view of `workflow`, importing `modules` first, then the cases' own view modules."""
    for name in modules:
        importlib.import_module(name)
    if workflow not in _VIEWS:
        for name in _case_view_modules():
            importlib.import_module(name)
            if workflow in _VIEWS:
                break
    if workflow not in _VIEWS:
        raise ValueError(
            f"no export view for workflow {workflow!r} (views: {sorted(_VIEWS) or 'none'}); a case "
            "registers one with matrix.export.register_view in a module named with --views MODULE"
        )
    return _VIEWS[workflow]
