"""tests/host.py: the host's CPU stall over a span, and the model-versus-real check that allows for it."""

from __future__ import annotations

import math
import multiprocessing
import os
import time

import pytest

from tests.host import PRESSURE, CpuStall, assert_model_near_real, fastest_without_contention


def stall_of(seconds: float | None) -> CpuStall:
    stall = CpuStall()
    stall.seconds = seconds
    return stall


def test_the_fastest_a_real_run_could_have_been_widens_by_the_stall() -> None:
    assert fastest_without_contention(100.0, 10.0, stall_of(0.0)) == 100.0
    assert fastest_without_contention(100.0, 10.0, stall_of(5.0)) == pytest.approx(200.0)
    assert fastest_without_contention(100.0, 10.0, stall_of(10.0)) == math.inf
    assert fastest_without_contention(100.0, 10.0, stall_of(None)) == math.inf  # unknown: no upper bound


def test_the_lower_bound_always_holds_and_the_upper_one_allows_for_the_stall() -> None:
    assert_model_near_real(105.0, 100.0, 10.0, stall_of(0.0))
    with pytest.raises(AssertionError, match="more than 10% slower"):
        assert_model_near_real(85.0, 100.0, 10.0, stall_of(9.0))  # load never excuses a slow model
    with pytest.raises(AssertionError, match="more than 10% faster"):
        assert_model_near_real(120.0, 100.0, 10.0, stall_of(0.0))  # a quiet host: two-sided
    assert_model_near_real(120.0, 100.0, 10.0, stall_of(2.0))  # 2 s of 10 stalled: the real run could do 125


def _spin(until: float) -> None:
    while time.monotonic() < until:
        pass


@pytest.mark.skipif(not PRESSURE.exists(), reason="this kernel has no /proc/pressure/cpu")
def test_more_busy_processes_than_cores_show_as_a_stall() -> None:
    cores = len(os.sched_getaffinity(0))
    with CpuStall() as stall:
        until = time.monotonic() + 0.5
        procs = [multiprocessing.Process(target=_spin, args=(until,)) for _ in range(cores + 2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    assert stall.share is not None and stall.seconds is not None
    assert stall.share > 0.3, str(stall)  # two more spinners than cores: someone always waits
    assert "CPU stall" in str(stall) and str(CpuStall()) == "CPU stall unknown"
