"""`matrix bench virtual`: every committed real-time twin run, rerun on the virtual clock (SIMULATED).

Issue 19's check before any paper-scale figure: at twin scale, each system's tokens/s on the virtual
clock must come within 10% of its real-time reference run (`results/reference/`, Tables 1, 9 and
10), on the same inputs, seeds and settings. The Coral references were made with the behaviour
grounded in real Llama-3.1-8B answers from `../shared/data`, so the Coral pairs need it (skipped,
and said so, without it). The CPU charges are on (as in every paper-scale run); a pair's figure
with them off is in `tokens_per_second_uncharged`.

Writes `results/bench/virtual_clock_validation.json`: one entry per pair (reference, virtual,
difference, within 10% or not) and how long each virtual run took on this machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REFERENCE = Path("results/reference")
OUT = Path("results/bench/virtual_clock_validation.json")
MMLU = Path("../shared/data/mmlu_pro/mmlu_pro_test_llama31_8b_instruct.jsonl.gz")
TOLERANCE = 0.10

# (reference run, the entry point's overrides that make the same job)
CORAL = ("case=coral", f"case.input={MMLU}")
NR = ("case=nr", "case.limit=6000")
TAU2 = ("case=tau2",)
RD = (*NR, "system=ray-data", "system.concurrency=500")
PAIRS: list[tuple[str, tuple[str, ...]]] = [
    ("coral/matrix/twin", (*CORAL, "system=matrix", "system.concurrency=100")),
    ("coral/matrix/twin-c200", (*CORAL, "system=matrix", "system.concurrency=200")),
    ("coral/matrix/twin-c300", (*CORAL, "system=matrix", "system.concurrency=300")),
    ("coral/coral-controller/twin-w50", (*CORAL, "system=coral-controller", "system.concurrency=50")),
    ("coral/coral-controller/twin-w100", (*CORAL, "system=coral-controller", "system.concurrency=100")),
    ("coral/coral-controller/twin-w200", (*CORAL, "system=coral-controller", "system.concurrency=200")),
    ("natural_reasoning/matrix/twin-p1-t500-a1", (*NR, "system=matrix", "system.parallelism=[1,500,1]")),
    ("natural_reasoning/matrix/twin-p4-t125-a1", (*NR, "system=matrix", "system.parallelism=[4,125,1]")),
    ("natural_reasoning/ray-data/twin-w10-b50", (*RD, "system.batch_size=50")),
    ("natural_reasoning/ray-data/twin-w20-b25", (*RD, "system.batch_size=25")),
    ("natural_reasoning/ray-data/twin-w5-b100", (*RD, "system.batch_size=100")),
    ("tau2/matrix/twin-c100", (*TAU2, "system=matrix", "system.concurrency=100")),
    ("tau2/tau2-threads/twin-c100", (*TAU2, "system=tau2-threads", "system.concurrency=100")),
    ("tau2/tau2-threads/twin-c33", (*TAU2, "system=tau2-threads", "system.concurrency=33")),
]  # fmt: skip


def compose(*overrides: str) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base=None):
        return hydra_compose(config_name="config", overrides=list(overrides))


def run_pair(reference: str, overrides: Sequence[str], run_root: Path) -> dict[str, Any]:
    from experiments import run

    ref_path = REFERENCE / reference / "metrics.json"
    ref = json.loads(ref_path.read_text())
    entry: dict[str, Any] = {"reference": str(REFERENCE / reference), "overrides": list(overrides)}
    if any(o.startswith("case.input=") and not MMLU.exists() for o in overrides):
        return {**entry, "skipped": f"{MMLU} is absent (the Coral references were grounded in it)"}
    base = ("backend=sim", "scale=twin", "clock=virtual", f"run_root={run_root}", "run_id=vtwin", "progress=false")
    t0 = time.perf_counter()
    m = run.run_job(compose(*base, *overrides))
    host = time.perf_counter() - t0
    real, virt = float(ref["tokens_per_second"]), float(m["tokens_per_second"])
    window = "startup excluded"
    startup = (ref.get("ray_data") or {}).get("startup_seconds")
    if "window" not in ref and startup:
        # Made before the run window was the same for every system (matrix.runtime.window): Ray Data's
        # clock then started before its actor pool launched. Its recorded startup is taken out.
        real = float(ref["tokens_generated"]) / (float(ref["wall_seconds"]) - float(startup))
        window = f"recorded startup ({float(startup):.1f} s) taken out of the reference's window"
    diff = virt / real - 1.0
    return {
        **entry,
        "system": m.get("system"),
        "reference_tokens_per_second": round(real, 2),
        "reference_tokens_per_second_as_recorded": round(float(ref["tokens_per_second"]), 2),
        "reference_window": window,
        "virtual_tokens_per_second": round(virt, 2),
        "difference": round(diff, 4),
        "within_10_percent": abs(diff) <= TOLERANCE,
        "reference_tokens": ref.get("tokens_generated"),
        "virtual_tokens": m.get("tokens_generated"),
        "virtual_simulated_seconds": round(float(m["wall_seconds"]), 2),
        "host_seconds": round(host, 1),
        "virtual_run": m.get("run_dir"),
        "model": m.get("model"),
    }


def main(args: argparse.Namespace) -> int:
    only = [s for s in (args.only or "").split(",") if s]
    pairs = [(r, o) for r, o in PAIRS if not only or any(s in r for s in only)]
    if not pairs:
        print(f"matrix bench virtual: --only {args.only!r} matches no reference run", file=sys.stderr)
        return 2
    out: list[dict[str, Any]] = []
    for i, (reference, overrides) in enumerate(pairs, 1):
        print(f"[{i}/{len(pairs)}] {reference} on the virtual clock ...", file=sys.stderr, flush=True)
        entry = run_pair(reference, overrides, Path(args.run_root))
        out.append(entry)
        if "skipped" in entry:
            print(f"    skipped: {entry['skipped']}", file=sys.stderr)
        else:
            print(
                f"    real {entry['reference_tokens_per_second']:,.1f} vs virtual "
                f"{entry['virtual_tokens_per_second']:,.1f} tokens/s ({entry['difference']:+.1%}) "
                f"in {entry['host_seconds']:.0f} s of host time",
                file=sys.stderr,
            )
    path = Path(args.out or OUT)
    if only and path.exists():  # a partial rerun updates its pairs and keeps the others
        done = {e["reference"] for e in out}
        kept = [e for e in json.loads(path.read_text()).get("pairs", []) if e.get("reference") not in done]
        order = [str(REFERENCE / r) for r, _ in PAIRS]
        out = sorted([*kept, *out], key=lambda e: order.index(e["reference"]) if e["reference"] in order else 99)
    checked = [e for e in out if "skipped" not in e]
    doc = {
        "what": "each committed real-time twin run against the same job on the virtual clock (SIMULATED)",
        "clock": "virtual (looptime), CPU charges from results/bench/process_ceiling.json",
        "tolerance": TOLERANCE,
        "pairs": out,
        "within_10_percent": sum(bool(e["within_10_percent"]) for e in checked),
        "checked": len(checked),
        "date": time.strftime("%Y-%m-%d"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"{doc['within_10_percent']} of {len(checked)} pairs within 10% -> {path}", file=sys.stderr)
    return 0
