"""The HTML report: self-contained, problems listed by name, speedup right, every figure renders in a browser."""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import types
from contextlib import redirect_stderr
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from experiments import report, rundirs

REPO = Path(__file__).resolve().parents[2]


def write_run(
    root: Path,
    case: str,
    system: str,
    run_id: str,
    *,
    tps: float,
    concurrency: int,
    simulated: bool = True,
    seconds: int = 30,
    series: bool = True,
    breakdown: dict[str, float] | None = None,
    sizes: dict[str, list[tuple[float, int]]] | None = None,
    size_metric: str = "matrix_hop_bytes",
    threshold: int | None = 512,
    quality: dict[str, Any] | None = None,
) -> Path:
    """A small run directory as the drivers write it: metrics, config, per-second series, histograms."""
    d = root / case / system / run_id
    d.mkdir(parents=True)
    metrics = {
        "case": case,
        "system": system,
        "concurrency": concurrency,
        "simulated": simulated,
        "hardware": "SIMULATED 2 x test-gpu" if simulated else "this machine's CPU",
        "tokens_per_second": tps,
        "tokens_generated": int(tps * seconds),
        "trajectories": 10 * concurrency,
        "measured_seconds": float(seconds),
        "offload_threshold": threshold if system == "matrix" else None,
        "quality": quality or {"average_reward": 0.5, "average_reward_ci95": [0.4, 0.6]},
    }
    (d / "metrics.json").write_text(json.dumps(metrics))
    (d / "config.json").write_text(json.dumps({"concurrency": concurrency}))
    if series:
        rows = [
            {"t": float(t), "completion_tokens": tps * t * (1 + 0.2 * math.sin(t)) if t > 1 else 0.0,
             "tasks_in_flight": concurrency, "tasks_done": t}
            for t in range(1, seconds + 1)
        ]  # fmt: skip
        (d / "timeseries.json").write_text(json.dumps(rows))
    if breakdown is not None:
        shares = {k: {"p50": v, "p99": v, "mean": v} for k, v in breakdown.items()}
        (d / "latency_breakdown.json").write_text(json.dumps({"tasks": 40, "share_percent": shares}))
    if sizes:
        lines = [f"# TYPE {size_metric} histogram"]
        for role, buckets in sizes.items():
            for le, n in buckets:
                bound = "+Inf" if math.isinf(le) else f"{le:g}"
                lines.append(f'{size_metric}_bucket{{role="{role}",le="{bound}"}} {n}')
        (d / "metrics.prom").write_text("\n".join(lines) + "\n")
    return d


SIZES = {"teacher": [(256.0, 0), (512.0, 10), (1024.0, 40), (2048.0, 60), (math.inf, 60)],
         "student": [(256.0, 5), (512.0, 20), (1024.0, 30), (2048.0, 40), (math.inf, 40)]}  # fmt: skip
SHARES = {"agent_processing": 70.0, "queuing": 20.0, "initialization": 4.0, "other": 6.0}


def make_runs(root: Path) -> Path:
    """coral/twin: matrix at c=10 and 20 (best 300 tok/s), the baseline at c=10 and 20 (best 200 tok/s)."""
    write_run(root, "coral", "matrix", "twin", tps=250.0, concurrency=10, breakdown=SHARES, sizes=SIZES)
    write_run(root, "coral", "matrix", "twin-c20", tps=300.0, concurrency=20, breakdown=SHARES, sizes=SIZES)
    write_run(root, "coral", "coral-controller", "twin-w10", tps=150.0, concurrency=10, breakdown=SHARES)
    write_run(root, "coral", "coral-controller", "twin-w20", tps=200.0, concurrency=20, series=False)
    return root


@dataclass
class StandInTable:
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


