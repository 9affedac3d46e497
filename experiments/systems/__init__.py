"""The systems under comparison, one module each; `get_system(name)` picks one by its config name."""

from __future__ import annotations

import importlib

from experiments.cases.base import ConfigError
from experiments.systems.base import Job, System

_REGISTRY: dict[str, str] = {
    "matrix": "experiments.systems.matrix:MatrixP2P",
    "coral-controller": "experiments.systems.coral_controller:CoralController",
    "ray-data": "experiments.systems.ray_data:RayDataBatch",
    "tau2-threads": "experiments.systems.tau2_threads:Tau2Threads",
}

SYSTEMS: tuple[str, ...] = tuple(_REGISTRY)


def get_system(name: str) -> System:
    """The system registered as `name`; an unknown name raises with the choices."""
    if name not in _REGISTRY:
        raise ConfigError(f"system {name!r} is not a system: choose one of {', '.join(SYSTEMS)}")
    module, cls = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)()


__all__ = ["SYSTEMS", "Job", "System", "get_system"]
