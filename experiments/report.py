"""One self-contained HTML report of run directories, and optionally a W&B Report of the same runs.

A section is one experiment of one case (`coral/twin`): its runs, the speedup of the best matrix
run over the best baseline run, the figures of `experiments.plots` and the tables of
`experiments.tables` when that module is there. The HTML embeds every figure as a data URI and
carries its own CSS, so it opens anywhere with nothing fetched. Files that could not be read are
listed at the top; the rest of the report is made without them.
"""

from __future__ import annotations

import base64
import html
import math
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from experiments import rundirs
from experiments.rundirs import Problem, Run

DEFAULT_TITLE = "Matrix reproduction: runs report"
BASELINE_ORDER = ("coral-controller", "ray-data", "tau2-threads")
_said: set[str] = set()


def _say_once(text: str) -> None:
    if text not in _said:
        _said.add(text)
        print(text, file=sys.stderr)


class TableLike(Protocol):
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str]


@dataclass
class Section:
    """One (case, experiment): its runs, written figures (`experiments.plots.Plot`) and extra tables."""

    case: str
    experiment: str
    runs: list[Run]
    plots: list[Any] = field(default_factory=list)
    tables: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return "sec-" + "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in f"{self.case}-{self.experiment}")

    @property
    def simulated(self) -> bool:
        return any(r.simulated for r in self.runs)


@dataclass
class Speedup:
    matrix: Run
    baseline: Run

    @property
    def factor(self) -> float:
        b = self.baseline.tokens_per_second
        return self.matrix.tokens_per_second / b if b > 0 else math.nan


class NoRunsError(LookupError):
    """No run directory was found (after the case/experiment filter)."""


# ------------------------------------------------------------------------------------ numbers


def speedup(runs: Sequence[Run]) -> Speedup | None:
    """The best matrix run against the best baseline run (any other system), both with finite tokens/s."""
    ok = [r for r in runs if not math.isnan(r.tokens_per_second)]
    matrix = [r for r in ok if r.system == "matrix"]
    baseline = [r for r in ok if r.system != "matrix"]
    if not matrix or not baseline:
        return None
    return Speedup(rundirs.best(matrix), rundirs.best(baseline))


_QUALITY = (
    ("agreement_correctness", "agreement correctness"),
    ("average_reward", "average reward"),
    ("survival_rate", "survival rate"),
)


def quality_headline(quality: Any) -> str:
    """The first known headline quality number of a run (with its 95% interval when there is one)."""
    if not isinstance(quality, dict):
        return ""
    for key, name in _QUALITY:
        if key not in quality:
            continue
        v = quality[key]
        ci = quality.get(f"{key}_ci95")
        if isinstance(v, dict):
            ci, v = v.get("ci95"), v.get("value")
        if not isinstance(v, int | float):
            continue
        text = f"{name} {v:.3f}"
        if isinstance(ci, list | tuple) and len(ci) == 2 and all(isinstance(c, int | float) for c in ci):
            text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
        if key == "survival_rate" and isinstance(quality.get("questions"), int):
            text = f"{quality['questions']} questions, {text}"
        return text
    return ""


def _num(v: Any, fmt: str = "{:,.0f}") -> str:
    if isinstance(v, bool) or not isinstance(v, int | float) or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return fmt.format(v)


def runtime_text(run: Run) -> str:
    s = run.metrics.get("measured_seconds", run.metrics.get("wall_seconds"))
    if not isinstance(s, int | float) or isinstance(s, bool):
        return "–"
    return f"{s:,.1f} {'simulated s' if run.simulated else 's'}"


# ---------------------------------------------------------------------------------------- HTML

