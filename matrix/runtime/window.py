"""The run window: what `wall_seconds` measures, one definition for every system under comparison.

A run's window starts when the system is ready to take its first task and ends when its last
task's result has reached its output:

- ready: every worker the system runs tasks on exists and is set up. For the P2P runtime, its
  agent actors (roles set up), sink and admission actors; for the Ray Data pipeline, its whole
  actor pool (each map_batches worker constructed); for tau2's threaded runner, the moment its
  thread pool starts its first simulation (after tau2's own preparation); for Coral's controller,
  its open client. Launching and setting them up is *startup*: recorded as `startup_seconds`,
  never inside the window. Starting Ray and the model servers and warming them up come before
  either and belong to no system.
- last result: the P2P sink has accepted the last row, Ray Data's writer has written the last
  block, tau2's runner has returned its last simulation (its per-simulation results rewrite
  included, as the reference does it), the controller has handed the last conversation to its
  writer. Closing files and converting output after that are not in the window.

`measured_seconds` is the window times the time scale, and tokens/s divides by it. Each system
records its window in metrics.json (`window`, from `record`) so that a pair's windows can be
checked against each other (tests/experiments/test_equal_footing.py).
"""

from __future__ import annotations

from typing import Any

DEFINITION = "ready-to-last-result"


def record(*, launched_at: float, ready_at: float, start_at: float, end_at: float) -> dict[str, Any]:
    """`startup_seconds` and the `window` block of a run's metrics (all times epoch seconds).

    `launched_at`: the system was asked to start its workers; `ready_at`: they are all up;
    `start_at` / `end_at`: the window (`start_at` is `ready_at`, or the first task's start where
    that comes first).
    """
    return {
        "startup_seconds": max(0.0, ready_at - launched_at),
        "window": {
            "definition": DEFINITION,
            "launched_at": launched_at,
            "ready_at": ready_at,
            "start_at": start_at,
            "end_at": end_at,
        },
    }


__all__ = ["DEFINITION", "record"]
