"""Coral matched pairs: the P2P runtime and Coral's central controller on the same servers and questions.

One call starts (or is given) the model servers, runs both systems on the same question list with
the same protocol, sampling and token accounting, writes one run directory per system
(`<root>/coral/<system>/<run-id>/` with output.jsonl, metrics.json, timeseries.json, config.json)
and returns both metrics. `table1` turns run directories into the paper's Table 1 layout.

    python -m experiments.coral pair --backend vllm-cpu --limit 16      # real small model, CPU
    python -m experiments.coral pair --backend sim --replicas 2 ...     # SIMULATED A100 replicas
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments import paper
from experiments.common import Table, backend_labels, fresh, hms, serve_replicas
from matrix.cases import coral
from matrix.runtime.config import RunConfig
from matrix.runtime.report import write_json

P2P = "matrix"
CONTROLLER = "coral-controller"
SYSTEMS = (P2P, CONTROLLER)
# The paper's Coral model (teacher, student and answer extractor), served by `vllm`/`sglang` on GPUs.
DEFAULT_GPU_MODEL = "meta-llama/Llama-3.1-8B-Instruct"
SIM_BEHAVIOUR = "matrix.cases.coral_sim:CoralBehaviour"
# Settings for the tiny CPU model: its context is 2,048 tokens, so turns are shorter and fewer
# than the paper's (1,024 tokens, 20 turns). Everything else is the paper's protocol.
SMALL_MODEL_SETTINGS = coral.CoralSettings(
    max_turns=4,
    dialogue=coral.Sampling(temperature=0.2, top_p=0.9, max_tokens=160),
    extractor=coral.EXTRACTOR_SAMPLING,
)


@dataclass
class Servers:
    urls: list[str]
    model: str
    backend: str
    simulated: bool
    time_scale: float = 1.0
    hardware: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def labels(self) -> dict[str, Any]:
        return backend_labels(
            "coral", self.backend, self.simulated, self.time_scale, self.hardware, len(self.urls), self.info
        )


@contextmanager
def start_servers(
    backend: str,
    *,
    replicas: int = 1,
    profile: str = "a100-llama31-8b",
    time_scale: float = 1.0,
    dataset: str | None = None,
    length_scale: float = 1.0,
    model: str | None = None,
    serve_options: dict[str, Any] | None = None,
) -> Iterator[Servers]:
    """Model servers for a pair: `vllm-cpu` (one real engine on this CPU) or `sim` replicas (Ray actors)."""
    if backend == "vllm-cpu":
        from matrix.llm.backends import get_backend

        with get_backend("vllm-cpu").start(host="127.0.0.1", port=0) as server:
            yield Servers([server.base_url], server.model, "vllm-cpu", False, hardware="this machine's CPU")
        return
    if backend == "sim":
        from matrix.llm.sim.replicas import start_sim_replicas
        from matrix.runtime.ray_p2p import ensure_ray

        ensure_ray()
        config: dict[str, Any] = {"length_scale": length_scale}
        if dataset:
            config["dataset"] = dataset
        sims = start_sim_replicas(
            replicas, profile, time_scale, SIM_BEHAVIOUR, behaviour_config=config, model="Llama-3.1-8B-Instruct"
        )
        try:
            yield Servers(
                list(sims),
                "Llama-3.1-8B-Instruct",
                "sim",
                True,
                time_scale=time_scale,
                hardware=f"SIMULATED {replicas} x {profile}",
                info={"profile": profile, "behaviour": SIM_BEHAVIOUR, "behaviour_config": config},
            )
        finally:
            sims.stop()
        return
    if backend in ("vllm", "sglang"):
        # GPU replicas on Ray Serve (the paper's serving), on the Ray cluster this job runs on.
        with serve_replicas(backend, model or DEFAULT_GPU_MODEL, replicas, **(serve_options or {})) as server:
            yield Servers(
                [server.base_url], server.model, backend, False,
                hardware=f"{replicas} x {backend} replica(s) of {server.model} on Ray Serve",
            )  # fmt: skip
        return
    raise ValueError(f"coral pair: backend must be 'vllm-cpu', 'sim', 'vllm' or 'sglang', got {backend!r}")


def run_dir_for(root: Path, system: str, run_id: str) -> Path:
    return root / "coral" / system / run_id


def read_output(run_dir: Path) -> list[dict[str, Any]]:
    rows = []
    with open(run_dir / "output.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rows.append(json.loads(line))
    return rows


def _finish(run_dir: Path, metrics: dict[str, Any], labels: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Quality from the output rows (the same function for both systems) and the labels, saved."""
    metrics.update(labels)
    metrics["quality"] = coral.quality(read_output(run_dir))
    efficiency = backend_efficiency(metrics, run_dir)
    if efficiency:
        metrics["backend_efficiency"] = efficiency
    write_json(run_dir / "metrics.json", metrics)
    write_json(run_dir / "config.json", config)
    return metrics


