"""Fixtures of the benchmark tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture
def no_ray() -> Iterator[None]:
    """No Ray left over from another test module: the test starts its own (a local multi-node cluster)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    yield
    if ray.is_initialized():
        ray.shutdown()
