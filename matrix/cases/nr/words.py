"""The document generator's word lists and sentence templates, read from ``data/<lang>.yaml`` once per process.

``en.yaml`` holds the English pages (shared lists, slots, and per page kind its topics, titles and
sentences); every other language's file holds its news and forum pages. The files are checked as they are
read: a slot or list that is not text fails with the file and key, so that a typo cannot quietly change
the documents. A slot written ``{from, to, step}`` becomes the whole numbers from..to as text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any

import yaml

Words = tuple[str, ...]
SlotValues = dict[str, Words]
_RANGE_KEYS = {"from", "to", "step"}


class WordsError(ValueError):
    """A data file that does not have the shape the generator reads."""


def whole_numbers(lo: int, hi: int, step: int = 1) -> Words:
    """``lo``, ``lo + step``, ... up to ``hi`` (inclusive), as text."""
    return tuple(str(v) for v in range(lo, hi + 1, step))


_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's, when PyYAML was built with it


@cache
def language(lang: str) -> dict[str, Any]:
    """The parsed ``data/<lang>.yaml`` (read once; callers must not change it)."""
    path = resources.files("matrix.cases.nr") / "data" / f"{lang}.yaml"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WordsError(f"no word lists for language {lang!r}: {path} is missing") from None
    data = yaml.load(text, Loader=_LOADER)
    if not isinstance(data, dict):
        raise WordsError(f"{path}: expected a mapping at the top, got {type(data).__name__}")
    return data


def _where(lang: str, keys: Sequence[str]) -> str:
    return f"data/{lang}.yaml: {'.'.join(keys)}"


def _get(data: Mapping[str, Any], lang: str, keys: Sequence[str]) -> Any:
    value: Any = data
    for i, key in enumerate(keys):
        if not isinstance(value, Mapping) or key not in value:
            raise WordsError(f"{_where(lang, keys[: i + 1])} is missing")
        value = value[key]
    return value


def texts(lang: str, *keys: str) -> Words:
    """The list of texts at ``keys`` in ``lang``'s file."""
    value = _get(language(lang), lang, keys)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise WordsError(f"{_where(lang, keys)} must be a non-empty list of texts (quote numbers), got {value!r}")
    return tuple(value)


def rows(lang: str, *keys: str, width: int) -> tuple[Words, ...]:
    """The list of ``width``-text rows at ``keys`` (e.g. an encyclopedia place: name, what it is, where)."""
    value = _get(language(lang), lang, keys)
    if not isinstance(value, list) or not value:
        raise WordsError(f"{_where(lang, keys)} must be a non-empty list of rows, got {value!r}")
    for row in value:
        if not isinstance(row, list) or len(row) != width or not all(isinstance(v, str) for v in row):
            raise WordsError(f"{_where(lang, keys)}: every row must be {width} texts, got {row!r}")
    return tuple(tuple(row) for row in value)


def slot_table(lang: str, *keys: str) -> SlotValues:
    """The slot table at ``keys``: each slot's values, ``{from, to, step}`` expanded (empty when the table is
    left out)."""
    parent = _get(language(lang), lang, keys[:-1])
    if keys[-1] not in parent:
        return {}
    table = parent[keys[-1]]
    if not isinstance(table, dict):
        raise WordsError(f"{_where(lang, keys)} must map slot names to values, got {table!r}")
    out: SlotValues = {}
    for name, value in table.items():
        where = _where(lang, [*keys, str(name)])
        if isinstance(value, dict):
            if not {"from", "to"} <= set(value) <= _RANGE_KEYS or not all(type(v) is int for v in value.values()):
                raise WordsError(f"{where}: a range is {{from, to, step}} with whole numbers, got {value!r}")
            out[str(name)] = whole_numbers(value["from"], value["to"], value.get("step", 1))
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            out[str(name)] = tuple(value)
        else:
            raise WordsError(f"{where} must be a non-empty list of texts (quote numbers) or a range, got {value!r}")
    return out
