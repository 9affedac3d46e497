"""Hardware/model profiles for the simulated serving engine.

A profile is one GPU replica serving one model: datasheet facts (memory bandwidth, peak FLOP/s),
the model's shape (weights, KV bytes per token), the scheduler's limits (max running sequences,
KV-cache token budget, tokens per step) and five fitted numbers (how much of the datasheet the
engine reaches, and the host-side overheads). Step time is computed from these by a roofline
model (`SimProfile.step_time`), so that TTFT, inter-token latency and saturation throughput come
out of the model instead of being stored. `scripts/calibrate_sim.py` shows, point by point, how
far that is from published runs.

Profiles ship as YAML in `matrix/llm/sim/profiles/`; `load_profile` also takes a path, so a user
can calibrate their own hardware without editing the package.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

DEFAULT_MODEL = "meta-llama/Llama-3.1-8B-Instruct"
DEFAULT_PROFILE = "a100-llama31-8b"

# YAML section -> keys it may hold. Profiles are flat in Python and grouped in YAML for readers;
# an unknown key is an error, so that a typo never silently falls back to a default.
_SECTIONS: dict[str, tuple[str, ...]] = {
    "hardware": ("memory_bandwidth_bytes_per_s", "peak_flops", "memory_gib"),
    "model_shape": (
        "parameters",
        "weight_bytes",
        "layers",
        "hidden_size",
        "kv_bytes_per_token",
        "max_model_len",
    ),
    "engine": ("max_num_seqs", "max_num_batched_tokens", "kv_cache_tokens", "block_size", "enable_prefix_caching"),
    "fitted": (
        "memory_efficiency",
        "compute_efficiency",
        "step_overhead_s",
        "per_sequence_overhead_s",
        "api_overhead_s",
    ),
}
_TOP_LEVEL = ("name", "description", "gpu", "model", "calibration")
_OPTIONAL = ("enable_prefix_caching",)


class UnknownProfileError(ValueError):
    """The profile name is neither a packaged profile nor a YAML file; the message lists the names."""


class ProfileError(ValueError):
    """A profile file is malformed; the message names the file, the key and the value."""


@dataclass(frozen=True)
class SimProfile:
    """One simulated GPU replica serving one model (all times in simulated seconds)."""

    name: str
    gpu: str
    model: str
    # datasheet facts
    memory_bandwidth_bytes_per_s: float
    peak_flops: float
    memory_gib: float
    # model shape
    parameters: float
    weight_bytes: float
    layers: int
    hidden_size: int
    kv_bytes_per_token: int
    max_model_len: int
    # scheduler limits (vLLM's names)
    max_num_seqs: int
    max_num_batched_tokens: int
    kv_cache_tokens: int
    block_size: int
    # fitted to published measurements
    memory_efficiency: float
    compute_efficiency: float
    step_overhead_s: float
    per_sequence_overhead_s: float
    api_overhead_s: float
    description: str = ""
    calibration: dict[str, Any] = field(default_factory=dict, compare=False)
    source: str = ""
    # vLLM's automatic prefix caching: a request's prompt prefix already in the KV cache is not
    # recomputed (see `EngineCore`). Off unless a profile turns it on, so older fits keep their numbers.
    enable_prefix_caching: bool = False

    def __post_init__(self) -> None:
        positive = (
            "memory_bandwidth_bytes_per_s",
            "peak_flops",
            *_SECTIONS["model_shape"],  # every number of the model's shape
            "max_num_seqs",
            "max_num_batched_tokens",
            "kv_cache_tokens",
            "block_size",
            "memory_efficiency",
            "compute_efficiency",
        )
        for key in positive:
            value = getattr(self, key)
            if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
                raise ProfileError(f"profile {self.name!r}: {key} must be a positive number, got {value!r}")
        for key in ("step_overhead_s", "per_sequence_overhead_s", "api_overhead_s"):
            value = getattr(self, key)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ProfileError(f"profile {self.name!r}: {key} must be >= 0, got {value!r}")
        if not isinstance(self.enable_prefix_caching, bool):
            raise ProfileError(
                f"profile {self.name!r}: enable_prefix_caching must be true or false, "
                f"got {self.enable_prefix_caching!r}"
            )
        if self.kv_cache_tokens < self.block_size:
            raise ProfileError(
                f"profile {self.name!r}: kv_cache_tokens ({self.kv_cache_tokens}) is smaller than "
                f"one block ({self.block_size})"
            )

    @property
    def kv_blocks(self) -> int:
        """KV-cache capacity in blocks; sequences hold whole blocks, as in vLLM's paged attention."""
        return self.kv_cache_tokens // self.block_size

    def step_time(
        self,
        *,
        tokens: int,
        sequences: int,
        context_tokens: int,
        attention_pairs: float,
    ) -> float:
        """Simulated seconds for one engine step.

        `tokens` are the tokens computed this step (prefill chunks plus one per decoding sequence),
        `sequences` how many sequences took part, `context_tokens` the KV entries their attention
        reads, `attention_pairs` the (query, key) pairs it scores. The cost is a roofline per kernel
        family plus host overheads:

        - linear layers: max(streaming the weights, 2 FLOP per parameter per token); one kernel
          that is memory-bound at small batches and compute-bound at large ones;
        - attention: streaming the KV cache it reads plus its FLOPs (4 x layers x hidden per pair),
          added, since it is a separate kernel that the linear layers do not hide;
        - host: a fixed cost per step (scheduling, launch, sampling) and a cost per sequence.
        """
        if tokens <= 0:
            return 0.0
        bandwidth = self.memory_efficiency * self.memory_bandwidth_bytes_per_s
        flops = self.compute_efficiency * self.peak_flops
        linear_s = max(self.weight_bytes / bandwidth, 2.0 * self.parameters * tokens / flops)
        attention_s = (
            self.kv_bytes_per_token * context_tokens / bandwidth
            + 4.0 * self.layers * self.hidden_size * attention_pairs / flops
        )
        return self.step_overhead_s + self.per_sequence_overhead_s * sequences + linear_s + attention_s

    def decode_floor_s(self) -> float:
        """Reading the weights once at datasheet bandwidth: no engine decodes a token faster."""
        return self.weight_bytes / self.memory_bandwidth_bytes_per_s

    def replace(self, **changes: Any) -> SimProfile:
        """A copy with some fields changed (e.g. a smaller KV budget in a test)."""
        return dataclasses.replace(self, **changes)

    def summary(self) -> dict[str, Any]:
        """The numbers a run record should carry to say which simulated hardware it ran on."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "calibration"}
        out["simulated"] = True
        return out


def _profiles_dir() -> Path:
    return Path(str(resources.files("matrix.llm.sim") / "profiles"))


def list_profiles() -> list[str]:
    """Names of the packaged profiles, sorted."""
    return sorted(p.stem for p in _profiles_dir().glob("*.yaml"))


def _flatten(doc: Any, source: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ProfileError(f"{source}: expected a YAML mapping at the top level, got {type(doc).__name__}")
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise ProfileError(f"{source}: section {key!r} must be a mapping, got {value!r}")
            for sub, sub_value in value.items():
                if sub not in _SECTIONS[key]:
                    raise ProfileError(f"{source}: unknown key {key}.{sub}; allowed: {', '.join(_SECTIONS[key])}")
                flat[sub] = sub_value
        elif key in _TOP_LEVEL:
            flat[key] = value
        else:
            allowed = ", ".join(_TOP_LEVEL + tuple(_SECTIONS))
            raise ProfileError(f"{source}: unknown top-level key {key!r}; allowed: {allowed}")
    missing = [k for keys in _SECTIONS.values() for k in keys if k not in flat and k not in _OPTIONAL]
    if missing:
        raise ProfileError(f"{source}: missing keys {', '.join(missing)}")
    return flat


def _coerce(flat: dict[str, Any], source: str) -> dict[str, Any]:
    ints = {f.name for f in dataclasses.fields(SimProfile) if f.type == "int"}
    floats = {f.name for f in dataclasses.fields(SimProfile) if f.type == "float"}
    out = dict(flat)
    for key, value in flat.items():
        try:
            if key in ints:
                as_float = float(value)
                if not math.isfinite(as_float) or as_float != int(as_float):
                    raise ValueError
                out[key] = int(as_float)
            elif key in floats:
                out[key] = float(value)
        except (TypeError, ValueError):
            raise ProfileError(f"{source}: {key} must be a number, got {value!r}") from None
    return out


def load_profile(name_or_path: str | Path) -> SimProfile:
    """Load a packaged profile by name (`a100-llama31-8b`) or any profile YAML by path."""
    candidate = Path(name_or_path)
    is_path = isinstance(name_or_path, Path) or candidate.suffix in (".yaml", ".yml") or "/" in str(name_or_path)
    if is_path:
        if not candidate.is_file():
            raise UnknownProfileError(
                f"profile file {str(name_or_path)!r} does not exist; packaged profiles: {', '.join(list_profiles())}"
            )
        path = candidate
    else:
        path = _profiles_dir() / f"{name_or_path}.yaml"
        if not path.is_file():
            raise UnknownProfileError(
                f"unknown sim profile {str(name_or_path)!r}: choose one of {', '.join(list_profiles())} "
                "or give the path of a profile YAML"
            )
    source = str(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ProfileError(f"{source}: not valid YAML: {exc}") from None
    flat = _coerce(_flatten(doc, source), source)
    flat.setdefault("name", path.stem)
    flat.setdefault("model", DEFAULT_MODEL)
    flat.setdefault("gpu", "unknown")
    flat.setdefault("description", "")
    flat["calibration"] = dict(flat.get("calibration") or {})
    return SimProfile(source=source, **flat)
