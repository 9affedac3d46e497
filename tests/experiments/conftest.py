"""Composing the entry point's Hydra config in tests, as `python -m experiments.run` would."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir

CONF = Path(__file__).resolve().parents[2] / "experiments" / "conf"


def compose_cfg(*overrides: str) -> Any:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose(config_name="config", overrides=list(overrides))


@pytest.fixture
def shared_pools() -> Iterator[Any]:
    """The entry point's pool cache, emptied after the test (its servers stopped)."""
    from experiments.pools import SHARED

    yield SHARED
    SHARED.stop()
