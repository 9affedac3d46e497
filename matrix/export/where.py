"""`--where` conditions on a record's metadata: `FIELD OP VALUE` (OP one of == != >= <= > <) or a bare
`FIELD` (true when the value is truthy). VALUE is read as JSON (`1`, `0.5`, `true`, `null`, `"x"`),
else as a plain string. A field may reach into a nested value with dots (`scores.problem_complexity`).
A missing value (null) only satisfies `== null` and `!= X`."""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}
_FORM = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(?:(==|!=|>=|<=|>|<)\s*(.+?))?\s*$")


@dataclass(frozen=True)
class Condition:
    field: str
    op: str | None
    value: Any
    text: str

    def test(self, metadata: Mapping[str, Any]) -> bool:
        got = lookup(metadata, self.field)
        if self.op is None:
            return bool(got)
        if got is None or self.value is None:
            return _OPS[self.op](got, self.value) if self.op in ("==", "!=") else False
        try:
            return _OPS[self.op](got, self.value)
        except TypeError:  # e.g. a string against a number: not a match, and not an error
            return self.op == "!="


def lookup(metadata: Mapping[str, Any], name: str) -> Any:
    value: Any = metadata
    for part in name.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def parse_where(text: str) -> Condition:
    m = _FORM.match(text)
    if m is None:
        raise ValueError(f"--where {text!r}: expected FIELD OP VALUE (OP one of {' '.join(_OPS)}) or FIELD")
    name, op, raw = m.group(1), m.group(2), m.group(3)
    value: Any = None
    if op is not None:
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw.strip("'\"") if raw[:1] in "'\"" else raw
    return Condition(name, op, value, text.strip())


def check_fields(conditions: Iterable[Condition], fields: Iterable[str]) -> None:
    """Refuse a condition on a field that the records do not have, naming the ones they have."""
    known = sorted(fields)
    for c in conditions:
        if c.field.split(".")[0] not in known:
            raise ValueError(f"--where {c.text!r}: unknown field {c.field!r}; the records have: {', '.join(known)}")
