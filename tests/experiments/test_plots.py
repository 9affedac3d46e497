"""Figures of run directories: each writes a PNG when it has data and nothing when not, says SIMULATED
for simulated runs, and the offload-threshold share is counted right."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from matplotlib import _pylab_helpers
from matplotlib import image as mpimg

from experiments import plots, rundirs
from tests.experiments.test_report import SHARES, SIZES, make_runs, write_run

WRITERS = (plots.throughput_over_time, plots.scalability, plots.latency_breakdown, plots.message_sizes)


def _runs(root: Path) -> list[rundirs.Run]:
    runs, problems = rundirs.discover([root])
    assert not problems
    return runs


def _png_ok(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = mpimg.imread(str(path))
    rgb = (pixels[..., :3] * 255).astype("uint8").reshape(-1, 3)
    assert len({tuple(c) for c in rgb[::7].tolist()}) > 20, f"{path.name} looks empty"


def test_each_plot_writes_a_png_and_leaves_no_pyplot_figure(tmp_path: Path) -> None:
    runs = _runs(make_runs(tmp_path / "runs"))
    for writer in WRITERS:
        out = tmp_path / "png" / f"{writer.__name__}.png"
        assert writer(runs, out, "coral / twin") == out
        _png_ok(out)
    assert _pylab_helpers.Gcf.get_num_fig_managers() == 0


def test_no_data_returns_none_and_writes_nothing(tmp_path: Path) -> None:
    # One concurrency, no series, no breakdown, no sizes: nothing to draw.
    write_run(tmp_path / "runs", "tau2", "matrix", "twin", tps=10.0, concurrency=4, series=False)
    write_run(tmp_path / "runs", "tau2", "tau2-threads", "twin", tps=8.0, concurrency=4, series=False)
    runs = _runs(tmp_path / "runs")
    for writer in WRITERS:
        out = tmp_path / "png" / f"{writer.__name__}.png"
        assert writer(runs, out, "t") is None
        assert writer([], out, "t") is None
        assert not out.exists()
    assert plots.plots_for("tau2", "twin", runs, tmp_path / "png") == []
    assert not (tmp_path / "png").exists()


def test_simulated_runs_are_labelled_and_real_ones_are_not(tmp_path: Path) -> None:
    sim = _runs(make_runs(tmp_path / "sim"))
    real_root = tmp_path / "real"
    write_run(real_root, "coral", "matrix", "small", tps=5.0, concurrency=2, simulated=False, breakdown=SHARES,
              sizes=SIZES)  # fmt: skip
    write_run(real_root, "coral", "coral-controller", "small", tps=4.0, concurrency=4, simulated=False,
              breakdown=SHARES)  # fmt: skip
    real = _runs(real_root)
    builders = (plots.throughput_figure, plots.scalability_figure, plots.latency_breakdown_figure,
                plots.message_sizes_figure)  # fmt: skip
    for build in builders:
        fig = build(sim, "T")
        assert fig is not None
        assert fig.axes[0].get_title().startswith("SIMULATED — T"), build.__name__
        fig = build(real, "T")
        assert fig is not None
        assert "SIMULATED" not in fig.axes[0].get_title(), build.__name__
    assert plots.throughput_figure(sim, "T").axes[0].get_xlabel() == "time since start (simulated seconds)"
    assert plots.throughput_figure(real, "T").axes[0].get_xlabel() == "time since start (seconds)"
    mixed = plots.throughput_figure([*sim, *real], "T")
    assert mixed.axes[0].get_title().startswith("PARTLY SIMULATED — ")
    legend = [t.get_text() for t in mixed.legends[0].get_texts()]
    assert "matrix c=20 [SIMULATED]" in legend and "matrix c=2" in legend


def test_legend_labels_name_system_and_concurrency_and_tell_twins_apart(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    write_run(root, "natural_reasoning", "matrix", "twin-p1-t500-a1", tps=900.0, concurrency=500)
    write_run(root, "natural_reasoning", "matrix", "twin-p4-t125-a1", tps=890.0, concurrency=500)
    write_run(root, "natural_reasoning", "ray-data", "twin-w20-b25", tps=700.0, concurrency=500)
    fig = plots.throughput_figure(_runs(root), "T")
    assert fig is not None
    assert sorted(line.get_label() for line in fig.axes[0].get_lines()) == [
        "matrix c=500 (twin-p1-t500-a1)", "matrix c=500 (twin-p4-t125-a1)", "ray-data c=500"]  # fmt: skip


def test_throughput_is_smoothed_tokens_per_second(tmp_path: Path) -> None:
    write_run(tmp_path / "runs", "coral", "matrix", "twin", tps=100.0, concurrency=8, seconds=40)
    (run,) = _runs(tmp_path / "runs")
    fig = plots.throughput_figure([run], "T")
    assert fig is not None
    (line,) = fig.axes[0].get_lines()
    raw = [v for _, v in rundirs.throughput_series(run)]
    assert list(line.get_ydata()) == pytest.approx(plots.rolling_mean(raw, plots.SMOOTHING))
    assert max(line.get_ydata()) < max(raw)  # the wiggle is smoothed
    assert plots.rolling_mean([1, 2, 3, 4], 2) == [1, 1.5, 2.5, 3.5]


def test_scalability_draws_each_system_through_its_best_run_per_concurrency(tmp_path: Path) -> None:
    root = make_runs(tmp_path / "runs")
    write_run(root, "coral", "matrix", "twin-c20-q2", tps=280.0, concurrency=20)
    fig = plots.scalability_figure(_runs(root), "T")
    assert fig is not None
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert list(lines["matrix"].get_xdata()) == [10, 20] and list(lines["matrix"].get_ydata()) == [250.0, 300.0]
    assert list(lines["coral-controller"].get_ydata()) == [150.0, 200.0]
    assert fig.axes[0].get_xlabel() == "max concurrency (tasks in flight)"


def test_latency_breakdown_stacks_mean_shares(tmp_path: Path) -> None:
    runs = _runs(make_runs(tmp_path / "runs"))
    fig = plots.latency_breakdown_figure(runs, "T")
    assert fig is not None
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("mean share")
    widths = sorted({round(p.get_width(), 6) for p in ax.patches})
    assert widths == [4.0, 6.0, 20.0, 70.0]
    assert len(ax.get_yticklabels()) == 3  # the baseline run without a breakdown is left out


def test_share_above_threshold_counts_buckets_and_straddling_ones() -> None:
    cumulative = [(256.0, 10), (512.0, 30), (1024.0, 70), (math.inf, 100)]
    assert plots.share_above(cumulative, 512) == (0.7, 0.7)
    assert plots.share_above(cumulative, 700) == (0.3, 0.7)  # (512, 1024] may lie either side of 700
    assert plots.share_above(cumulative, 100) == (0.9, 1.0)  # (-inf, 256] straddles 100
    assert plots.share_above([], 512) == (0.0, 0.0)


def test_message_sizes_marks_the_threshold_and_its_share(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    write_run(root, "coral", "matrix", "twin", tps=10.0, concurrency=4, sizes=SIZES, threshold=512)
    fig = plots.message_sizes_figure(_runs(root), "T")
    assert fig is not None
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    # teacher 60 messages, 50 above 512 B; student 40, 20 above: 70 of 100.
    assert "70.0% of 100 messages\nlarger than 512 B" in texts
    assert "offload threshold 512 B" in [t.get_text() for t in fig.legends[0].get_texts()]
    (vline,) = [line for line in ax.get_lines() if line.get_label() == "offload threshold 512 B"]
    assert "after payload offloading" in ax.get_xlabel()
    assert ax.get_title().startswith("SIMULATED — T")
    # The line sits on the 512 B bucket edge, between the bars of (256, 512] and (512, 1024].
    ticks = dict(zip([t.get_text() for t in ax.get_xticklabels()], ax.get_xticks(), strict=True))
    assert vline.get_xdata()[0] == pytest.approx(ticks["512 B"])


def test_message_sizes_prefer_the_size_before_offloading(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    write_run(root, "coral", "matrix", "twin", tps=10.0, concurrency=4, sizes=SIZES, size_metric="matrix_message_bytes")
    fig = plots.message_sizes_figure(_runs(root), "T")
    assert fig is not None
    assert "before payload offloading" in fig.axes[0].get_xlabel()
    write_run(root, "coral", "matrix", "twin-c8", tps=5.0, concurrency=8, sizes=SIZES, threshold=None)
    (run,) = [r for r in _runs(root) if r.run_id == "twin-c8"]
    fig = plots.message_sizes_figure([run], "T")
    assert fig is not None
    assert any("payload offloading off" in t.get_text() for t in fig.axes[0].texts)


def test_plots_for_names_files_by_case_and_experiment(tmp_path: Path) -> None:
    runs = _runs(make_runs(tmp_path / "runs"))
    made = plots.plots_for("coral", "twin", runs, tmp_path / "png")
    assert [p.name for p in made] == ["throughput", "scalability", "latency", "message_sizes"]
    assert [p.path.name for p in made] == [f"coral_twin_{p.name}.png" for p in made]
    assert all(p.path.stat().st_size > 0 for p in made)
    captions = {p.name: p.caption for p in made}
    assert "simulated seconds" in captions["throughput"]
    assert "No data for: coral-controller/twin-w20." in captions["throughput"]
    assert "matrix/twin-c20" in captions["message_sizes"]  # the fastest run with sizes
