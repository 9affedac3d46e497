"""How the harness runs each case: its inputs, model pools, settings, P2P deployment and quality.

One module per case; `get_case(cfg.case)` picks one by the case config's `name` (the name run
directories use: `coral`, `natural_reasoning`, `tau2`).
"""

from __future__ import annotations

import importlib
from typing import Any

from experiments.cases.base import Case, ConfigError

_REGISTRY: dict[str, str] = {
    "coral": "experiments.cases.coral:CoralCase",
    "natural_reasoning": "experiments.cases.nr:NRCase",
    "tau2": "experiments.cases.tau2:Tau2Case",
}

CASES: tuple[str, ...] = tuple(_REGISTRY)


def get_case(cfg: Any) -> Case:
    """The case named by `cfg.name`, configured by `cfg`; an unknown name raises with the choices."""
    name = str(cfg.get("name"))
    if name not in _REGISTRY:
        raise ConfigError(f"case.name {name!r} is not a case: choose one of {', '.join(CASES)}")
    module, cls = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)(cfg)


__all__ = ["CASES", "Case", "ConfigError", "get_case"]