def _html(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_report_is_self_contained_lists_a_corrupt_run_and_keeps_the_others(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    root = make_runs(tmp_path / "runs")
    bad = root / "coral" / "matrix" / "twin-c40"
    bad.mkdir()
    (bad / "metrics.json").write_text('{"tokens_per_second": 12')
    err = io.StringIO()
    with redirect_stderr(err):
        path = report.make_report([root], tmp_path / "out", wandb=False, title="Test <report>")
    assert path == tmp_path / "out" / "report.html"
    text = _html(path)
    # Nothing fetched: no http(s) or protocol-relative src/href, every image a data URI.
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", text, re.I)
    imgs = re.findall(r"<img [^>]*src=\"([^\"]*)\"", text)
    assert imgs and all(src.startswith("data:image/png;base64,") for src in imgs)
    assert "<link" not in text and "@import" not in text and "url(" not in text
    # The corrupt run is named in the problems box at the top, before the first section.
    box = text[text.index('class="problems"') : text.index("<section")]
    assert "twin-c40" in box and "metrics.json" in box and "corrupt JSON" in box
    for run_id in ("twin", "twin-c20", "twin-w10", "twin-w20"):
        assert f"<code>{run_id}</code>" in text
    assert "Test &lt;report&gt;" in text  # escaped
    # Speedup: best matrix 300 over best baseline 200.
    assert re.search(r'data-speedup="1\.5"', text)
    assert "1.50×" in text
    # Every figure of the simulated runs is marked SIMULATED next to it.
    figures = re.findall(r"<figure.*?</figure>", text, re.S)
    assert len(figures) == len(imgs) == 4
    assert all("SIMULATED" in f for f in figures)
    assert "simulated s" in text  # runtimes in simulated seconds
    assert {p.name for p in (tmp_path / "out" / "plots").iterdir()} == {
        "coral_twin_throughput.png", "coral_twin_scalability.png", "coral_twin_latency.png",
        "coral_twin_message_sizes.png"}  # fmt: skip
    assert "coral/twin: 4 run(s), 4 figure(s)" in err.getvalue()


def test_speedup_takes_each_system_at_its_best(tmp_path: Path) -> None:
    runs, problems = rundirs.discover([make_runs(tmp_path)])
    assert not problems
    s = report.speedup(runs)
    assert s is not None
    assert (s.matrix.run_id, s.baseline.run_id) == ("twin-c20", "twin-w20")
    assert s.factor == pytest.approx(1.5)
    assert report.speedup([r for r in runs if r.system == "matrix"]) is None


def test_quality_headline_reads_each_case() -> None:
    coral = {"agreement_correctness": {"value": 0.49, "ci95": [0.43, 0.55]}}
    assert report.quality_headline(coral) == "agreement correctness 0.490 [0.430, 0.550]"
    assert report.quality_headline({"average_reward": 0.67, "average_reward_ci95": [0.6, 0.73]}) == (
        "average reward 0.670 [0.600, 0.730]"
    )
    assert report.quality_headline({"questions": 361, "survival_rate": 0.06}) == "361 questions, survival rate 0.060"
    assert report.quality_headline(None) == ""


def test_build_html_renders_extra_tables_and_problems(tmp_path: Path) -> None:
    runs, _ = rundirs.discover([make_runs(tmp_path / "runs")])
    table = StandInTable("Table 1 <coral>", ["metric", "ours"], [["tokens/s", "300.0"]], ["- a note", "", "b & c"])
    section = report.Section("coral", "twin", runs, plots=[], tables=[table])
    problems = [rundirs.Problem(tmp_path / "x" / "timeseries.json", "corrupt JSON (line 1)")]
    text = _html(report.build_html([section], problems, tmp_path / "r.html", "T"))
    assert "<h3>Table 1 &lt;coral&gt;</h3>" in text
    assert '<td class="num">300.0</td>' in text
    assert "<li>a note</li>" in text and "<li>b &amp; c</li>" in text and "<li></li>" not in text
    assert f"<code>{tmp_path / 'x' / 'timeseries.json'}</code>: corrupt JSON (line 1)" in text
    assert 'href="#sec-coral-twin"' in text and 'id="sec-coral-twin"' in text


def test_a_failing_table_is_reported_and_the_rest_of_the_report_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from experiments import tables

    root = make_runs(tmp_path / "runs")

    def broken(case: str, experiment: str, runs: list[rundirs.Run]) -> list[Any]:
        raise RuntimeError("no paper values")

    monkeypatch.setattr(tables, "tables_for", broken)
    monkeypatch.setattr(report, "_plots", lambda *a: ([], []))
    with redirect_stderr(io.StringIO()):
        text = _html(report.make_report([root], tmp_path / "out", wandb=False))
    box = text[text.index('class="problems"') : text.index("<section")]
    assert "tables failed: RuntimeError: no paper values" in box
    assert "<code>twin-c20</code>" in text


def test_no_runs_is_an_error_and_exit_code_2(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(report.NoRunsError, match="no run directory found"):
        report.make_report([tmp_path / "empty"], tmp_path / "out", wandb=False)
    root = make_runs(tmp_path / "runs")
    with pytest.raises(report.NoRunsError, match="case 'tau2'"):
        report.make_report([root], tmp_path / "out", case="tau2", wandb=False)
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "report.py"), str(tmp_path / "empty"), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "no run directory found" in proc.stderr
    assert not (tmp_path / "o" / "report.html").exists()


def test_cli_writes_the_report_from_any_directory(tmp_path: Path) -> None:
    root = make_runs(tmp_path / "runs")
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "report.py"), str(root), "--out", str(tmp_path / "o"),
         "--experiment", "twin", "--title", "CLI"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "o" / "report.html")
    assert "<title>CLI</title>" in _html(tmp_path / "o" / "report.html")
    assert "W&B report skipped (mode disabled); the HTML report is" in proc.stderr


