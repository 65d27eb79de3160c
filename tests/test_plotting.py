"""Plots a person reads: the bench's Pareto plot names every point and keeps its labels apart; the toy
scatter's legend hides no data."""

import itertools

import matplotlib.pyplot as plt
import pytest
import torch

from trilemma.bench import HEADERS, SAMPLER_NAMES
from trilemma.data import sample_toy
from trilemma.plotting import pareto_figure, pareto_plot, pareto_row_name, save_scatter, scatter_figure


def demo_summary() -> dict:
    """The demo's grid (trilemma demo): DDPM ancestral 1000, DDIM 100/20/10/5 at eta 0 and 1, DPM-Solver++
    20/10/5, DDGAN T=4 and T=1 on the "ddpm" (ancestral) sampler; made-up scores and timings."""
    rows = [{"label": "data", "floor": True, "high_quality_%": 99.7, "modes": 25, "nfe": 0, "seconds": None}]

    def add(label, sampler, steps, seconds, hq, modes, eta=None):
        rows.append({"label": label, "sampler": sampler, "steps": steps, "eta": eta, "nfe": steps,
                     "seconds": seconds, "high_quality_%": hq, "modes": modes, "floor": False})

    add("DDPM", "ddpm", 1000, 17.0, 96.5, 25)
    for steps, sec, hq0, hq1 in ((100, 1.7, 95.0, 95.8), (20, 0.36, 93.1, 91.0), (10, 0.19, 88.0, 80.0),
                                 (5, 0.1, 70.2, 55.0)):
        add("DDPM", "ddim", steps, sec, hq0, 25, 0.0)
        add("DDPM", "ddim", steps, sec * 1.02, hq1, 24, 1.0)
    for steps, sec, hq in ((20, 0.4, 95.5), (10, 0.2, 94.0), (5, 0.11, 85.0)):
        add("DDPM", "dpmpp", steps, sec, hq, 25)
    add("DDGAN T=4", "ddpm", 4, 0.05, 93.5, 25)
    add("DDGAN T=1", "ddpm", 1, 0.02, 78.0, 19)
    return {"name": "demo", "dataset": "toy2d/grid25", "rows": rows, "quality_metric": "high_quality_%",
            "diversity_metric": "modes", "lower_is_better": False, "num_samples": 10000}


@pytest.fixture(scope="module")
def pareto():
    fig = pareto_figure(demo_summary(), SAMPLER_NAMES, HEADERS)
    fig.canvas.draw()
    yield fig
    plt.close(fig)


def all_texts(fig) -> str:
    return "\n".join(t.get_text() for ax in fig.axes for t in ax.texts)


def test_ddgan_points_are_named_by_model_sampler_and_steps(pareto):
    ddgan = {"label": "DDGAN T=4", "sampler": "ddpm", "steps": 4, "eta": None}
    assert pareto_row_name(ddgan, SAMPLER_NAMES) == "DDGAN T=4 · ancestral 4"
    ddim = {"label": "DDPM", "sampler": "ddim", "steps": 20, "eta": 1.0}
    assert pareto_row_name(ddim, SAMPLER_NAMES) == "DDPM · DDIM 20 η=1"
    # a sampler option away from its default is named, whichever sampler declares it
    assert pareto_row_name(ddim | {"clip_x0": True}, SAMPLER_NAMES) == "DDPM · DDIM 20 η=1 clip_x0"
    assert pareto_row_name(ddim | {"clip_x0": False}, SAMPLER_NAMES) == "DDPM · DDIM 20 η=1"
    langevin = {"label": "DDPM", "sampler": "langevin", "steps": 20, "eta": None, "steps_per_level": 2, "step_size": 0.5}
    assert pareto_row_name(langevin, SAMPLER_NAMES) == "DDPM · Langevin 20 steps_per_level=2"
    key = all_texts(pareto).splitlines()
    assert any(line.endswith("DDGAN T=4 · ancestral 4") for line in key), key
    assert any(line.endswith("DDGAN T=1 · ancestral 1") for line in key), key
    assert not any("DDPM ancestral" in line for line in key), key  # the old label of every "ddpm" row