_CSS = """
:root { --ink: #1d2330; --muted: #5b6475; --line: #d9dee7; --bg: #fbfcfe; --accent: #1f5fa8;
  --sim: #a4410e; --simbg: #fff1e6; --bad: #b3261e; --badbg: #fdecea; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 16px/1.55 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Noto Sans", sans-serif; }
main { max-width: 1080px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 1.9rem; margin: 0.2em 0 0.3em; line-height: 1.2; }
h2 { font-size: 1.45rem; margin: 2.2em 0 0.5em; padding-top: 0.6em; border-top: 2px solid var(--line); }
h3 { font-size: 1.1rem; margin: 1.6em 0 0.4em; }
a { color: var(--accent); }
p.meta, .muted { color: var(--muted); font-size: 0.92rem; }
code { font: 0.88em/1.4 ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
.badge { display: inline-block; font-size: 0.72rem; font-weight: 700; letter-spacing: 0.04em;
  padding: 0.1em 0.5em; border-radius: 4px; vertical-align: middle; }
.badge.sim { color: var(--sim); background: var(--simbg); border: 1px solid var(--sim); }
.badge.real { color: #1b6b2f; background: #e8f5eb; border: 1px solid #1b6b2f; }
.problems { border: 2px solid var(--bad); background: var(--badbg); border-radius: 8px; padding: 12px 18px;
  margin: 16px 0 24px; }
.problems h2 { border: 0; margin: 0 0 0.3em; padding: 0; font-size: 1.15rem; color: var(--bad); }
.problems ul { margin: 0; padding-left: 1.2em; }
.problems li { margin: 0.15em 0; overflow-wrap: anywhere; }
nav.toc { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 10px 18px; }
nav.toc h2 { border: 0; margin: 0.2em 0; padding: 0; font-size: 1.1rem; }
nav.toc ol { margin: 0.3em 0; padding-left: 1.4em; columns: 2; column-gap: 32px; }
nav.toc li { break-inside: avoid; }
.table-wrap { overflow-x: auto; margin: 0.6em 0 1em; }
table { border-collapse: collapse; font-size: 0.88rem; background: #fff; min-width: 60%; }
th, td { border: 1px solid var(--line); padding: 5px 9px; text-align: left; vertical-align: top; }
th { background: #eef2f8; font-weight: 600; }
tbody tr:nth-child(even) { background: #f6f8fb; }
table.runs code { white-space: nowrap; }
table.runs td:nth-child(7) { min-width: 12em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.best td:first-child::after { content: " \\2605"; color: #c68a00; }
.speedup { font-size: 1.05rem; background: #fff; border-left: 4px solid var(--accent); padding: 8px 14px;
  margin: 0.8em 0; }
.speedup strong { font-size: 1.25rem; }
figure { margin: 1.4em 0; background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 10px; }
figure img { display: block; width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 0.9rem; margin-top: 6px; }
ul.notes { color: var(--muted); font-size: 0.88rem; margin: 0.2em 0 1em; }
footer { margin-top: 48px; color: var(--muted); font-size: 0.85rem; }
"""