# ------------------------------------------------------------------------------------------- W&B


def _section(tmp_path: Path) -> report.Section:
    runs, _ = rundirs.discover([make_runs(tmp_path)])
    return report.Section("coral", "twin", runs)


def test_wandb_report_offline_is_skipped_and_said_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "_said", set())
    monkeypatch.setenv("WANDB_MODE", "offline")
    section = _section(tmp_path)
    err = io.StringIO()
    with redirect_stderr(err):
        assert report.wandb_report([section], "p", None, "t", html_path=Path("/r/report.html")) is None
        assert report.wandb_report([section], "p", None, "t", html_path=Path("/r/report.html")) is None
    assert err.getvalue().count("W&B report skipped (mode offline); the HTML report is /r/report.html") == 1


def test_wandb_report_without_the_package_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "_said", set())
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setitem(sys.modules, "wandb_workspaces", None)
    err = io.StringIO()
    with redirect_stderr(err):
        assert report.wandb_report([_section(tmp_path)], "p", None, "t") is None
    assert "pip install wandb-workspaces" in err.getvalue()


class _Obj:
    """Records its constructor arguments, like the wandb_workspaces report classes take them."""

    saved: ClassVar[list[_Obj]] = []
    fail: ClassVar[bool] = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def save(self) -> None:
        if _Obj.fail:
            raise ConnectionError("api.wandb.ai unreachable")
        _Obj.saved.append(self)

    @property
    def url(self) -> str:
        return f"https://wandb.test/{self.kwargs['project']}/reports/x"


def _fake_workspaces(monkeypatch: pytest.MonkeyPatch) -> None:
    v2 = types.ModuleType("wandb_workspaces.reports.v2")
    for name in ("H1", "H2", "P", "Runset", "PanelGrid", "LinePlot", "BarPlot", "Report"):
        setattr(v2, name, type(name, (_Obj,), {}))
    expr = types.ModuleType("wandb_workspaces.expr")

    class Metric:
        def __init__(self, name: str) -> None:
            self.name = name

        def isin(self, values: list[str]) -> tuple[str, str, list[str]]:
            return (self.name, "in", list(values))

    expr.Metric = Metric  # type: ignore[attr-defined]
    pkg, reports = types.ModuleType("wandb_workspaces"), types.ModuleType("wandb_workspaces.reports")
    pkg.reports, pkg.expr, reports.v2 = reports, expr, v2  # type: ignore[attr-defined]
    for name, mod in (("wandb_workspaces", pkg), ("wandb_workspaces.reports", reports),
                      ("wandb_workspaces.reports.v2", v2), ("wandb_workspaces.expr", expr)):  # fmt: skip
        monkeypatch.setitem(sys.modules, name, mod)


