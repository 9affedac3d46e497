"""Profiles: packaged YAML, clear errors, and a step-time model with the right shape."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from matrix.llm.sim.profile import (
    ProfileError,
    UnknownProfileError,
    list_profiles,
    load_profile,
)


def test_packaged_profiles() -> None:
    names = list_profiles()
    assert {"a100-llama31-8b", "h100-llama31-8b", "h100-llama32-3b", "h100x4-llama33-70b"} <= set(names)
    for name in names:
        prof = load_profile(name)
        assert prof.name == name and prof.model
        assert prof.calibration["fitted_to"], "a profile says what it was fitted to"
        assert prof.step_time(tokens=1, sequences=1, context_tokens=1, attention_pairs=1) > prof.decode_floor_s()
    assert load_profile("h100-llama31-8b").decode_floor_s() < load_profile("a100-llama31-8b").decode_floor_s()


def test_unknown_profile_names_the_value_and_the_choices() -> None:
    with pytest.raises(UnknownProfileError) as err:
        load_profile("b200-llama31-8b")
    assert "b200-llama31-8b" in str(err.value) and "a100-llama31-8b" in str(err.value)
    assert isinstance(err.value, ValueError)
    with pytest.raises(UnknownProfileError, match="does not exist"):
        load_profile("/nowhere/custom.yaml")


def test_profile_from_a_path_and_bad_keys(tmp_path: Path) -> None:
    doc = yaml.safe_load(Path(load_profile("a100-llama31-8b").source).read_text())
    doc["name"] = "my-gpu"
    doc["engine"]["max_num_seqs"] = 64
    good = tmp_path / "mine.yaml"
    good.write_text(yaml.safe_dump(doc))
    prof = load_profile(good)
    assert prof.name == "my-gpu" and prof.max_num_seqs == 64

    doc["engine"]["max_num_seq"] = 64
    bad = tmp_path / "typo.yaml"
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(ProfileError, match=r"engine\.max_num_seq"):
        load_profile(bad)

    del doc["engine"]["max_num_seq"]
    doc["fitted"]["memory_efficiency"] = -1
    neg = tmp_path / "neg.yaml"
    neg.write_text(yaml.safe_dump(doc))
    with pytest.raises(ProfileError, match="memory_efficiency"):
        load_profile(neg)


def test_step_time_shape() -> None:
    prof = load_profile("h100-llama31-8b")

    def step(tokens: int, seqs: int, ctx: int) -> float:
        return prof.step_time(tokens=tokens, sequences=seqs, context_tokens=ctx, attention_pairs=tokens * ctx / 2)

    assert step(0, 0, 0) == 0.0
    # decode is memory-bound: a few more sequences cost little, long contexts cost KV reads
    assert step(4, 4, 400) < 1.1 * step(1, 1, 100)
    assert step(64, 64, 64 * 4000) > 1.5 * step(64, 64, 64 * 100)
    # a big prefill is compute-bound: cost grows with its tokens
    assert step(8000, 1, 8000) > 5 * step(500, 1, 500)