_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.dataset.plotsLoaded = String(ok);
  document.body.dataset.plotsTotal = String(imgs.length);
});
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _sim_badge(simulated: bool) -> str:
    return '<span class="badge sim">SIMULATED</span>' if simulated else ""


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _runs_table(section: Section, best: set[int]) -> str:
    head = [
        "System",
        "Run id",
        "Concurrency",
        "Tokens/s",
        "Trajectories",
        "Runtime",
        "Quality",
        "Simulated",
        "Hardware",
    ]
    rows = []
    for r in section.runs:
        cls = ' class="best"' if id(r) in best else ""
        cells = [
            f"<td>{_e(r.system)}</td>",
            f"<td><code>{_e(r.run_id)}</code></td>",
            f'<td class="num">{_num(r.concurrency)}</td>',
            f'<td class="num">{_num(r.tokens_per_second, "{:,.1f}")}</td>',
            f'<td class="num">{_num(r.metrics.get("trajectories"))}</td>',
            f'<td class="num">{_e(runtime_text(r))}</td>',
            f"<td>{_e(quality_headline(r.metrics.get('quality')))}</td>",
            f"<td>{_sim_badge(True) if r.simulated else 'real'}</td>",
            f"<td>{_e(r.metrics.get('hardware') or '–')}</td>",
        ]
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    return (
        f'<div class="table-wrap"><table class="runs"><thead><tr>{header}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _speedup_html(section: Section) -> tuple[str, set[int]]:
    s = speedup(section.runs)
    systems = sorted({r.system for r in section.runs})
    if s is None:
        why = "no matrix run" if "matrix" not in systems else "no baseline run"
        return f'<p class="speedup muted">No speedup: this experiment has {why} with a throughput.</p>', set()
    sim = s.matrix.simulated or s.baseline.simulated
    m, b = s.matrix, s.baseline
    text = (
        f'<p class="speedup" data-speedup="{s.factor:.6g}">Speedup <strong>{s.factor:.2f}×</strong> {_sim_badge(sim)} '
        f"— best matrix run <code>{_e(m.run_id)}</code> (c={_num(m.concurrency)}, "
        f"{_num(m.tokens_per_second, '{:,.1f}')} tokens/s) over best {_e(b.system)} run <code>{_e(b.run_id)}</code> "
        f"(c={_num(b.concurrency)}, {_num(b.tokens_per_second, '{:,.1f}')} tokens/s).</p>"
    )
    return text, {id(m), id(b)}


def _table_html(table: Any) -> str:
    title = str(getattr(table, "title", "") or "")
    header = [str(h) for h in (getattr(table, "header", None) or [])]
    rows = [[str(c) for c in row] for row in (getattr(table, "rows", None) or [])]
    notes = [_note(n) for n in (getattr(table, "notes", None) or []) if str(n).strip()]
    out = [f"<h3>{_e(title)}</h3>"] if title else []
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{_e(c)}</td>' if _numeric(c) else f"<td>{_e(c)}</td>" for c in row) + "</tr>"
        for row in rows
    )
    out.append(f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>')
    if notes:
        out.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    return "\n".join(out)


def _note(note: Any) -> str:
    """A table note as a list item: Markdown list markers dropped (notes are written for Markdown too)."""
    text = str(note).strip()
    return text[2:] if text.startswith(("- ", "* ", "• ")) else text


def _numeric(cell: str) -> bool:
    t = cell.replace(",", "").replace("×", "").replace("%", "").replace("x", "").strip()
    try:
        float(t)
    except ValueError:
        return False
    return True


def _section_html(section: Section) -> str:
    n_sim = sum(r.simulated for r in section.runs)
    parts = [
        f'<section id="{_e(section.anchor)}">',
        f"<h2>{_e(section.case)} / {_e(section.experiment)} {_sim_badge(bool(n_sim))}</h2>",
    ]
    systems = ", ".join(sorted({r.system for r in section.runs}))
    meta = f"{len(section.runs)} run(s): {systems}."
    if n_sim:
        meta += (
            f" {n_sim} of {len(section.runs)} run(s) SIMULATED (the sim backend: modelled engines, "
            "times are simulated seconds)."
        )
    parts.append(f'<p class="meta">{_e(meta)}</p>')
    speed, best = _speedup_html(section)
    parts.append(speed)
    parts.append(_runs_table(section, best))
    if section.notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in section.notes) + "</ul>")
    for plot in section.plots:
        alt = f"{section.case}/{section.experiment} {plot.name}"
        parts.append(
            f'<figure data-plot="{_e(plot.name)}"><img src="{_data_uri(plot.path)}" alt="{_e(alt)}">'
            f"<figcaption>{_sim_badge(section.simulated)} {_e(plot.caption)}</figcaption></figure>"
        )
    for table in section.tables:
        parts.append(_table_html(table))
    parts.append("</section>")
    return "\n".join(parts)