def test_wandb_report_online_filters_each_section_to_its_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "_said", set())
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    _fake_workspaces(monkeypatch)
    monkeypatch.setattr(_Obj, "saved", [])
    url = report.wandb_report([_section(tmp_path)], "proj", "ent", "Title")
    assert url == "https://wandb.test/proj/reports/x"
    (saved,) = _Obj.saved
    assert saved.kwargs["entity"] == "ent" and saved.kwargs["title"] == "Title"
    grids = [b for b in saved.kwargs["blocks"] if type(b).__name__ == "PanelGrid"]
    (runset,) = grids[0].kwargs["runsets"]
    assert runset.kwargs["filters"] == [
        ("Name", "in", ["coral-controller-twin-w10", "coral-controller-twin-w20", "matrix-twin", "matrix-twin-c20"])
    ]
    ys = [p.kwargs.get("y") for p in grids[0].kwargs["panels"] if type(p).__name__ == "LinePlot"]
    assert ["tasks_in_flight"] in ys and ["tokens_per_second"] in ys
    assert all(p.kwargs.get("x") == "t" for p in grids[0].kwargs["panels"] if type(p).__name__ == "LinePlot")

    monkeypatch.setattr(_Obj, "fail", True)
    err = io.StringIO()
    with redirect_stderr(err):
        assert report.wandb_report([_section(tmp_path / "again")], "proj", "ent", "Title") is None
    assert "W&B report failed (ConnectionError: api.wandb.ai unreachable)" in err.getvalue()


# ------------------------------------------------------------------------------------- browser


def _browser() -> str | None:
    for name in ("chromium-headless-shell", "chromium"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _run_browser(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
    ]  # fmt: skip
    # subprocess.run kills the browser when the timeout expires.
    return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=90)


def test_every_figure_renders_in_a_headless_browser(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    binary = _browser()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no chromium-headless-shell or chromium on PATH; CI must have one (Debian package "
                        "chromium-headless-shell)")  # fmt: skip
        pytest.skip("no chromium-headless-shell or chromium on PATH (Debian package chromium-headless-shell)")
    with redirect_stderr(io.StringIO()):
        path = report.make_report([make_runs(tmp_path / "runs")], tmp_path / "out", wandb=False)
    n_plots = len(re.findall(r"<figure ", _html(path)))
    assert n_plots == 4
    url = path.resolve().as_uri()
    dom = _run_browser(binary, tmp_path / "profile", "--dump-dom", url)
    body = re.search(r"<body[^>]*>", dom.stdout)
    assert body, dom.stderr[-2000:]
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', body.group(0)))
    assert attrs.get("data-plots-loaded") == attrs.get("data-plots-total") == str(n_plots), attrs

    shot = tmp_path / "shot.png"
    res = _run_browser(binary, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2400", url)
    assert shot.exists() and shot.stat().st_size > 10_000, res.stderr[-2000:]
    from matplotlib import image

    pixels = image.imread(str(shot))
    assert pixels.shape[:2] == (2400, 1280)
    rgb = (pixels[..., :3] * 255).astype("uint8").reshape(-1, 3)
    colours = {tuple(c) for c in rgb[::97].tolist()}
    assert len(colours) > 50, f"page looks blank: {len(colours)} distinct colours"


def test_without_matplotlib_the_report_has_tables_and_says_why_no_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import experiments

    monkeypatch.delattr(experiments, "plots", raising=False)
    monkeypatch.setitem(sys.modules, "experiments.plots", None)
    err = io.StringIO()
    with redirect_stderr(err):
        path = report.make_report([make_runs(tmp_path / "runs")], tmp_path / "out", wandb=False)
    text = _html(path)
    box = text[text.index('class="problems"') : text.index("<section")]
    assert "<code>experiments/plots.py</code>: no figures:" in box and "pip install matplotlib" in box
    assert "<img" not in text and "<code>twin-c20</code>" in text
    assert err.getvalue().count("no figures") == 1
