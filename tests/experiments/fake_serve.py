"""A stand-in for the Ray Serve backends (`vllm`, `sglang`) that records what the experiments deploy."""

from __future__ import annotations

from typing import Any

import pytest


class FakeServe:
    """`get_backend(name).start(**kw)` records kw and returns a server at http://127.0.0.1:9/<app>/v1;
    leaving the server's context records {"stopped": model}."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def start(self, **kw: Any) -> _Server:
        self.calls.append(kw)
        return _Server(self, kw)


class _Server:
    def __init__(self, owner: FakeServe, kw: dict[str, Any]) -> None:
        self.owner, self.model = owner, kw["model"]
        self.base_url = f"http://127.0.0.1:9/{kw.get('app_name', 'default')}/v1"

    def __enter__(self) -> _Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.owner.calls.append({"stopped": self.model})


def install(monkeypatch: pytest.MonkeyPatch) -> FakeServe:
    """Route every backend lookup to one FakeServe, and make ensure_ray a no-op (no Ray needed)."""
    import matrix.llm.backends as backends
    import matrix.runtime.ray_p2p as ray_p2p

    fake = FakeServe()
    monkeypatch.setattr(backends, "get_backend", lambda name: fake)
    monkeypatch.setattr(ray_p2p, "ensure_ray", lambda: None)
    return fake
