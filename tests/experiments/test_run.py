"""The Hydra entry point: config composition per case and argument checks that come before any server."""

from __future__ import annotations

from pathlib import Path

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
