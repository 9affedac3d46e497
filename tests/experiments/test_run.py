"""The Hydra entry point: config composition per case and argument checks that come before any server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from experiments import run

CONF = Path(run.__file__).resolve().parent / "conf"


def cfg(*overrides: str):  # type: ignore[no-untyped-def]
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose(config_name="config", overrides=list(overrides))


def test_every_case_composes_and_is_dispatched() -> None:
    c = cfg("case=nr", "backend=sim")
    assert c.case.name == "natural_reasoning" and list(c.case.parallelism) == [1, 16, 1]
    t = cfg("case=tau2", "backend=sim", "case.threads=[33,100]")
    assert t.case.name == "tau2" and t.case.domain == "telecom" and run._windows(t.case.threads) == [33, 100]
    assert set(run.CASES) == {"coral", "natural_reasoning", "tau2"} and cfg().case.name == "coral"


def test_parallelism_points_and_sweeps() -> None:
    assert run._triples(OmegaConf.create([1, 500, 1]), 3) == [(1, 500, 1)]
    assert run._triples(OmegaConf.create([[1, 500, 1], [4, 125, 1]]), 3) == [(1, 500, 1), (4, 125, 1)]
    with pytest.raises(ValueError, match=r"expected 2 numbers per point, got \[10, 50, 1\]"):
        run._triples(OmegaConf.create([10, 50, 1]), 2)


def test_unknown_system_is_refused_before_any_server_starts() -> None:
    with pytest.raises(ValueError, match="system must be pair, matrix or ray-data; got 'coral-controller'"):
        run.run_nr(cfg("case=nr", "system=coral-controller"))


def test_tau2_refuses_an_unknown_system_before_any_server_starts() -> None:
    with pytest.raises(ValueError, match="system must be pair, matrix or tau2-threads; got 'ray-data'"):
        run.run_tau2(cfg("case=tau2", "system=ray-data"))


@pytest.mark.parametrize("backend", ["vllm", "sglang"])
def test_gpu_backends_configure_nr_and_tau2(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU backends' NR and tau2 keys (null/{}: the drivers' defaults) reach the drivers' start functions."""
    from experiments import nr as nr_exp
    from experiments import tau2 as tau2_exp

    be = cfg("case=nr", f"backend={backend}").backend
    assert be.small_model is None and be.large_model is None and be.tau2_model is None
    assert be.small_serve == {} and be.large_serve == {} and be.tau2_serve == {}
    seen: dict[str, Any] = {}

    class Started(Exception):
        pass

    def record(name: str) -> Any:
        def start(backend: str, **kw: Any) -> None:
            seen[name] = (backend, kw)
            raise Started

        return start

    monkeypatch.setattr(nr_exp, "start_pools", record("nr"))
    monkeypatch.setattr(tau2_exp, "start_models", record("tau2"))
    with pytest.raises(Started):
        run.run_nr(cfg("case=nr", f"backend={backend}", "case.limit=2", "+backend.large_serve.tensor_parallel_size=8"))
    assert seen["nr"] == (backend, {"small_replicas": 1, "large_replicas": 2, "small_model": None, "large_model": None,
                                    "small_serve": None, "large_serve": {"tensor_parallel_size": 8}})  # fmt: skip
    with pytest.raises(Started):
        run.run_tau2(cfg("case=tau2", f"backend={backend}", "case.limit=1", "backend.tau2_model=m/x"))
    assert seen["tau2"] == (backend, {"replicas": 4, "model": "m/x", "serve": None})
