"""`matrix monitor`: a Prometheus that watches runs live, and a Grafana dashboard for it (issue #21)."""

from __future__ import annotations

from experiments.monitor.cli import register_cli

__all__ = ["register_cli"]
