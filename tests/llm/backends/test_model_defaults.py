"""Per-model serving defaults: the paper's values, lookups by any spelling, and safe fallbacks."""

from __future__ import annotations

import warnings

import pytest

from matrix.llm.backends.model_defaults import ModelServingSpec, known_models, serving_spec


def test_llama31_8b_matches_the_coral_runs() -> None:
    spec = serving_spec("meta-llama/Llama-3.1-8B-Instruct")
    assert spec.known and spec.accelerator == "gpu"
    assert spec.tensor_parallel_size == 1 and spec.devices_per_replica == 1
    assert spec.enable_prefix_caching is True
    assert spec.max_ongoing_requests == 150
    assert spec.autoscaling_target == 120  # 80% of the cap, as the Matrix repo sets it
    assert spec.max_model_len == 131072


def test_gpt_oss_120b_uses_two_gpus_per_replica() -> None:
    spec = serving_spec("openai/gpt-oss-120b")
    assert spec.tensor_parallel_size == 2 and spec.devices_per_replica == 2
    assert spec.max_ongoing_requests == 64
    assert spec.tool_call_parser == "openai"
    assert spec.enable_prefix_caching is None  # left to the engine, as the Matrix table does


def test_nr_models() -> None:
    big = serving_spec("meta-llama/Llama-3.3-70B-Instruct")
    assert big.tensor_parallel_size == 4 and big.max_model_len == 32768 and big.max_ongoing_requests == 100
    small = serving_spec("Llama-3.2-3B-Instruct")
    assert small.tensor_parallel_size == 1 and small.max_ongoing_requests == 256
    # The Matrix repo's name for the filter's base model maps to the released 3B instruct model.
    assert serving_spec("meta-llama/Llama-3.1-3B-Instruct").max_ongoing_requests == 256


def test_smollm2_is_the_cpu_model() -> None:
    spec = serving_spec("SmolLM2-135M-Instruct")
    assert spec.accelerator == "cpu" and spec.devices_per_replica == 0
    assert spec.dtype == "float32" and spec.enforce_eager and spec.max_model_len == 2048
    assert spec.env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert spec.env["HF_HUB_OFFLINE"] == "1"
    assert serving_spec("HuggingFaceTB/SmolLM2-135M-Instruct").accelerator == "cpu"


def test_short_and_case_insensitive_names_keep_the_callers_spelling() -> None:
    spec = serving_spec("llama-3.1-8b-instruct")
    assert spec.known and spec.max_ongoing_requests == 150
    assert spec.model == "llama-3.1-8b-instruct"
    assert spec.weights == "llama-3.1-8b-instruct"


def test_overrides_apply_and_typos_are_refused() -> None:
    spec = serving_spec("meta-llama/Llama-3.1-8B-Instruct", min_replicas=4, max_replicas=8, accelerator_type="A100")
    assert spec.replica_bounds == (4, 8) and spec.accelerator_type == "A100"
    assert spec.max_ongoing_requests == 150
    with pytest.raises(ValueError, match="tensor_parallel"):
        serving_spec("meta-llama/Llama-3.1-8B-Instruct", tensor_paralel_size=2)


def test_unknown_model_gets_generic_defaults_and_a_warning() -> None:
    with pytest.warns(UserWarning, match="no serving defaults for model 'acme/Widget-7B'"):
        spec = serving_spec("acme/Widget-7B", source="/models/widget")
    assert not spec.known
    assert spec.tensor_parallel_size == 1 and spec.max_model_len is None
    assert spec.weights == "/models/widget"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        serving_spec("meta-llama/Llama-3.1-8B-Instruct")  # known models do not warn


def test_invalid_values_fail_with_the_value() -> None:
    with pytest.raises(ValueError, match="tensor_parallel_size must be a positive integer, got 0"):
        serving_spec("openai/gpt-oss-120b", tensor_parallel_size=0)
    with pytest.raises(ValueError, match=r"max_replicas \(2\) must be >= min_replicas \(4\)"):
        serving_spec("meta-llama/Llama-3.1-8B-Instruct", min_replicas=4, max_replicas=2)
    with pytest.raises(ValueError, match="accelerator"):
        ModelServingSpec(model="m", accelerator="tpu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        serving_spec(" ")


def test_replica_bounds_and_plain_dict() -> None:
    spec = serving_spec("meta-llama/Llama-3.1-8B-Instruct", min_replicas=3)
    assert spec.replica_bounds == (3, 3)
    data = spec.to_dict()
    assert data["model"] == "meta-llama/Llama-3.1-8B-Instruct" and data["env"] == {}
    assert ModelServingSpec(**data) == spec


def test_every_known_model_builds() -> None:
    for name in known_models():
        assert serving_spec(name).known
