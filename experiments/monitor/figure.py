"""A picture of the dashboard's data: every panel's queries, run through Prometheus, drawn with matplotlib
in the dashboard's layout (Grafana itself is not installable here)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from experiments.monitor.dashboard import queries, query_range


def _legend(fmt: str, labels: dict[str, str]) -> str:
    out = fmt
    for key in {part.split("}}")[0].strip() for part in fmt.split("{{")[1:]}:
        out = out.replace("{{" + key + "}}", labels.get(key, "")).replace("{{ " + key + " }}", labels.get(key, ""))
    return " ".join(out.split()) or ",".join(f"{k}={v}" for k, v in labels.items())


def draw(
    url: str,
    dashboard: dict[str, Any],
    start: float,
    end: float,
    out: Path,
    *,
    empty_notes: dict[str, str] | None = None,
    title: str | None = None,
) -> Path:
    """Write a PNG with one subplot per panel; a query with no series is named in its subplot with
    the reason from `empty_notes` when it has one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = dashboard.get("panels", [])
    cols = 2
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(15, 3.1 * rows), squeeze=False)
    by_panel: dict[str, list[Any]] = {}
    for q in queries(dashboard):
        by_panel.setdefault(q.panel, []).append(q)
    step = max(1.0, (end - start) / 300)
    for i, panel in enumerate(panels):
        ax = axes[i // cols][i % cols]
        ax.set_title(panel["title"], fontsize=10, loc="left")
        notes = []
        for q in by_panel.get(panel["title"], []):
            try:
                series = query_range(url, q.promql(), start, end, step)
            except (ValueError, OSError) as exc:
                notes.append(f"{q.ref}: error {exc}")
                continue
            if not series:
                why = (empty_notes or {}).get(q.key, "no series")
                notes.append(f"{q.ref} ({q.legend.replace('{{', '').replace('}}', '')}): {why.split(':')[0]}")
            for s in series[:12]:
                t = [float(v[0]) - start for v in s["values"]]
                y = [float(v[1]) for v in s["values"]]
                ax.plot(t, y, linewidth=1.2, label=_legend(q.legend, s.get("metric", {}))[:48])
        if ax.lines:
            ax.legend(fontsize=7, loc="upper left", frameon=False)
        if notes:
            ax.text(0.99, 0.02, "\n".join(notes), transform=ax.transAxes, ha="right", va="bottom", fontsize=6.5,
                    color="0.35", wrap=True)  # fmt: skip
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        ax.set_ylabel({"s": "seconds", "percent": "%", "percentunit": "fraction"}.get(unit, ""), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.set_xlabel("seconds since the window's start", fontsize=7)
    for j in range(len(panels), rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.suptitle(title or str(dashboard.get("title", "")), fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
