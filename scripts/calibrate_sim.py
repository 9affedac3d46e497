"""Print the simulated engine's fit against published serving figures, point by point.

    python scripts/calibrate_sim.py                      # both profiles, a few seconds
    python scripts/calibrate_sim.py --json fit.json      # also write the table as JSON
    python scripts/calibrate_sim.py --fit                # re-fit the profiles' fitted numbers

Every "ours" figure is SIMULATED: the engine core replays each published workload in virtual
time. Which rows are fitted, which are only shown and why, and the workload assumed for each
source are printed under each table and documented in `matrix/llm/sim/calibration.py`.

`--fit` searches the five fitted numbers of the H100 profile (log-error least squares over its
fitted points; nothing is tuned per point), then the A100 profile's two hardware efficiencies with
the H100's host-side overheads. It prints the result as YAML to paste into the profile files; it
does not edit them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from matrix.llm.sim.calibration import (
    FIT_PARAMETERS,
    calibrate,
    fit,
    format_table,
    lines_as_dicts,
    loss,
)
from matrix.llm.sim.profile import SimProfile, list_profiles, load_profile

HOST_OVERHEADS = ("step_overhead_s", "per_sequence_overhead_s", "api_overhead_s")


def _progress(label: str) -> object:
    started = time.monotonic()
    best = [float("inf")]

    def report(calls: int, value: float) -> None:
        best[0] = min(best[0], value)
        if calls % 20 == 0:
            print(
                f"  {label}: {calls} evaluations, best loss {best[0]:.4f}, {time.monotonic() - started:.0f}s",
                file=sys.stderr,
                flush=True,
            )

    return report


def _yaml(profile: SimProfile) -> str:
    rows = [f"  {p}: {getattr(profile, p):.4g}" for p in FIT_PARAMETERS]
    return f"# {profile.name}\nfitted:\n" + "\n".join(rows)


def run_fit(iters: int, free: tuple[str, ...]) -> list[SimProfile]:
    h100, h_loss = fit(
        "h100-llama31-8b",
        parameters=free,
        iters=iters,
        progress=_progress("h100"),  # type: ignore[arg-type]
    )
    a100_base = load_profile("a100-llama31-8b").replace(**{p: getattr(h100, p) for p in HOST_OVERHEADS})
    a100, a_loss = fit(
        a100_base,
        parameters=("memory_efficiency", "compute_efficiency"),
        iters=iters,
        progress=_progress("a100"),  # type: ignore[arg-type]
    )
    print(f"fit done: h100 loss {h_loss:.4f}, a100 loss {a_loss:.4f} (reduced workloads)\n")
    print(_yaml(h100) + "\n\n" + _yaml(a100) + "\n")
    return [h100, a100]


def _finite(value: Any) -> Any:
    """NaN (a metric that does not apply) becomes null, so the JSON is strict."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _free(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in FIT_PARAMETERS]
    if unknown or not names:
        raise SystemExit(f"--free: unknown parameter(s) {unknown or text!r}; choose from {', '.join(FIT_PARAMETERS)}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", action="append", help="profile name or YAML path (default: all packaged)")
    parser.add_argument("--json", type=Path, help="write the comparison lines as JSON here")
    parser.add_argument("--fit", action="store_true", help="re-fit the fitted numbers and show that fit")
    parser.add_argument("--iters", type=int, default=150, help="Nelder-Mead iterations per fit (with --fit)")
    parser.add_argument(
        "--free",
        default=",".join(FIT_PARAMETERS),
        help="comma-separated H100 parameters to fit (with --fit); the others keep their YAML values",
    )
    args = parser.parse_args(argv)

    profiles: list[SimProfile | str] = (
        list(run_fit(args.iters, _free(args.free))) if args.fit else list(args.profile or list_profiles())
    )
    started = time.monotonic()
    lines = []
    for prof in profiles:
        group = calibrate(prof)
        lines += group
        print(format_table(group))
        print(f"  loss (sum of squared log errors, fitted lines): {loss(group):.4f}\n")
    print(f"calibration replayed in {time.monotonic() - started:.1f}s of wall time (virtual time inside)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {"simulated": True, "time_unit": "simulated seconds", "lines": lines_as_dicts(lines)}
        args.json.write_text(json.dumps(_finite(doc), indent=2, allow_nan=False) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
