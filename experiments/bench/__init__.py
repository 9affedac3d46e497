"""Benchmarks that print numbers and write JSON under results/bench/ (`matrix bench ...`), and the demo."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def portable(value: Any) -> Any:
    """Paths of this machine made relative (to the checkout) or home-relative, for committed results."""
    if isinstance(value, str):
        return value.replace(str(Path.cwd()) + "/", "").replace(str(Path.home()), "~")
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [portable(v) for v in value]
    return value
