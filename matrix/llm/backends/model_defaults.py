"""Per-model serving defaults, as the paper's runs used them.

The values follow the Matrix repository's per-model table (`app_server/llm/llm_config.py` in
facebookresearch/matrix) and `../shared/paper/paper_setups.csv`: e.g. Llama-3.1-8B-Instruct on one
GPU per replica with prefix caching and 150 ongoing requests per replica (the Coral runs), and
gpt-oss-120b on two GPUs per replica (the tau2 runs). Both Ray Serve backends (`vllm`, `sglang`)
read one `ModelServingSpec`, so that a comparison between them changes the engine and nothing else.

A model that is not in the table still gets served, with generic defaults and a warning that says
which values were guessed; it never fails for want of an entry.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

logger = logging.getLogger(__name__)

Accelerator = Literal["gpu", "cpu"]

# Served name of the embedded CPU model (the same constant lives in `matrix.llm.models`; repeated
# here so that this table never imports the model-conversion code).
_SMOLLM2 = "SmolLM2-135M-Instruct"

# The CPU engine's environment: a 1 GiB KV cache is plenty for 135M parameters at 2k context, and
# reserving no core for the frontend gave +40% throughput at concurrency 32 on 2-core machines.
# The rest keeps a replica off the network: no hub, no usage reports, and the engine's internal
# sockets on loopback (a CPU replica's engine never spans nodes).
CPU_ENGINE_ENV: Mapping[str, str] = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "VLLM_DO_NOT_TRACK": "1",
    "VLLM_HOST_IP": "127.0.0.1",
    "VLLM_LOOPBACK_IP": "127.0.0.1",
}


@dataclass(frozen=True)
class ModelServingSpec:
    """How one model is served: engine settings per replica and the replica count.

    `model` is the name requests carry (`"model": ...` in the OpenAI body) and `source` is where
    the weights come from (a Hugging Face id or a local checkpoint directory; `None` means `model`).
    Fields left `None` fall back to the engine's own default rather than to a value of ours.
    """

    model: str
    source: str | None = None
    accelerator: Accelerator = "gpu"
    # Ray's accelerator type label (e.g. "A100", "H100") pins replicas to that GPU kind; None = any.
    accelerator_type: str | None = None
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    enable_prefix_caching: bool | None = True
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = 0.8
    dtype: str = "auto"
    enforce_eager: bool = False
    trust_remote_code: bool = False
    tool_call_parser: str | None = None
    enable_auto_tool_choice: bool = False
    # Ray Serve: the hard per-replica cap, and the autoscaler's setpoint (default 80% of the cap,
    # as the Matrix repository sets it).
    max_ongoing_requests: int = 150
    target_ongoing_requests: int | None = None
    min_replicas: int = 1
    max_replicas: int | None = None
    # SGLang's share of GPU memory for weights plus KV cache (its `--mem-fraction-static`).
    mem_fraction_static: float | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    extra_engine_kwargs: Mapping[str, Any] = field(default_factory=dict)
    known: bool = True

    def __post_init__(self) -> None:
        if self.accelerator not in ("gpu", "cpu"):
            raise ValueError(f"accelerator must be 'gpu' or 'cpu', got {self.accelerator!r}")
        for name in ("tensor_parallel_size", "pipeline_parallel_size", "max_ongoing_requests"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r} for {self.model}")
        if self.min_replicas < 0:
            raise ValueError(f"min_replicas must be >= 0, got {self.min_replicas} for {self.model}")
        if self.max_replicas is not None and self.max_replicas < max(self.min_replicas, 1):
            raise ValueError(
                f"max_replicas ({self.max_replicas}) must be >= min_replicas ({self.min_replicas}) "
                f"and >= 1 for {self.model}"
            )

    @property
    def weights(self) -> str:
        """Where the engine loads weights from."""
        return self.source or self.model

    @property
    def devices_per_replica(self) -> int:
        """GPUs one replica occupies (tensor x pipeline parallel); 0 on CPU."""
        if self.accelerator == "cpu":
            return 0
        return self.tensor_parallel_size * self.pipeline_parallel_size

    @property
    def replica_bounds(self) -> tuple[int, int]:
        """(min, max) replicas; max defaults to min, i.e. a fixed-size deployment."""
        return self.min_replicas, self.max_replicas or max(self.min_replicas, 1)

    @property
    def autoscaling_target(self) -> int:
        """Ongoing requests per replica the autoscaler aims for."""
        if self.target_ongoing_requests is not None:
            return self.target_ongoing_requests
        return max(1, int(self.max_ongoing_requests * 0.8))

    def to_dict(self) -> dict[str, Any]:
        """Plain data for logs and `Server.info`."""
        out = dataclasses.asdict(self)
        out["env"] = dict(self.env)
        out["extra_engine_kwargs"] = dict(self.extra_engine_kwargs)
        return out


# Canonical model id -> defaults. Sources: facebookresearch/matrix llm_config.py, and the paper's
# settings in paper_setups.csv (Coral: 8B, TP1, prefix caching, 150 per replica; NR: 3B filter and
# 70B scorer; tau2: gpt-oss-120b).
_TABLE: dict[str, dict[str, Any]] = {
    "meta-llama/Llama-3.1-8B-Instruct": {
        "tensor_parallel_size": 1,
        "enable_prefix_caching": True,
        "max_ongoing_requests": 150,
        "max_model_len": 131072,
        "gpu_memory_utilization": 0.8,
        "tool_call_parser": "llama3_json",
    },
    "meta-llama/Llama-3.2-3B-Instruct": {
        "tensor_parallel_size": 1,
        "enable_prefix_caching": True,
        "max_ongoing_requests": 256,
        "max_model_len": 131072,
        "gpu_memory_utilization": 0.8,
        "tool_call_parser": "llama3_json",
    },
    "meta-llama/Llama-3.3-70B-Instruct": {
        "tensor_parallel_size": 4,
        "enable_prefix_caching": True,
        "max_ongoing_requests": 100,
        "max_model_len": 32768,
        "gpu_memory_utilization": 0.8,
        "tool_call_parser": "llama3_json",
    },
    # The Matrix table leaves prefix caching to the engine here (vLLM's V1 engine turns it on).
    "openai/gpt-oss-120b": {
        "tensor_parallel_size": 2,
        "enable_prefix_caching": None,
        "max_ongoing_requests": 64,
        "max_model_len": 131072,
        "gpu_memory_utilization": 0.85,
        "tool_call_parser": "openai",
    },
    # The embedded CPU default: fp32 is deterministic under greedy decoding, eager mode starts in
    # ~20 s instead of 60-90 s, and 2k context keeps the KV cache inside 1 GiB.
    _SMOLLM2: {
        "accelerator": "cpu",
        "tensor_parallel_size": 1,
        "enable_prefix_caching": True,
        "max_ongoing_requests": 64,
        "max_model_len": 2048,
        "gpu_memory_utilization": None,
        "dtype": "float32",
        "enforce_eager": True,
        "env": CPU_ENGINE_ENV,
    },
}

# Other spellings people use for the same checkpoints. The Matrix repository calls the NR filter's
# base model "Llama-3.1-3B-Instruct"; the released 3B instruct model is Llama-3.2-3B-Instruct.
_ALIASES: dict[str, str] = {
    "meta-llama/llama-3.1-3b-instruct": "meta-llama/Llama-3.2-3B-Instruct",
    "llama-3.1-3b-instruct": "meta-llama/Llama-3.2-3B-Instruct",
    "huggingfacetb/smollm2-135m-instruct": _SMOLLM2,
}

_GENERIC: dict[str, Any] = {
    "tensor_parallel_size": 1,
    "enable_prefix_caching": True,
    "max_ongoing_requests": 64,
    "max_model_len": None,
    "gpu_memory_utilization": 0.8,
}

_SPEC_FIELDS = frozenset(f.name for f in dataclasses.fields(ModelServingSpec))


def known_models() -> tuple[str, ...]:
    """The models with paper-faithful defaults."""
    return tuple(_TABLE)


def _canonical(model: str) -> str | None:
    key = model.strip().lower()
    for name in _TABLE:
        if key == name.lower() or key == name.rsplit("/", 1)[-1].lower():
            return name
    return _ALIASES.get(key)


def serving_spec(model: str, **overrides: Any) -> ModelServingSpec:
    """The serving defaults for `model`, with `overrides` applied on top.

    `model` may be a Hugging Face id (`meta-llama/Llama-3.1-8B-Instruct`) or its last part
    (`Llama-3.1-8B-Instruct`), case-insensitive. The spec's `model` keeps the name as given, so
    requests carry the name the caller chose. An unknown model gets generic defaults (one device
    per replica, prefix caching, 64 ongoing requests, the checkpoint's own context length) and a
    warning; an unknown override key raises with the valid ones.
    """
    if not model or not model.strip():
        raise ValueError("serving_spec needs a model name, got an empty string")
    unknown = set(overrides) - _SPEC_FIELDS
    if unknown:
        raise ValueError(
            f"unknown serving option(s) {sorted(unknown)} for {model}; "
            f"valid ones: {', '.join(sorted(_SPEC_FIELDS - {'model', 'known'}))}"
        )
    overrides.pop("known", None)
    overrides.pop("model", None)
    canonical = _canonical(model)
    if canonical is None:
        message = (
            f"no serving defaults for model {model!r}; using generic ones (tensor_parallel_size=1, "
            "prefix caching on, max_ongoing_requests=64, the checkpoint's max_model_len). "
            f"Known models: {', '.join(_TABLE)}. Pass overrides to set them."
        )
        warnings.warn(message, stacklevel=2)
        logger.warning(message)
        values: dict[str, Any] = dict(_GENERIC)
        known = False
    else:
        values = dict(_TABLE[canonical])
        known = True
    values.update(overrides)
    return ModelServingSpec(model=model, known=known, **values)


__all__ = [
    "CPU_ENGINE_ENV",
    "ModelServingSpec",
    "known_models",
    "serving_spec",
]
