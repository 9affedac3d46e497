"""`matrix bench virtual`: a committed reference run against the same job on the virtual clock."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from experiments.bench import virtual

TINY = ("case=coral", "case.limit=4", "case.length_scale=2", "system=matrix", "system.concurrency=4")


def reference(root: Path, name: str, metrics: dict) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "metrics.json").write_text(json.dumps(metrics))


def test_a_pair_compares_tokens_per_second_and_takes_out_recorded_startup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refs = tmp_path / "reference"
    reference(refs, "coral/matrix/a", {"tokens_per_second": 100.0, "tokens_generated": 1000, "window": {}})
    # made before the common window: 10 s of Ray Data startup inside 110 s
    reference(refs, "coral/matrix/b", {"tokens_per_second": 90.9, "tokens_generated": 10000, "wall_seconds": 110.0,
                                       "ray_data": {"startup_seconds": 10.0}})  # fmt: skip
    monkeypatch.setattr(virtual, "REFERENCE", refs)
    monkeypatch.setattr(virtual, "PAIRS", [("coral/matrix/a", TINY), ("coral/matrix/b", TINY)])
    out = tmp_path / "v.json"
    args = argparse.Namespace(only="", run_root=str(tmp_path / "runs"), out=out)
    assert virtual.main(args) == 0
    doc = json.loads(out.read_text())
    a, b = doc["pairs"]
    assert a["reference_tokens_per_second"] == 100.0 and a["reference_window"] == "startup excluded"
    assert a["difference"] == pytest.approx(a["virtual_tokens_per_second"] / 100.0 - 1.0, abs=1e-3)
    assert a["within_10_percent"] == (abs(a["difference"]) <= 0.10)
    assert (
        b["reference_tokens_per_second"] == pytest.approx(100.0)
        and b["reference_tokens_per_second_as_recorded"] == 90.9
    )
    assert "taken out" in b["reference_window"]
    assert doc["checked"] == 2
    # a partial rerun keeps the other pair
    assert virtual.main(argparse.Namespace(only="matrix/b", run_root=str(tmp_path / "runs2"), out=out)) == 0
    assert [p["reference"] for p in json.loads(out.read_text())["pairs"]] == [a["reference"], b["reference"]]
