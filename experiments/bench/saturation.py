"""Saturation of a simulated replica for a run's own request mix (virtual time, exact).

The serving benchmark (`matrix bench serving`) measures short prompts with 128-token replies. A
multi-turn case sends something else: Coral's requests carry the whole conversation, so prefill
and KV-cache memory cost more per generated token and a replica saturates at a lower output rate.
Backend efficiency must be judged against the replica's best rate *for the requests the run sent*.

This module reads those requests back from a run's `output.jsonl` (each turn records its prompt
and completion tokens), replays them on the sim engine core as a closed loop of ideal clients (no
HTTP, no host overheads, zero think time) at a sweep of concurrencies, and reports the best output
tokens/s per replica. Requests are shuffled with a fixed seed, so the mix is the run's but the
conversation order is not kept: an upper bound that no real client can beat on the same profile.
Every figure is SIMULATED.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from matrix.llm.sim.loadgen import RequestSpec, run_closed_loop
from matrix.llm.sim.profile import load_profile

DEFAULT_CONCURRENCIES = (32, 64, 128, 192, 256, 384, 512)


class WorkloadError(ValueError):
    """A run's output cannot be turned into a request mix."""


def _rows(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise WorkloadError(f"{path}:{lineno}: not JSON ({e.msg})") from None


def requests_from_run(path: Path) -> list[RequestSpec]:
    """Every LLM call of a run, as (prompt tokens, completion tokens), in output order.

    `path` is a run directory (its `output.jsonl`) or an output file. Turns without a completion
    (rule agents such as Coral's matcher) are not LLM calls and are skipped; a row without turns,
    or a turn without usage, is an error naming the line, since the mix would silently be wrong.
    """
    path = Path(path)
    file = path / "output.jsonl" if path.is_dir() else path
    if not file.exists():
        raise WorkloadError(f"no run output at {file}")
    specs: list[RequestSpec] = []
    for lineno, row in _rows(file):
        turns = row.get("turns")
        if not isinstance(turns, list):
            raise WorkloadError(f"{file}:{lineno}: row {row.get('task_id')!r} has no 'turns' list")
        for i, turn in enumerate(turns):
            usage = turn.get("usage") if isinstance(turn, dict) else None
            if not isinstance(usage, dict):
                raise WorkloadError(f"{file}:{lineno}: turn {i} of row {row.get('task_id')!r} has no 'usage'")
            out = int(usage.get("completion_tokens") or 0)
            if out > 0:
                specs.append(RequestSpec(int(usage.get("prompt_tokens") or 0), out))
    if not specs:
        raise WorkloadError(f"{file}: no LLM calls with completion tokens")
    return specs


def saturation(
    profile: str,
    requests: Sequence[RequestSpec],
    *,
    concurrencies: Sequence[int] = DEFAULT_CONCURRENCIES,
    replicas: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """Closed-loop sweep of one replica on its share of `requests`; the best point is saturation.

    With `replicas` > 1 each replica gets 1/replicas of the mix (as a balanced router would give
    it), so the sweep runs on that share; concurrencies are per replica. Points that need more
    clients than the share has requests are skipped.
    """
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    prof = load_profile(profile)
    mix = list(requests)
    random.Random(seed).shuffle(mix)
    share = mix[: max(1, len(mix) // replicas)]
    points = []
    for c in concurrencies:
        if c < 1:
            raise ValueError(f"concurrency must be >= 1, got {c}")
        if len(share) < 4 * c:  # a window too short to leave the ramp-up behind
            continue
        res = run_closed_loop(prof, share, c)
        points.append(
            {
                "concurrency": c,
                "output_tokens_per_s": res.output_tokens_per_s,
                "ttft_p50_ms": res.ttft_p50_s * 1000,
                "tpot_p50_ms": res.tpot_p50_s * 1000,
                "preemptions": res.preemptions,
            }
        )
    if not points:
        raise WorkloadError(
            f"{len(share)} requests per replica are too few for concurrencies {list(concurrencies)} "
            "(need at least 4 per client)"
        )
    best = max(points, key=lambda p: p["output_tokens_per_s"])
    n = len(mix)
    return {
        "profile": profile,
        "simulated": True,
        "time_unit": "simulated seconds",
        "method": "closed loop of ideal clients on the sim engine core in virtual time, the run's own request mix",
        "requests": n,
        "mean_prompt_tokens": sum(r.prompt_tokens for r in mix) / n,
        "mean_completion_tokens": sum(r.output_tokens for r in mix) / n,
        "replicas": replicas,
        "points": points,
        "replica_saturation_tokens_per_s": best["output_tokens_per_s"],
        "best_concurrency_per_replica": best["concurrency"],
    }


def format_saturation(doc: dict[str, Any]) -> str:
    lines = [
        f"SIMULATED saturation of {doc['profile']} for {doc['requests']} requests "
        f"(mean prompt {doc['mean_prompt_tokens']:.0f}, mean completion {doc['mean_completion_tokens']:.0f} tokens)",
        "  per replica  out tok/s  TTFT p50 ms  TPOT p50 ms  preemptions",
    ]
    for p in doc["points"]:
        lines.append(
            f"  {p['concurrency']:>11}  {p['output_tokens_per_s']:9.1f}  {p['ttft_p50_ms']:11.1f}  "
            f"{p['tpot_p50_ms']:11.2f}  {p['preemptions']:>11}"
        )
    lines.append(
        f"  saturation: {doc['replica_saturation_tokens_per_s']:.1f} tokens/s per replica "
        f"at {doc['best_concurrency_per_replica']} clients"
    )
    return "\n".join(lines)