def build_html(sections: Sequence[Section], problems: Sequence[Problem | Any], out: Path, title: str) -> Path:
    """Write one self-contained HTML report (figures embedded, CSS inline, no external reference)."""
    out = Path(out)
    body = [f"<h1>{_e(title)}</h1>"]
    n_runs = sum(len(s.runs) for s in sections)
    n_sim = sum(r.simulated for s in sections for r in s.runs)
    body.append(
        f'<p class="meta">{len(sections)} experiment(s), {n_runs} run(s), {n_sim} of them SIMULATED. '
        f"Generated {_e(time.strftime('%Y-%m-%d %H:%M:%S %Z'))}.</p>"
    )
    if problems:
        items = []
        for p in problems:
            path, what = getattr(p, "path", None), getattr(p, "what", None)
            if path is not None:
                items.append(f"<li><code>{_e(path)}</code>: {_e(what)}</li>")
            else:
                items.append(f"<li>{_e(p)}</li>")
        body.append(
            f'<div class="problems" role="alert"><h2>{len(problems)} problem(s) reading run directories'
            "</h2><p>These files could not be used; everything else is reported without them.</p>"
            f"<ul>{''.join(items)}</ul></div>"
        )
    if sections:
        toc = "".join(
            f'<li><a href="#{_e(s.anchor)}">{_e(s.case)} / {_e(s.experiment)}</a> {_sim_badge(s.simulated)}</li>'
            for s in sections
        )
        body.append(f'<nav class="toc"><h2>Contents</h2><ol>{toc}</ol></nav>')
    else:
        body.append('<p class="muted">No runs.</p>')
    body.extend(_section_html(s) for s in sections)
    body.append(
        "<footer>Throughput is completion tokens per second over the measured run. The speedup compares "
        "each system at its best run of the experiment (most tokens/s), as the paper does. "
        "★ marks the two runs the speedup compares.</footer>"
    )
    n_plots = sum(len(s.plots) for s in sections)
    doc = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n"
        f'<body data-plots-expected="{n_plots}"><main>\n' + "\n".join(body) + f"\n</main><script>{_SCRIPT}</script>"
        "</body></html>\n"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(doc, encoding="utf-8")
    return out


# ------------------------------------------------------------------------------------------- W&B


def wandb_report(
    sections: Sequence[Section], project: str, entity: str | None, title: str, *, html_path: Path | None = None
) -> str | None:
    """A W&B Report of the sections' runs when W&B is online (a key is set); its URL, or None.

    Per section a panel grid of the runs of that experiment (filtered by W&B run name,
    `<system>-<run dir name>` as `experiments.tracking` logs them): a bar chart of tokens/s, and
    tokens/s, cumulative completion tokens and tasks in flight over `t`. Never raises.
    """
    from experiments.tracking import resolve_mode

    instead = f"the HTML report is {html_path}" if html_path is not None else "use the HTML report"

    try:
        mode = resolve_mode(None)
    except ValueError as exc:
        _say_once(f"W&B report skipped ({exc}); {instead}")
        return None
    if mode != "online":
        _say_once(f"W&B report skipped (mode {mode}); {instead}")
        return None
    try:
        import wandb_workspaces.reports.v2 as wr
        from wandb_workspaces import expr
    except ImportError:
        _say_once(f"W&B report skipped: wandb-workspaces is not installed (pip install wandb-workspaces); {instead}")
        return None
    try:
        blocks: list[Any] = [
            wr.H1(text=title),
            wr.P(
                text="Made by scripts/report.py from the run directories. Runs are named <system>-<run id>, "
                "grouped by the launch's run id. SIMULATED runs ran on the sim backend: their times are "
                "simulated seconds."
            ),
        ]
        for s in sections:
            names = [f"{r.system}-{r.path.name}" for r in s.runs]
            blocks.append(wr.H2(text=f"{s.case} / {s.experiment}" + (" (SIMULATED)" if s.simulated else "")))
            sp = speedup(s.runs)
            if sp is not None:
                blocks.append(
                    wr.P(
                        text=f"Speedup {sp.factor:.2f}x: matrix {sp.matrix.run_id} over "
                        f"{sp.baseline.system} {sp.baseline.run_id}."
                    )
                )
            runset = wr.Runset(
                project=project,
                entity=entity or "",
                name=f"{s.case}/{s.experiment}",
                filters=[expr.Metric("Name").isin(names)],
            )
            blocks.append(
                wr.PanelGrid(
                    runsets=[runset],
                    panels=[
                        wr.BarPlot(title="tokens/s (whole run)", metrics=["tokens_per_second"]),
                        wr.LinePlot(title="tokens/s", x="t", y=["tokens_per_second"]),
                        wr.LinePlot(title="completion tokens (cumulative)", x="t", y=["completion_tokens"]),
                        wr.LinePlot(title="tasks in flight", x="t", y=["tasks_in_flight"]),
                    ],
                )
            )
        kwargs: dict[str, Any] = {"project": project, "title": title[:128], "blocks": blocks}
        if entity:
            kwargs["entity"] = entity
        report = wr.Report(**kwargs)
        report.save()
        return str(report.url)
    except Exception as exc:
        _say_once(f"W&B report failed ({type(exc).__name__}: {exc}); {instead}")
        return None


