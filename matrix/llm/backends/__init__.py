"""Serving backends behind one interface; `get_backend(name)` picks one by its config key."""

from __future__ import annotations

import importlib

from matrix.llm.backends.base import Backend, BackendError, Server

# name -> "module:Class"; modules are imported lazily so that a CPU laptop never imports GPU engines.
_REGISTRY: dict[str, str] = {
    "sim": "matrix.llm.backends.sim:SimBackend",
    "vllm-cpu": "matrix.llm.backends.vllm_cpu:VllmCpuBackend",
    "vllm": "matrix.llm.backends.ray_serve:VllmServeBackend",
    "sglang": "matrix.llm.backends.ray_serve:SglangServeBackend",
    "openai": "matrix.llm.backends.openai_api:OpenAIBackend",
}

BACKENDS: tuple[str, ...] = tuple(_REGISTRY)


class UnknownBackendError(BackendError, ValueError):
    pass


def get_backend(name: str) -> Backend:
    """Return the backend registered as `name`; an unknown name raises with the valid choices."""
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise UnknownBackendError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}") from None
    module_name, cls_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls()


__all__ = ["BACKENDS", "Backend", "BackendError", "Server", "UnknownBackendError", "get_backend"]
