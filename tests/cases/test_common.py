"""The helpers every case shares: seeds and hashes must never change (stored runs and both systems rely on
them), and the intervals must be the textbook ones."""

from __future__ import annotations

import math

import pytest

from matrix.cases import common, coral, nr, tau2
from matrix.cases.common import (
    Sampling,
    derived_seed,
    folded,
    mean_ci,
    proportion,
    stable_hash,
    two_proportion_p,
    wilson,
)


def test_seeds_and_hashes_are_pinned() -> None:
    # Values computed with the cases' own implementations before they were shared; a change here would
    # change every request's seed, every simulated trajectory and every sim reply.
    assert derived_seed("q0", 0, 1, "dialogue") == 443222654
    assert coral.request_seed("q0", 0, 1, "dialogue") == 443222654
    assert derived_seed("doc-7", 2, "score") == 1217622960
    assert nr.request_seed("doc-7", "score", 2) == 1217622960
    assert stable_hash("What is 2+2?", "3", "4") == 511822233841893357
    assert stable_hash("task_1", 300, 0, "telecom") == 15868587065199840074
    assert 0 <= derived_seed("x") < 2**31 and 0 <= stable_hash("x") < 2**64


def test_folded_ignores_spacing_and_case() -> None:
    assert folded("  The  Quick\nBrown  FOX ") == "the quick brown fox" == folded("the quick brown fox")


def test_wilson_interval() -> None:
    lo, hi = wilson(7, 20)
    assert lo == pytest.approx(0.1812, abs=1e-4) and hi == pytest.approx(0.5671, abs=1e-4)
    assert wilson(0, 0) == (0.0, 0.0)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
    assert proportion(7, 20) == {"value": 0.35, "k": 7, "n": 20, "ci95": list(wilson(7, 20))}
    assert proportion(0, 0)["value"] == 0.0


def test_mean_ci() -> None:
    mean, lo, hi = mean_ci([1.0, 0.0, 1.0, 1.0])
    half = 1.96 * math.sqrt(0.25 / 4)  # sample variance 0.25 over 4 values
    assert (mean, lo, hi) == pytest.approx((0.75, 0.75 - half, 0.75 + half))
    assert mean_ci([2.0]) == (2.0, 2.0, 2.0)
    assert all(math.isnan(v) for v in mean_ci([]))
    assert tau2.mean_ci is mean_ci


def test_two_proportion_p() -> None:
    assert two_proportion_p(50, 100, 50, 100) == 1.0
    assert two_proportion_p(45, 100, 50, 100) == pytest.approx(0.47895, abs=1e-5)
    assert two_proportion_p(1, 0, 1, 10) == 1.0
    assert coral.two_proportion_p is two_proportion_p


def test_sampling_is_shared() -> None:
    assert coral.Sampling is nr.Sampling is Sampling
    assert Sampling(0.2, 0.9, 64).body() == {"temperature": 0.2, "top_p": 0.9, "max_tokens": 64}
    assert tau2.Tau2Settings(max_tokens=64).llm_args() == {"temperature": 0.0, "top_p": 0.9, "max_tokens": 64}
    assert set(common.__all__) >= {"Sampling", "derived_seed", "stable_hash", "wilson", "mean_ci"}
