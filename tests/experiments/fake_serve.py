"""A stand-in for the Ray Serve backends (`vllm`, `sglang`) that records what the experiments deploy."""

from __future__ import annotations

from typing import Any

import pytest

from matrix.llm.backends.base import Server


class FakeServe:
    """Every Serve backend's `start(**kw)` records kw and returns a server at http://127.0.0.1:9/<app>/v1;
    stopping it records {"stopped": model}."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def start(self, backend: Any, **kw: Any) -> Server:
        self.calls.append(kw)
        model = kw["model"]
        url = f"http://127.0.0.1:9/{kw.get('app_name', 'default')}/v1"
        return Server(
            backend=backend.name, base_url=url, model=model, _stop=lambda: self.calls.append({"stopped": model})
        )


def install(monkeypatch: pytest.MonkeyPatch) -> FakeServe:
    """Route the Serve backends' start to one FakeServe, and make ensure_ray a no-op (no Ray needed)."""
    import matrix.ray_init as ray_init
    from matrix.llm.backends import ray_serve

    fake = FakeServe()
    monkeypatch.setattr(ray_serve._RayServeBackend, "start", lambda self, **kw: fake.start(self, **kw))
    monkeypatch.setattr(ray_init, "ensure_ray", lambda *a, **k: None)
    return fake
