"""Figures of run directories, as PNG files: the paper's throughput curves, scalability lines
(Figs 4 and 7), per-task latency breakdown (Table 2) and message-size distribution (Fig 8).

Each `*_figure` function builds a matplotlib `Figure` (or None when its runs carry no data for it)
and each writer of the same name without `_figure` saves it to a PNG and returns the path. Nothing
here uses pyplot: figures are plain `Figure` objects on the Agg canvas, so no global state is left
behind. A figure made from simulated runs says SIMULATED in its title, and its times are simulated
seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from experiments import decompose, rundirs
from experiments.rundirs import Run

DPI = 110
SMOOTHING = 10  # samples in the rolling mean of the throughput curves
PARTS = (
    ("agent_processing", "agent processing", "#1f77b4"),
    ("queuing", "queuing", "#ff7f0e"),
    ("initialization", "initialization", "#2ca02c"),
    ("other", "other (transit, sink)", "#9a9a9a"),
)
_BASELINE_MAPS = ("Oranges", "Greens", "Purples", "Reds", "Greys")
SIZE_METRICS = (
    ("matrix_message_bytes", "message size before payload offloading"),
    ("matrix_hop_bytes", "message size on the wire, after payload offloading"),
)


@dataclass
class Plot:
    """One written figure: a short name (`throughput`, `scalability`, ...), its PNG, and a caption."""

    name: str
    path: Path
    caption: str


# --------------------------------------------------------------------------------------- helpers


def sim_title(runs: Sequence[Run], title: str) -> str:
    """The title, prefixed SIMULATED when any run is simulated (PARTLY SIMULATED when only some are)."""
    n_sim = sum(r.simulated for r in runs)
    if not n_sim:
        return title
    return f"{'SIMULATED' if n_sim == len(runs) else 'PARTLY SIMULATED'} — {title}"


def time_label(runs: Sequence[Run]) -> str:
    """The time axis' label: simulated seconds for simulated runs."""
    n_sim = sum(r.simulated for r in runs)
    if n_sim == len(runs) and runs:
        return "time since start (simulated seconds)"
    if n_sim:
        return "time since start (seconds; simulated seconds for SIMULATED runs)"
    return "time since start (seconds)"


def run_labels(runs: Sequence[Run]) -> dict[int, str]:
    """`system c=<concurrency>` per run (keyed by id()), the run id added where two would read the same;
    a simulated run among real ones is marked."""
    base = {id(r): f"{r.system} c={r.concurrency if r.concurrency is not None else '?'}" for r in runs}
    counts: dict[str, int] = {}
    for label in base.values():
        counts[label] = counts.get(label, 0) + 1
    mixed = 0 < sum(r.simulated for r in runs) < len(runs)
    out = {}
    for r in runs:
        label = base[id(r)]
        if counts[label] > 1:
            label += f" ({r.run_id})"
        if mixed and r.simulated:
            label += " [SIMULATED]"
        out[id(r)] = label
    return out


def system_colors(runs: Sequence[Run]) -> dict[int, tuple[float, float, float, float]]:
    """A colour per run: matrix in blues, each baseline in its own hue, darker for more concurrency."""
    groups = rundirs.by_system(runs)
    systems = sorted(groups, key=lambda s: (s != "matrix", s))
    out = {}
    baseline = 0
    for system in systems:
        if system == "matrix":
            cmap = colormaps["Blues"]
        else:
            cmap = colormaps[_BASELINE_MAPS[baseline % len(_BASELINE_MAPS)]]
            baseline += 1
        members = sorted(groups[system], key=lambda r: (r.concurrency or 0, r.run_id))
        for i, r in enumerate(members):
            shade = 0.8 if len(members) == 1 else 0.45 + 0.5 * i / (len(members) - 1)
            out[id(r)] = cmap(shade)
    return out


def system_color(runs: Sequence[Run], system: str) -> tuple[float, float, float, float]:
    """One colour for a whole system (the scalability lines), in the same hues as `system_colors`."""
    systems = sorted({r.system for r in runs}, key=lambda s: (s != "matrix", s))
    if system == "matrix":
        return colormaps["Blues"](0.8)
    baselines = [s for s in systems if s != "matrix"]
    return colormaps[_BASELINE_MAPS[baselines.index(system) % len(_BASELINE_MAPS)]](0.75)