def test_every_point_has_a_number_and_the_numbers_do_not_overlap(pareto):
    n_rows = len(demo_summary()["rows"]) - 1
    renderer = pareto.canvas.get_renderer()
    panels = [ax for ax in pareto.axes if ax.get_xscale() == "log"]
    assert len(panels) == 2
    for ax in panels:
        numbers = [t for t in ax.texts if t.get_text().isdigit()]
        assert sorted(int(t.get_text()) for t in numbers) == list(range(1, n_rows + 1))
        boxes = [t.get_window_extent(renderer) for t in numbers]
        assert not [(a, b) for a, b in itertools.combinations(boxes, 2) if a.overlaps(b)]


def test_log_axes_have_plain_major_tick_labels_only(pareto):
    renderer = pareto.canvas.get_renderer()
    for ax in (ax for ax in pareto.axes if ax.get_xscale() == "log"):
        assert all(t.get_text() == "" for t in ax.get_xticklabels(minor=True))
        major = [t for t in ax.get_xticklabels() if t.get_text()]
        assert len(major) >= 3
        assert not any("$" in t.get_text() or "^" in t.get_text() for t in major)  # 0.1, 1, 10; no 10^x
        boxes = [t.get_window_extent(renderer) for t in major]
        assert not [(a, b) for a, b in itertools.combinations(boxes, 2) if a.overlaps(b)]
    seconds = next(ax for ax in pareto.axes if ax.get_xlabel().startswith("seconds"))
    assert {"0.1", "1", "10"} <= {t.get_text() for t in seconds.get_xticklabels()}


@pytest.mark.parametrize("span", [(0.3, 0.9), (0.02, 17.0), (1e-3, 400.0)])
def test_seconds_axis_over_narrow_and_wide_spans(span):
    """Under a decade matplotlib's default labels minor ticks too (2x10^-1, 3x10^-1 ... crowding each other)."""
    summary = demo_summary()
    rows = [r for r in summary["rows"] if not r["floor"]]
    lo, hi = span
    for i, r in enumerate(rows):
        r["seconds"] = lo * (hi / lo) ** (i / (len(rows) - 1))
    fig = pareto_figure(summary, SAMPLER_NAMES, HEADERS)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = next(ax for ax in fig.axes if ax.get_xlabel().startswith("seconds"))
    assert all(t.get_text() == "" for t in ax.get_xticklabels(minor=True))
    major = [t for t in ax.get_xticklabels() if t.get_text()]
    assert len(major) >= 2 and not any("$" in t.get_text() for t in major)
    boxes = [t.get_window_extent(renderer) for t in major]
    assert not [(a, b) for a, b in itertools.combinations(boxes, 2) if a.overlaps(b)]
    plt.close(fig)


def test_pareto_plot_writes_a_png(tmp_path):
    summary = demo_summary()
    summary["rows"] = summary["rows"][:3]  # the floor and two rows; no diversity metric
    summary["diversity_metric"] = None
    path = pareto_plot(summary, tmp_path / "sub" / "pareto.png", SAMPLER_NAMES, HEADERS)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_scatter_legend_lies_outside_the_data(tmp_path):
    g = torch.Generator().manual_seed(0)
    ref, x = sample_toy("grid25", 500, g), sample_toy("grid25", 500, g)
    fig = scatter_figure(x, ref, title="ddim-5")
    fig.canvas.draw()
    (ax,) = fig.axes
    (legend,) = fig.legends + ([ax.get_legend()] if ax.get_legend() else [])
    renderer = fig.canvas.get_renderer()
    assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))
    assert [t.get_text() for t in legend.get_texts()] == ["data", "samples"]
    plt.close(fig)
    assert save_scatter(x, tmp_path / "s.png", ref).stat().st_size > 5_000


def test_pareto_plot_of_a_bench_whose_every_row_diverged(tmp_path):
    """Rows with only a non-finite share (no quality score) leave empty panels, not a failed report."""
    summary = {"name": "all diverged", "dataset": "digits", "num_samples": 100, "quality_metric": "FD-digits",
               "diversity_metric": "recall", "lower_is_better": True, "rows": [
                   {"key": "data", "label": "data", "sampler": "-", "steps": 0, "eta": None, "nfe": 0,
                    "seconds": None, "floor": True, "FD-digits": 0.1, "recall": 0.9},
                   {"key": "a", "label": "A", "sampler": "ddim", "steps": 5, "eta": 0.0, "nfe": 5, "seconds": 0.5,
                    "floor": False, "nonfinite_%": 100.0}]}
    path = pareto_plot(summary, tmp_path / "pareto.png", SAMPLER_NAMES, HEADERS)
    assert path.stat().st_size > 1000
