"""Slurm settings: every missing or wrong key named in one error, before anything is submitted."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from slurm.cluster import compose_cluster
from slurm.settings import SlurmConfigError, hydra_value, preflight, scheduler_of, slurm_settings
from tests.slurm import fake_sbatch


def cluster(**slurm: object) -> dict[str, object]:
    return {"name": "t", "scheduler": "slurm", "slurm": {"partition": "gpu", "time_min": 60, **slurm}}


def test_complete_settings_become_sbatch_and_submitit_parameters() -> None:
    s = slurm_settings(
        cluster(nodes=31, gpus_per_node=8, cpus_per_task=64, constraint="a100", account="lab", qos="high")
    )
    assert s.sbatch_args() == ["--partition=gpu", "--time=60", "--nodes=31", "--ntasks-per-node=1",
                               "--cpus-per-task=64", "--gpus-per-node=8", "--account=lab", "--qos=high",
                               "--constraint=a100"]  # fmt: skip
    params = s.executor_parameters(nodes=1, name="head")
    assert params["nodes"] == 1 and params["slurm_partition"] == "gpu" and params["gpus_per_node"] == 8
    assert params["slurm_constraint"] == "a100" and params["timeout_min"] == 60


def test_every_problem_is_listed_in_one_error() -> None:
    bad = {"name": "paper", "scheduler": "slurm",
           "slurm": {"partition": "???", "time_min": "abc", "gpus": 8, "nodes": 0, "account": "???"}}  # fmt: skip
    with pytest.raises(SlurmConfigError) as err:
        slurm_settings(bad)
    text = str(err.value)
    assert "cluster 'paper' has 5 bad Slurm setting(s); nothing was submitted" in text
    assert "cluster.slurm.partition is missing" in text
    assert "cluster.slurm.time_min must be a positive whole number, got 'abc'" in text
    assert "cluster.slurm.gpus is not a Slurm setting" in text
    assert "cluster.slurm.nodes must be a positive whole number, got 0" in text
    assert "cluster.slurm.account is required" in text


def test_scheduler_is_checked() -> None:
    assert scheduler_of({"name": "local"}) == "local"
    with pytest.raises(SlurmConfigError, match=re.escape("cluster.scheduler must be one of local, slurm, got 'pbs'")):
        scheduler_of({"name": "x", "scheduler": "pbs"})


@pytest.mark.parametrize("name", ["slurm_a100_31nodes", "slurm_a100_32nodes", "slurm_h100_13nodes"])
def test_paper_clusters_need_only_a_partition(name: str) -> None:
    with pytest.raises(SlurmConfigError, match=re.escape("cluster.slurm.partition is missing")):
        slurm_settings(compose_cluster([f"cluster={name}"]))
    s = slurm_settings(compose_cluster([f"cluster={name}", "cluster.slurm.partition=gpu"]))
    assert s.gpus_per_node == 8 and s.constraint in ("a100", "h100")


def test_paper_layouts_match_the_papers_hardware() -> None:
    coral = compose_cluster(["cluster=slurm_a100_31nodes"])
    assert coral["slurm"]["nodes"] * coral["slurm"]["gpus_per_node"] == coral["layout"]["replicas"] == 248
    assert coral["layout"]["matrix_concurrency"] == 50 * 248
    nr = compose_cluster(["cluster=slurm_a100_32nodes"])
    lay = nr["layout"]
    assert lay["filter_replicas"] + lay["large_replicas"] * lay["large_tensor_parallel"] == 32 * 8
    tau2 = compose_cluster(["cluster=slurm_h100_13nodes"])
    assert tau2["slurm"]["nodes"] == 13 and tau2["layout"]["replicas"] == 56


def test_hydra_value_quotes_any_text() -> None:
    for text in ["a b", "it's", "x=y,z", "/path/with %j", "back\\slash", "ends\\", "q\\'x"]:
        (o,) = OverridesParser.create().parse_overrides([f"k={hydra_value(text)}"])
        assert o.value() == text


def test_preflight_reports_slurms_refusal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = 'echo "sbatch: error: invalid partition specified: gpu" >&2\nexit 1\n'
    calls_file = fake_sbatch.install(tmp_path, monkeypatch, script)
    with pytest.raises(
        SlurmConfigError, match="sbatch --test-only said: sbatch: error: invalid partition specified: gpu"
    ):
        preflight(slurm_settings(cluster()))
    calls = calls_file.read_text().splitlines()
    assert len(calls) == 1 and calls[0].startswith("--test-only ")


def test_preflight_without_slurm_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SlurmConfigError, match="'sbatch' is not on PATH"):
        preflight(slurm_settings(cluster()))