# ------------------------------------------------------------------------------------- make_report


def tables_for(case: str, experiment: str, runs: Sequence[Run]) -> tuple[list[Any], list[str]]:
    """The paper tables of one experiment (`experiments.tables`); (tables, notes on failures)."""
    from experiments import tables

    try:
        return list(tables.tables_for(case, experiment, list(runs))), []
    except Exception as exc:  # one experiment's bad metrics must not lose the rest of the report
        return [], [f"tables failed: {type(exc).__name__}: {exc}"]


def _plots(case: str, experiment: str, runs: Sequence[Run], plot_dir: Path) -> tuple[list[Any], list[str]]:
    from experiments import plots

    try:
        return plots.plots_for(case, experiment, runs, plot_dir), []
    except Exception as exc:
        return [], [f"figures failed: {type(exc).__name__}: {exc}"]


def _have_matplotlib() -> str | None:
    """None when figures can be made, else why not."""
    try:
        import experiments.plots  # noqa: F401
    except ImportError as exc:
        return f"no figures: {exc} (pip install matplotlib)"
    return None


def make_report(
    roots: Iterable[Path],
    out_dir: Path,
    *,
    case: str | None = None,
    experiment: str | None = None,
    title: str = DEFAULT_TITLE,
    wandb: bool = True,
) -> Path:
    """Read every run under `roots`, write `out_dir/report.html` (figures also under `out_dir/plots/`).

    Raises NoRunsError when no run is left after the `case`/`experiment` filter.
    """
    roots = [Path(r) for r in roots]
    out_dir = Path(out_dir)
    t0 = time.monotonic()
    runs, problems = rundirs.discover(roots)
    groups = {
        key: rs
        for key, rs in rundirs.experiments(runs).items()
        if (case is None or key[0] == case) and (experiment is None or key[1] == experiment)
    }
    if not groups:
        what = " and ".join(f"{k} {v!r}" for k, v in (("case", case), ("experiment", experiment)) if v)
        where = ", ".join(str(r) for r in roots)
        msg = f"no run directory found under {where}" + (f" for {what}" if what else "")
        if problems:
            msg += f" ({len(problems)} problem(s): " + "; ".join(str(p) for p in problems[:5]) + ")"
        raise NoRunsError(msg)
    print(
        f"report: {len(runs)} run(s) read from {', '.join(map(str, roots))} in {time.monotonic() - t0:.1f} s; "
        f"{len(problems)} problem(s)",
        file=sys.stderr,
    )
    plot_dir = out_dir / "plots"
    no_figures = _have_matplotlib()
    if no_figures:
        problems.append(Problem(Path("experiments/plots.py"), no_figures))
        print(f"report: {no_figures}", file=sys.stderr)
    sections = []
    for (c, e), rs in groups.items():
        t1 = time.monotonic()
        figures, notes = ([], []) if no_figures else _plots(c, e, rs, plot_dir)
        tables, table_notes = tables_for(c, e, rs)
        for note in notes + table_notes:
            problems.append(Problem(Path(f"{c}/{e}"), note))
        sections.append(Section(c, e, rs, figures, tables))
        print(
            f"report: {c}/{e}: {len(rs)} run(s), {len(figures)} figure(s), {len(tables)} table(s) "
            f"({time.monotonic() - t1:.1f} s)",
            file=sys.stderr,
        )
    path = build_html(sections, problems, out_dir / "report.html", title)
    print(
        f"report: wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.monotonic() - t0:.1f} s", file=sys.stderr
    )
    if wandb:
        project = os.environ.get("WANDB_PROJECT") or "matrix-harness"
        url = wandb_report(sections, project, os.environ.get("WANDB_ENTITY"), title, html_path=path)
        if url:
            print(f"report: W&B report at {url}", file=sys.stderr)
    return path