def rolling_mean(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over up to `window` samples (fewer at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, out: Path) -> Path:
    """Write the figure as a PNG (creating the folder); returns `out`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=DPI)
    return out


def human_bytes(n: float) -> str:
    if math.isinf(n):
        return "∞"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:g} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------------------- throughput


def throughput_figure(runs: Sequence[Run], title: str, window: int = SMOOTHING) -> Figure | None:
    """Tokens/s over time, one line per run with a per-second series (rolling mean of `window` samples)."""
    series = [(r, rundirs.throughput_series(r)) for r in runs]
    series = [(r, s) for r, s in series if s]
    if not series:
        return None
    with_data = [r for r, _ in series]
    labels, colors = run_labels(with_data), system_colors(with_data)
    fig = _figure(8.5, 4.4)
    ax = fig.add_subplot()
    for r, s in series:
        ts = [t for t, _ in s]
        ax.plot(ts, rolling_mean([v for _, v in s], window), label=labels[id(r)], color=colors[id(r)], lw=1.6)
    ax.set_title(sim_title(with_data, title), fontsize=11)
    ax.set_xlabel(time_label(with_data))
    ax.set_ylabel(f"completion tokens/s ({window}-sample rolling mean)")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if len(series) > 4:
        fig.legend(fontsize=8, ncols=3, loc="outside lower center", frameon=False)
    else:
        ax.legend(fontsize=8, loc="best")
    return fig


def throughput_over_time(runs: Sequence[Run], out: Path, title: str) -> Path | None:
    fig = throughput_figure(runs, title)
    return save(fig, out) if fig is not None else None


# ---------------------------------------------------------------------------------- scalability


def scalability_points(runs: Sequence[Run]) -> dict[str, list[tuple[int, float, Run]]]:
    """Per system, (concurrency, tokens/s, run) for runs that have both, sorted by concurrency."""
    out: dict[str, list[tuple[int, float, Run]]] = {}
    for r in runs:
        if r.concurrency is None or math.isnan(r.tokens_per_second):
            continue
        out.setdefault(r.system, []).append((r.concurrency, r.tokens_per_second, r))
    for pts in out.values():
        pts.sort(key=lambda p: (p[0], p[1]))
    return out


def scalability_figure(runs: Sequence[Run], title: str) -> Figure | None:
    """Tokens/s against max concurrency, one line per system through its best run at each concurrency.

    None unless the runs span two concurrencies or more: one concurrency is not a curve.
    """
    points = scalability_points(runs)
    if len({c for pts in points.values() for c, _, _ in pts}) < 2:
        return None
    used = [r for pts in points.values() for _, _, r in pts]
    fig = _figure(7.5, 4.4)
    ax = fig.add_subplot()
    concurrencies = sorted({c for pts in points.values() for c, _, _ in pts})
    top_at: dict[int, float] = {}
    for pts in points.values():
        for c, v, _ in pts:
            top_at[c] = max(v, top_at.get(c, -math.inf))
    for system in sorted(points, key=lambda s: (s != "matrix", s)):
        pts = points[system]
        best_at: dict[int, float] = {}
        for c, v, _ in pts:
            best_at[c] = max(v, best_at.get(c, -math.inf))
        color = system_color(used, system)
        xs = sorted(best_at)
        marker = "o" if system == "matrix" else "s"
        ax.plot(xs, [best_at[c] for c in xs], marker=marker, ms=7, lw=2, color=color, label=system)
        extra = [(c, v) for c, v, _ in pts if v < best_at[c]]
        if extra:
            ax.scatter(
                [c for c, _ in extra],
                [v for _, v in extra],
                marker=marker,
                s=22,
                color=color,
                alpha=0.45,
                label=f"{system}, other runs at that concurrency",
            )
        for c in xs:
            # The highest value at a concurrency is labelled above its point, the others below: no overlap.
            below = best_at[c] < top_at[c]
            ax.annotate(
                f"{best_at[c]:,.0f}",
                (c, best_at[c]),
                textcoords="offset points",
                xytext=(0, -14 if below else 8),
                ha="center",
                fontsize=7,
                color=color,
            )
    if concurrencies[0] > 0 and concurrencies[-1] / concurrencies[0] >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xticks(concurrencies, _spread_labels(concurrencies, log=ax.get_xscale() == "log"))
    ax.minorticks_off()
    ax.set_title(sim_title(used, title), fontsize=11)
    ax.set_xlabel("max concurrency (tasks in flight)")
    ax.set_ylabel("completion tokens/s (whole run)")
    ax.set_ylim(bottom=0, top=max(v for pts in points.values() for _, v, _ in pts) * 1.15)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def _spread_labels(values: Sequence[int], *, log: bool) -> list[str]:
    """Tick labels, every label that would touch its left neighbour moved down a line."""
    pos = [math.log2(v) if log else float(v) for v in values]
    span = (pos[-1] - pos[0]) or 1.0
    out, prev, lowered = [], -math.inf, False
    for v, p in zip(values, pos, strict=True):
        lowered = (p - prev) / span < 0.06 and not lowered
        out.append(("\n" if lowered else "") + str(v))
        prev = p
    return out


def scalability(runs: Sequence[Run], out: Path, title: str) -> Path | None:
    fig = scalability_figure(runs, title)
    return save(fig, out) if fig is not None else None


# ----------------------------------------------------------------------------- latency breakdown


def breakdown_shares(run: Run, stat: str = "mean") -> dict[str, float] | None:
    """{part: percent of the task's end-to-end time} from the run's breakdown (`stat` over tasks)."""
    shares = (run.breakdown or {}).get("share_percent")
    if not isinstance(shares, dict):
        return None
    out = {}
    for key, _, _ in PARTS:
        v = shares.get(key, {})
        v = v.get(stat) if isinstance(v, dict) else None
        out[key] = float(v) if isinstance(v, int | float) else 0.0
    return out if any(out.values()) else None


def latency_breakdown_figure(runs: Sequence[Run], title: str, stat: str = "mean") -> Figure | None:
    """Stacked horizontal bars: where each task's end-to-end time went, per run with a breakdown.

    The mean share over tasks is the default because means add up to 100% and medians need not.
    """
    rows = [(r, s) for r in runs if (s := breakdown_shares(r, stat)) is not None]
    if not rows:
        return None
    with_data = [r for r, _ in rows]
    labels = run_labels(with_data)
    fig = _figure(8.5, 1.5 + 0.42 * len(rows))
    ax = fig.add_subplot()
    y = list(range(len(rows)))[::-1]
    left = [0.0] * len(rows)
    for key, name, color in PARTS:
        widths = [s[key] for _, s in rows]
        ax.barh(y, widths, left=left, color=color, label=name, height=0.7)
        for yi, lo, w in zip(y, left, widths, strict=True):
            if w >= 7:
                ax.text(
                    lo + w / 2,
                    yi,
                    f"{w:.0f}%",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if key != "other" else "black",
                )
        left = [lo + w for lo, w in zip(left, widths, strict=True)]
    ax.set_yticks(y, [f"{labels[id(r)]}  (n={(r.breakdown or {}).get('tasks', '?')})" for r, _ in rows], fontsize=8)
    ax.set_xlim(0, max(100.0, *left))
    ax.set_xlabel(f"{stat} share of a task's end-to-end time (%)")
    ax.set_title(sim_title(with_data, title), fontsize=11)
    fig.legend(fontsize=8, ncols=4, loc="outside lower center", frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return fig


def latency_breakdown(runs: Sequence[Run], out: Path, title: str) -> Path | None:
    fig = latency_breakdown_figure(runs, title)
    return save(fig, out) if fig is not None else None


# -------------------------------------------------------------------------------- message sizes


def share_above(cumulative: Sequence[tuple[float, int]], threshold: float) -> tuple[float, float]:
    """The fraction of observations larger than `threshold`, from cumulative histogram buckets.

    Returns (low, high): equal unless a bucket straddles the threshold, whose observations may lie on
    either side. (0, 0) for an empty histogram.
    """
    counts = rundirs.bucket_counts(cumulative)
    total = sum(n for _, n in counts)
    if total <= 0:
        return 0.0, 0.0
    above = straddle = 0
    lo = -math.inf
    for hi, n in counts:
        if lo >= threshold:
            above += n
        elif hi > threshold:
            straddle += n
        lo = hi
    return above / total, (above + straddle) / total


def size_metric(run: Run) -> tuple[str, str] | None:
    """The message-size histogram a run has (before offloading preferred), and what it measures."""
    for metric, meaning in SIZE_METRICS:
        roles = run.histograms.get(metric) or {}
        if any(b and max(n for _, n in b) > 0 for b in roles.values()):
            return metric, meaning
    return None


def _merged(roles: dict[str, list[tuple[float, int]]]) -> list[tuple[float, int]]:
    total: dict[float, int] = {}
    for buckets in roles.values():
        for bound, n in buckets:
            total[bound] = total.get(bound, 0) + n
    return sorted(total.items())


def message_sizes_figure(runs: Sequence[Run], title: str) -> Figure | None:
    """Histogram of message sizes over the log2 byte buckets, stacked by sending role, for the run with
    the most tokens/s among those that recorded sizes; a line at its offload threshold, and the share
    of messages larger than it."""
    candidates = [r for r in runs if size_metric(r) is not None]
    if not candidates:
        return None
    run = rundirs.best(candidates)
    metric, meaning = size_metric(run) or ("", "")
    roles = {role: rundirs.bucket_counts(b) for role, b in sorted(run.histograms[metric].items())}
    bounds = sorted({hi for b in roles.values() for hi, _ in b})
    per_bound = {role: dict(b) for role, b in roles.items()}
    totals = [sum(per_bound[role].get(hi, 0) for role in roles) for hi in bounds]
    nonzero = [i for i, n in enumerate(totals) if n > 0]
    first, last = max(nonzero[0] - 1, 0), min(nonzero[-1] + 1, len(bounds) - 1)
    threshold = run.metrics.get("offload_threshold")
    if isinstance(threshold, int | float) and not isinstance(threshold, bool):
        # Show the threshold between bars: its bucket and the one below it stay in view.
        at = next((i for i, hi in enumerate(bounds) if hi >= threshold), len(bounds) - 1)
        first, last = min(first, max(at - 1, 0)), max(last, min(at + 1, len(bounds) - 1))
    shown = bounds[first : last + 1]
    fig = _figure(8.5, 4.4)
    ax = fig.add_subplot()
    x = list(range(len(shown)))
    bottom = [0] * len(shown)
    cmap = colormaps["tab10"]
    for k, role in enumerate(roles):
        heights = [per_bound[role].get(hi, 0) for hi in shown]
        if not any(heights):
            continue
        ax.bar(x, heights, bottom=bottom, width=0.9, color=cmap(k % 10), label=role or "(no role)")
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    # Bars sit between bucket edges: bar i covers (shown[i-1], shown[i]]; edge j is at x = j + 0.5.
    lower = bounds[first - 1] if first > 0 else shown[0] / 2
    edges = [lower, *shown]
    ax.set_xticks(
        [i - 0.5 for i in range(len(edges))],
        [human_bytes(e) for e in edges],
        fontsize=8,
        rotation=45 if len(edges) > 10 else 0,
    )
    ax.set_xlim(-0.6, len(shown) - 0.4)
    total = sum(totals)
    if isinstance(threshold, int | float) and not isinstance(threshold, bool):
        xt = _edge_position(edges, float(threshold))
        lo, hi = share_above(_merged(run.histograms[metric]), float(threshold))
        share = f"{100 * lo:.1f}%" if hi - lo < 1e-12 else f"{100 * lo:.1f}% to {100 * hi:.1f}%"
        if xt is not None:
            ax.axvline(xt, color="#d62728", ls="--", lw=1.6, label=f"offload threshold {threshold:g} B")
        ax.text(
            0.98,
            0.95,
            f"{share} of {total:,} messages\nlarger than {threshold:g} B",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=9,
            bbox={"boxstyle": "round", "fc": "white", "ec": "#d62728"},
        )
    else:
        ax.text(
            0.98,
            0.95,
            f"{total:,} messages; payload offloading off",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=9,
        )
    ax.set_title(sim_title([run], f"{title}\nrun {run.system}/{run.run_id} ({metric})"), fontsize=10)
    ax.set_xlabel(f"{meaning} (bytes, log2 buckets)")
    ax.set_ylabel("messages (stacked by sending role)")
    ax.grid(axis="y", alpha=0.3)
    fig.legend(fontsize=8, ncols=6, loc="outside lower center", frameon=False)
    return fig


def _edge_position(edges: Sequence[float], value: float) -> float | None:
    """x of `value` on the bar axis (edge j at j - 0.5), log-interpolated inside a bucket."""
    for j in range(1, len(edges)):
        lo, hi = edges[j - 1], edges[j]
        if lo < value <= hi:
            if math.isinf(hi) or lo <= 0:
                return j - 0.5
            return j - 1.5 + (math.log2(value) - math.log2(lo)) / (math.log2(hi) - math.log2(lo))
    if edges and value == edges[0]:
        return -0.5
    return None


def message_sizes(runs: Sequence[Run], out: Path, title: str) -> Path | None:
    fig = message_sizes_figure(runs, title)
    return save(fig, out) if fig is not None else None


# ---------------------------------------------------------------------------------- per experiment


def plots_for(case: str, experiment: str, runs: Sequence[Run], out_dir: Path) -> list[Plot]:
    """Every figure that has data for one experiment, written to `out_dir/<case>_<experiment>_<name>.png`."""
    out_dir = Path(out_dir)
    stem = f"{_slug(case)}_{_slug(experiment)}"
    name = f"{case} / {experiment}"
    sim = " Times are simulated seconds." if any(r.simulated for r in runs) else ""
    plots: list[Plot] = []

    def missing(has: list[Run]) -> str:
        ids = {id(r) for r in has}
        gone = [r for r in runs if id(r) not in ids]
        if not gone:
            return ""
        return " No data for: " + ", ".join(f"{r.system}/{r.run_id}" for r in gone) + "."

    def add(kind: str, path: Path | None, caption: Callable[[], str]) -> None:
        """Keep a figure that was drawn (`path`), with its caption (computed only then)."""
        if path:
            plots.append(Plot(kind, path, caption()))

    def sizes_caption() -> str:
        run = rundirs.best([r for r in runs if size_metric(r) is not None])
        metric, meaning = size_metric(run) or ("", "")
        return (
            f"Distribution of {meaning} ({metric}) in {run.system}/{run.run_id}, "
            "the fastest run that recorded sizes, with its payload-offload threshold (paper Fig 8)."
        )

    add(
        "throughput",
        throughput_over_time(runs, out_dir / f"{stem}_throughput.png", f"{name}: tokens per second over time"),
        lambda: (
            f"Completion tokens per second during each run, from the per-second series ({SMOOTHING}-sample "
            f"rolling mean).{sim}{missing([r for r in runs if rundirs.throughput_series(r)])}"
        ),
    )
    add(
        "scalability",
        scalability(runs, out_dir / f"{stem}_scalability.png", f"{name}: throughput against concurrency"),
        lambda: (
            "Tokens per second of the whole run against its maximum concurrency; "
            "each system's line goes through its best run at each concurrency (paper Figs 4 and 7)."
        ),
    )
    # Matrix runs only: a baseline's rows time its own stages differently (the controller's rows are
    # created when read, long before their first turn), so their shares would not mean the same thing.
    p2p = [r for r in runs if r.system == "matrix"]
    add(
        "latency",
        latency_breakdown(p2p, out_dir / f"{stem}_latency.png", f"{name}: where each Matrix task's time went"),
        lambda: (
            "Mean share of each Matrix task's end-to-end time spent in agent processing, "
            "queuing, initialization and the rest (paper Table 2), from the hops in its output row."
        ),
    )
    add(
        "message_sizes",
        message_sizes(runs, out_dir / f"{stem}_message_sizes.png", f"{name}: message sizes"),
        sizes_caption,
    )
    if experiment == decompose.EXPERIMENT:
        add(
            "decomposition",
            decompose.figure(case, runs, out_dir / f"{stem}_decomposition.png"),
            lambda: (
                "The paper's speedup as a chain of measured factors at the paper's layout, one bar per "
                "factor, their product and the paper's factor (SIMULATED, virtual clock; REPRODUCE.md)."
            ),
        )
    return plots


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in text)