def p2p_config(
    rows: list[dict[str, Any]],
    servers: Servers,
    run_dir: Path,
    *,
    concurrency: int,
    settings: coral.CoralSettings,
    instances: int,
    progress: bool,
    labels: dict[str, Any],
    **options: Any,
) -> RunConfig:
    """The RunConfig of a Coral run on the P2P runtime (`options`: further RunConfig keys)."""
    deployment = coral.CoralDeployment(urls=servers.urls, model=servers.model, settings=settings, instances=instances)
    return RunConfig(
        workflow=coral.WORKFLOW,
        roles=deployment.roles(),
        source=rows,
        run_dir=run_dir,
        max_concurrent_tasks=concurrency,
        progress=progress,
        workflow_modules=["matrix.cases.coral"],
        labels=labels,
        **options,
    )


def run_p2p(
    rows: list[dict[str, Any]],
    servers: Servers,
    run_dir: Path,
    *,
    concurrency: int,
    settings: coral.CoralSettings,
    instances: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    from matrix.runtime.ray_p2p import ensure_ray, run_ray

    ensure_ray()
    fresh(run_dir)
    labels = {**servers.labels(), "system": P2P, "concurrency": concurrency}
    cfg = p2p_config(
        rows, servers, run_dir, concurrency=concurrency, settings=settings, instances=instances, progress=progress,
        labels=labels,
    )  # fmt: skip
    metrics = run_ray(cfg)
    config = {"system": P2P, "concurrency": concurrency, "instances": instances, "settings": settings.to_dict()}
    return _finish(run_dir, metrics, labels, {**config, **servers.labels(), "urls": servers.urls})


def run_controller(
    rows: list[dict[str, Any]],
    servers: Servers,
    run_dir: Path,
    *,
    window: int,
    settings: coral.CoralSettings,
    progress: bool = True,
) -> dict[str, Any]:
    from baselines.coral_controller import ControllerConfig
    from baselines.coral_controller import run_controller as run_baseline

    fresh(run_dir)
    labels = {**servers.labels(), "system": CONTROLLER, "concurrency": window}
    cfg = ControllerConfig(
        urls=servers.urls,
        model=servers.model,
        settings=settings,
        window=window,
        run_dir=run_dir,
        labels=labels,
        progress=progress,
    )
    metrics = run_baseline(rows, cfg)
    config = {"system": CONTROLLER, "window": window, "settings": settings.to_dict()}
    return _finish(run_dir, metrics, labels, {**config, **servers.labels(), "urls": servers.urls})


def warm_up(servers: Servers, rows: list[dict[str, Any]], settings: coral.CoralSettings, *, concurrency: int) -> None:
    """A few untimed dialogue requests per server (first requests of an engine are slower)."""
    import asyncio

    from matrix.llm.client import LLMClient
    from matrix.llm.errors import LLMError

    good = []
    for r in rows:
        try:
            good.append(coral.question_of(r))
        except ValueError:
            continue
        if len(good) >= concurrency:
            break

    async def go() -> None:
        async with LLMClient(servers.urls, model=servers.model, max_concurrency=concurrency) as llm:

            async def one(q: coral.Question) -> None:
                with contextlib.suppress(LLMError):
                    await llm.chat(coral.dialogue_messages(q, []), role="warm-up", **settings.dialogue.body())

            await asyncio.gather(*(one(q) for _ in servers.urls for q in good))

    if good:
        asyncio.run(go())


def run_pair(
    rows: list[dict[str, Any]],
    servers: Servers,
    root: Path,
    *,
    p2p_concurrency: int,
    controller_window: int,
    settings: coral.CoralSettings,
    run_id: str | None = None,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Both systems, one after the other, on the same servers and rows (after a warm-up, so that
    neither pays for a cold engine)."""
    run_id = run_id or time.strftime("%Y%m%d-%H%M%S")
    warm_up(servers, rows, settings, concurrency=min(p2p_concurrency, controller_window))
    out = {}
    out[P2P] = run_p2p(
        rows, servers, run_dir_for(root, P2P, run_id), concurrency=p2p_concurrency, settings=settings,
        progress=progress,
    )  # fmt: skip
    out[CONTROLLER] = run_controller(
        rows, servers, run_dir_for(root, CONTROLLER, run_id), window=controller_window, settings=settings,
        progress=progress,
    )  # fmt: skip
    return out


# ------------------------------------------------------------------------------------------ tables

PAPER_T1 = {  # experiments/paper_tables.csv, Table 1 (paper v2): (baseline, matrix)
    k: (paper.value("T1", k, "baseline"), paper.value("T1", k, "matrix"))
    for k in ("runtime", "concurrent_tasks", "trajectories", "agreement_correctness", "tokens_generated",
              "tokens_per_second")
}  # fmt: skip


def table1(pair: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Paper Table 1's rows for a matched pair: ours beside the paper's, simulated figures marked."""
    base, ours = pair[CONTROLLER], pair[P2P]
    sim = bool(ours.get("simulated"))
    mark = " (SIMULATED)" if sim else ""
    unit = "simulated s" if sim else "s"

    def ac(m: dict[str, Any]) -> str:
        q = (m.get("quality") or {}).get("agreement_correctness")
        if not isinstance(q, dict):
            return "not scored"
        return f"{q['value']:.3f} [{q['ci95'][0]:.3f}, {q['ci95'][1]:.3f}]"

    speed = ours["tokens_per_second"] / base["tokens_per_second"] if base["tokens_per_second"] else float("nan")
    header = ["metric", "coral controller (ours)", "matrix P2P (ours)", "coral controller (paper)", "matrix (paper)"]
    b, o = base, ours
    rows = [
        [f"runtime ({unit}){mark}", hms(b["measured_seconds"]), hms(o["measured_seconds"]), *PAPER_T1["runtime"]],
        ["concurrent tasks", str(base.get("concurrency")), str(ours.get("concurrency")), *PAPER_T1["concurrent_tasks"]],
        ["trajectories", str(base["trajectories"]), str(ours["trajectories"]), *PAPER_T1["trajectories"]],
        ["agreement correctness [95% CI]", ac(base), ac(ours), *PAPER_T1["agreement_correctness"]],
        ["tokens generated", str(b["tokens_generated"]), str(o["tokens_generated"]), *PAPER_T1["tokens_generated"]],
        [f"tokens per {unit}{mark}", f"{base['tokens_per_second']:.1f}", f"{ours['tokens_per_second']:.1f}",
         *PAPER_T1["tokens_per_second"]],
        [f"speedup (tokens/s){mark}", "1.0x", f"{speed:.2f}x", "1.0x", "6.8x"],
    ]  # fmt: skip
    return header, rows


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def pair_table(
    pair: dict[str, dict[str, Any]], *, title: str, name: str = "table1_coral", notes: Sequence[str] = ()
) -> Table:
    header, rows = table1(pair)
    return Table(name, title, header, rows, list(notes))


def write_table(pair: dict[str, dict[str, Any]], out: Path, *, title: str) -> str:
    return pair_table(pair, title=title, name=out.name).write(out)


def best_of(run_dirs: Sequence[Path]) -> dict[str, Any]:
    """The run with the most tokens/s among `run_dirs` (a sweep's best point), from metrics.json alone."""
    runs = []
    for d in run_dirs:
        path = Path(d) / "metrics.json"
        try:
            runs.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"run directory {d}: cannot read metrics.json ({exc})") from None
    if not runs:
        raise ValueError("no run directories given")
    return max(runs, key=lambda m: m["tokens_per_second"])


def sweep_lines(run_dirs: Sequence[Path]) -> list[str]:
    lines = []
    for d in run_dirs:
        m = json.loads((Path(d) / "metrics.json").read_text())
        tps = m["tokens_per_second"]
        lines.append(f"- {m['system']} at concurrency {m.get('concurrency')}: {tps:.1f} tokens/s ({d})")
    return lines


def print_pair(pair: dict[str, dict[str, Any]]) -> str:
    header, rows = table1(pair)
    width = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    lines = ["  ".join(c.ljust(width[i]) for i, c in enumerate(r[:3])) for r in [header, *rows]]
    return "\n".join(lines)


def steady_tokens_per_second(run_dir: Path, bound: int) -> float | None:
    """Completion tokens/s while the run held its concurrency bound (the longest such stretch of the
    per-second series), i.e. without the ramp-up and the tail where the last conversations finish."""
    path = run_dir / "timeseries.json"
    if not path.exists():
        return None
    rows = json.loads(path.read_text())
    best: tuple[float, float, float] | None = None  # (duration, t0, t1) of the longest stretch
    start = None
    for i, r in enumerate([*rows, {"t": math.inf, "tasks_in_flight": -1}]):
        full = r.get("tasks_in_flight", 0) >= bound
        if full and start is None:
            start = i
        elif not full and start is not None:
            t0, t1 = rows[start]["t"], rows[i - 1]["t"]
            if t1 > t0 and (best is None or t1 - t0 > best[0]):
                best = (t1 - t0, start, i - 1)
            start = None
    if best is None or best[0] < 10:
        return None
    a, b = rows[int(best[1])], rows[int(best[2])]
    return (b["completion_tokens"] - a["completion_tokens"]) / (b["t"] - a["t"])


def backend_efficiency(
    metrics: dict[str, Any], run_dir: Path | None = None, bench: Path = Path("results/bench/serving_sim.json")
) -> dict[str, Any]:
    """A simulated run's tokens/s as a fraction of its replicas' saturation throughput, over the
    whole run and in steady state (while the concurrency bound was held).

    Saturation is the replica's best output tokens/s *for the run's own request mix*
    (`matrix bench saturation`: its LLM calls replayed on the sim engine core by ideal clients),
    times the replicas. Coral's requests carry the conversation, so that figure is well below the
    short-prompt serving benchmark's; the latter is kept beside it as `short_prompt_*`, and is the
    denominator only when the run has no output to take the mix from.
    """
    profile = (metrics.get("sim") or {}).get("profile")
    if not metrics.get("simulated") or not profile:
        return {}
    replicas = int(metrics.get("replicas", 1))
    out: dict[str, Any] = {"profile": profile, "replicas": replicas}
    short = None
    if bench.exists():
        points = (json.loads(bench.read_text()).get("runs", {}).get(profile) or {}).get("points") or []
        if points:
            short = max(p["output_tokens_per_s"] for p in points)
            out["short_prompt_saturation_tokens_per_s"] = short
            out["short_prompt_source"] = str(bench)
    best = None
    if run_dir is not None and (run_dir / "output.jsonl").exists():
        from matrix.bench import saturation as sat

        try:
            doc = sat.saturation(profile, sat.requests_from_run(run_dir), replicas=replicas)
        except (sat.WorkloadError, ValueError) as e:
            out["workload_error"] = str(e)
        else:
            best = doc["replica_saturation_tokens_per_s"]
            out["source"] = "the run's own request mix on the sim engine core (matrix bench saturation)"
            out["workload_saturation"] = {k: v for k, v in doc.items() if k != "points"}
    if best is None:
        if short is None:
            return {}
        best, out["source"] = short, "short-prompt serving benchmark (matrix bench serving)"
    saturation = best * replicas
    out["replica_saturation_tokens_per_s"] = best
    out["fraction_of_saturation"] = metrics["tokens_per_second"] / saturation if saturation else 0.0
    if short:
        out["short_prompt_fraction"] = metrics["tokens_per_second"] / (short * replicas)
    steady = steady_tokens_per_second(run_dir, int(metrics.get("concurrency") or 0)) if run_dir else None
    if steady is not None:
        time_scale = float(metrics.get("time_scale") or 1.0)
        out["steady_tokens_per_second"] = steady / time_scale
        out["steady_fraction_of_saturation"] = steady / time_scale / saturation if saturation else 0.0
    return out


# ------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.coral", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pair = sub.add_parser("pair", help="run both systems on the same servers and questions")
    pair.add_argument("--backend", choices=("vllm-cpu", "sim"), default="vllm-cpu")
    pair.add_argument("--input", default=None, help="MMLU-Pro .jsonl[.gz], hf://TIGER-Lab/MMLU-Pro, or 'generated'")
    pair.add_argument("--limit", type=int, default=16)
    pair.add_argument("--concurrency", type=int, default=16, help="P2P max_concurrent_tasks")
    pair.add_argument("--window", type=int, default=16, help="controller's concurrent conversations")
    pair.add_argument("--replicas", type=int, default=1, help="sim replicas")
    pair.add_argument("--profile", default="a100-llama31-8b")
    pair.add_argument("--time-scale", type=float, default=1.0)
    pair.add_argument("--max-turns", type=int, default=None)
    pair.add_argument("--root", type=Path, default=Path("results/runs"))
    pair.add_argument("--table", type=Path, default=None, help="write the table here (.md and .csv)")
    pair.add_argument("--run-id", default=None, help="run directories' name (default: a timestamp)")
    tab = sub.add_parser("table", help="Table 1 from run directories alone (each system at its best point)")
    tab.add_argument("--p2p", type=Path, nargs="+", required=True, help="P2P run directories (a sweep)")
    tab.add_argument("--controller", type=Path, nargs="+", required=True, help="controller run directories")
    tab.add_argument("--out", type=Path, required=True, help="table path without suffix (.md and .csv)")
    tab.add_argument("--title", default="Coral, paper Table 1 layout")
    args = p.parse_args(argv)
    if args.cmd == "table":
        result = {P2P: best_of(args.p2p), CONTROLLER: best_of(args.controller)}
        text = write_table(result, args.out, title=args.title)
        sweep = "\n".join(sweep_lines([*args.p2p, *args.controller]))
        note = "\nSweep (the table takes each system's best):\n\n"
        args.out.with_suffix(".md").write_text(text + note + sweep + "\n")
        print(args.out.with_suffix(".md").read_text())
        return 0
    rows = coral.load_questions(args.input, limit=args.limit)
    settings = SMALL_MODEL_SETTINGS if args.backend == "vllm-cpu" else coral.CoralSettings()
    if args.max_turns:
        settings = coral.CoralSettings(args.max_turns, settings.dialogue, settings.extractor)
    dataset = args.input if args.backend == "sim" and args.input not in (None, "generated") else None
    with start_servers(
        args.backend, replicas=args.replicas, profile=args.profile, time_scale=args.time_scale, dataset=dataset
    ) as servers:
        run_id = args.run_id or time.strftime("%Y%m%d-%H%M%S")
        result = run_pair(
            rows, servers, args.root, p2p_concurrency=args.concurrency, controller_window=args.window,
            settings=settings, run_id=run_id,
        )  # fmt: skip
    print(print_pair(result))
    if args.table:
        write_table(result, args.table, title="Coral, paper Table 1 layout")
        print(f"wrote {args.table.with_suffix('.md')} and .csv", file=sys.stderr)
    from experiments import tracking

    tracking.log_driver_runs(args.root, run_id, "experiments.coral pair")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
