"""Pictures a person would rather look at than read: image grids and 2-D scatter plots."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch


def image_grid(x: torch.Tensor, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> uint8 (rows*H', cols*W', C) grid with `pad`-pixel gaps."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    n, c, h, w = x.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        y0, x0 = pad + r * (h + pad), pad + col * (w + pad)
        grid[y0 : y0 + h, x0 : x0 + w] = x[i].permute(1, 2, 0).numpy()
    return grid


def save_image_grid(x: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int = 1) -> Path:
    """Write a PNG grid of images in [-1, 1]; `scale` enlarges small images (nearest neighbour)."""
    from PIL import Image

    g = image_grid(x, nrow)
    img = Image.fromarray(g[..., 0] if g.shape[2] == 1 else g)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def scatter_figure(points: torch.Tensor, reference: torch.Tensor | None = None, title: str = ""):
    """The figure of `save_scatter` (not saved, not closed). The legend sits below the axes, outside the
    data, so it hides no mode of the toy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5.3), dpi=100, layout="constrained")
    if reference is not None:
        r = reference.detach().cpu().numpy()
        ax.scatter(r[:, 0], r[:, 1], s=1, c="0.75", alpha=0.5, label="data")
    p = points.detach().cpu().numpy()
    ax.scatter(p[:, 0], p[:, 1], s=2, c="tab:blue", alpha=0.7, label="samples")
    lim = float(np.nanmax(np.abs(reference.cpu().numpy() if reference is not None else p))) * 1.15 if len(p) else 1.0
    lim = lim if np.isfinite(lim) and lim > 0 else 3.0
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(title)
    if reference is not None:
        leg = fig.legend(loc="outside lower center", ncol=2, markerscale=4, frameon=False)
        for h in leg.legend_handles:
            h.set_alpha(1)
    return fig


def save_scatter(points: torch.Tensor, path: str | Path, reference: torch.Tensor | None = None, title: str = "") -> Path:
    """Scatter plot of (N, 2) samples, optionally over reference data in grey (`scatter_figure`)."""
    import matplotlib.pyplot as plt

    fig = scatter_figure(points, reference, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def save_samples(x: torch.Tensor, path: str | Path, reference: torch.Tensor | None = None, title: str = "") -> Path:
    """A grid for images, a scatter plot for 2-D points."""
    if x.ndim == 2:
        return save_scatter(x, path, reference, title)
    return save_image_grid(x, path, scale=max(1, 64 // x.shape[-1]))


# --- the bench's Pareto plot --------------------------------------------------------------------------------


def pareto_row_name(row: dict, sampler_names: dict) -> str:
    """'DDGAN T=4 · ancestral 4', 'DDPM · DDIM 20 η=1': the model's label, the sampler, its steps and options. The
    sampler "ddpm" is the ancestral sampler whichever model runs it, so its "DDPM" is left to the label."""
    name = sampler_names.get(row["sampler"], row["sampler"])
    if row["sampler"] == "ddpm" and name.startswith("DDPM "):
        name = name[len("DDPM "):]
    from .samplers import all_sampler_options

    eta = f" η={row['eta']:g}" if row.get("eta") is not None else ""  # DDIM rows, η=0 too
    # any other sampler option the row sets away from its default: "clip_x0", "steps_per_level=2"
    extra = "".join(f" {k}" if v is True else f" {k}={v:g}" for k, o in all_sampler_options().items()
                    if k != "eta" and (v := row.get(k)) is not None and v != o.default)
    # how the networks ran, where it is not the fp32 eager default layout
    from .runtime import Runtime

    runtime = Runtime.from_dict(row.get("runtime"))
    run = "" if runtime.is_default else f" {runtime.describe()}"
    return f"{row['label']} · {name} {row['steps']}{eta}{extra}{run}"


def _plain_log_axis(axis, lo: float, hi: float) -> None:
    """Major ticks only, labelled plainly (0.05, 1, 20); minor ticks unlabelled. Ticks at 1-2-3-5 within a
    span of up to 1.2 decades, 1-2-5 up to 2.5, 1-3 up to 5, powers of ten beyond (LogLocator thins them
    to about 8)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    decades = math.log10(max(hi, lo * 1.0001) / lo)
    subs = ((1.0, 2.0, 3.0, 5.0) if decades <= 1.2 else (1.0, 2.0, 5.0) if decades <= 2.5
            else (1.0, 3.0) if decades <= 5 else (1.0,))
    axis.set_major_locator(LogLocator(base=10, subs=subs, numticks=8))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_locator(LogLocator(base=10, subs=[s for s in range(2, 10) if s not in subs], numticks=12))
    axis.set_minor_formatter(NullFormatter())


def _place_numbers(ax, xs, ys, numbers, fontsize: float = 8) -> list:
    """Write each point's number beside it (greedy, in display coordinates; call once the layout is fixed).
    Candidate spots ring the point at 1, 2 and 3 times the nearest distance; the first spot is taken whose
    box hits no number placed before, no marker, and comes no nearer than a marker's width to another
    point, inside the axes; failing that, the spot with the fewest collisions. A number set further out
    gets a leader line."""
    from matplotlib.transforms import Bbox

    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    px_per_pt = fig.dpi / 72
    pts = ax.transData.transform(np.column_stack([xs, ys]))
    r = 4.5 * px_per_pt  # marker radius (s=60 is ~8 pt across) in pixels

    def square(c, h):
        return Bbox.from_extents(c[0] - h, c[1] - h, c[0] + h, c[1] + h)

    markers = [square(c, r) for c in pts]
    near = [square(c, 2 * r) for c in pts]  # a marker's width around each point
    directions = [(1, 0.8), (1, -0.8), (-1, 0.8), (-1, -0.8), (1.4, 0), (-1.4, 0), (0, 1.4), (0, -1.4)]
    placed, texts = [], []
    for i, (x, y, n) in enumerate(zip(xs, ys, numbers)):
        probe = ax.text(0, 0, str(n), fontsize=fontsize, fontweight="bold")
        ext = probe.get_window_extent(renderer)
        probe.remove()
        w, h = ext.width + 2, ext.height + 2
        best = None
        for ring in (1, 2, 3):
            for ux, uy in directions:
                dx, dy = 5 * ring * ux, 5 * ring * uy  # points
                cx, cy = pts[i][0] + dx * px_per_pt, pts[i][1] + dy * px_per_pt
                x0 = cx if ux > 0 else cx - w if ux < 0 else cx - w / 2
                y0 = cy if uy > 0 else cy - h if uy < 0 else cy - h / 2
                box = Bbox.from_bounds(x0, y0, w, h)
                frame = ax.bbox
                inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
                cost = (100 * sum(box.overlaps(b) for b in placed) + 100 * sum(box.overlaps(b) for b in markers)
                        + 50 * (not inside)
                        + sum(box.overlaps(b) for j, b in enumerate(near) if j != i) + 0.1 * ring)
                if best is None or cost < best[0]:
                    best = (cost, dx, dy, ux, uy, ring, box)
            if best[0] < 1:
                break
        _, dx, dy, ux, uy, ring, box = best
        t = ax.annotate(str(n), (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                        fontweight="bold", zorder=4,
                        ha="left" if ux > 0 else "right" if ux < 0 else "center",
                        va="bottom" if uy > 0 else "top" if uy < 0 else "center",
                        bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.7),
                        arrowprops=dict(arrowstyle="-", color="0.35", lw=0.6, shrinkA=0, shrinkB=4.5)
                        if ring > 1 else None)
        placed.append(box)
        texts.append(t)
    return texts


def _pareto_rows(summary: dict) -> tuple[list, float | None]:
    """The rows to plot as (number, row) pairs, numbered among the non-floor rows (a row without a
    quality score keeps its number but is left out), and the floor's (the data row's) quality or None."""
    q = summary["quality_metric"]
    numbered = [(i + 1, r) for i, r in enumerate(r for r in summary["rows"] if not r.get("floor"))]
    numbered = [(n, r) for n, r in numbered if r.get(q) is not None]
    floor = next((r for r in summary["rows"] if r.get("floor")), None)
    return numbered, floor.get(q) if floor is not None else None


def _pareto_layout(key_cols: int):
    """A figure with two plot panels and, to their right, an empty axes for the key (`key_cols` columns
    wide): (fig, [nfe axes, seconds axes], key axes)."""
    import matplotlib.pyplot as plt

    key_width = 2.8 * key_cols
    fig = plt.figure(figsize=(11.5 + key_width, 5.0), dpi=110, layout="constrained")
    gs = fig.add_gridspec(1, 3, width_ratios=[1, 1, key_width / 5.2])
    axes = [fig.add_subplot(gs[0]), fig.add_subplot(gs[1])]
    key_ax = fig.add_subplot(gs[2])
    key_ax.set_axis_off()
    return fig, axes, key_ax


def _diversity_colours(rows: list, d: str | None) -> list | None:
    """Each row's diversity score (NaN where missing) to colour its point by, or None when there is no
    diversity metric or no row has a score."""
    cvals = [r.get(d) for r in rows] if d else None
    has_c = bool(d) and any(v is not None for v in cvals)
    return [np.nan if v is None else v for v in cvals] if has_c else None


def _pareto_front(xs: np.ndarray, ys: np.ndarray, lower: bool) -> list:
    """Indices of the points no other point beats on both cost (x) and quality (y), in order of x."""
    front, best = [], math.inf if lower else -math.inf
    for i in np.argsort(xs, kind="stable"):
        if (ys[i] < best) if lower else (ys[i] > best):
            best = ys[i]
            front.append(i)
    return front


def _draw_pareto_panel(ax, xs: np.ndarray, ys: np.ndarray, cvals: list | None, floor_q: float | None,
                       lower: bool):
    """One panel: the points (coloured by `cvals` if given), the Pareto front, the floor line, y limits
    that keep the floor off the frame and a log x axis with room for the numbers. Returns the scatter."""
    colour = dict(c=cvals, cmap="viridis") if cvals is not None else dict(c="tab:blue")
    sc = ax.scatter(xs, ys, s=60, edgecolors="k", zorder=3, **colour)
    front = _pareto_front(xs, ys, lower)
    if front:
        ax.step(xs[front], ys[front], where="post", color="tab:red", alpha=0.5, zorder=2)
    if floor_q is not None:
        ax.axhline(floor_q, color="0.4", ls="--", zorder=1)
    span = list(ys) + ([floor_q] if floor_q is not None else [])
    if span:
        ylo, yhi = min(span), max(span)
        pad = 0.08 * (yhi - ylo or 1.0)
        ax.set_ylim(ylo - pad, yhi + pad)  # keeps the floor line off the frame
    ax.set_xscale("log")
    if len(xs):
        lo, hi = float(xs.min()), float(xs.max())
        ax.set_xlim(lo / 10 ** 0.15, hi * 10 ** 0.15)  # room for the numbers beside the extreme points
        _plain_log_axis(ax.xaxis, *ax.get_xlim())
    else:  # every row diverged (no finite score): an empty panel that says so, not a failed report
        ax.set_xlim(1, 10)
        ax.text(0.5, 0.5, "no row has a finite score", transform=ax.transAxes, ha="center", va="center")
    return sc


def _label_pareto_panel(ax, xlabel: str, ylabel: str, lower: bool) -> None:
    """Axis labels (the y label says which way is better) and major/minor grid lines."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel + (" (lower is better)" if lower else " (higher is better)"))
    ax.grid(alpha=0.3, which="major")
    ax.grid(alpha=0.12, which="minor")


def _write_key(key_ax, key: list, key_cols: int) -> list:
    """The key's lines in `key_cols` monospace columns from the top of `key_ax`; returns the texts."""
    per_col = math.ceil(len(key) / key_cols) if key else 1
    return [key_ax.text(c / key_cols, 1.0, "\n".join(key[c * per_col:(c + 1) * per_col]), va="top", ha="left",
                        transform=key_ax.transAxes, fontsize=8, family="monospace", linespacing=1.5)
            for c in range(key_cols)]


def _add_line_legend(key_ax, key_texts: list, has_floor: bool) -> None:
    """The legend of the Pareto front and floor lines, just below the key (call once the layout is fixed)."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="tab:red", alpha=0.5, label="Pareto front")]
    if has_floor:
        handles.append(Line2D([], [], color="0.4", ls="--", label="data (train vs test)"))
    renderer = key_ax.figure.canvas.get_renderer()
    bottom = min((t.get_window_extent(renderer).y0 for t in key_texts), default=key_ax.bbox.y1)
    y = key_ax.transAxes.inverted().transform((0, bottom))[1] - 0.02
    key_ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(0, y), fontsize=8, frameon=False,
                  borderaxespad=0, borderpad=0)


def pareto_figure(summary: dict, sampler_names: dict, headers: dict):
    """The figure of `pareto_plot` (not saved, not closed): two panels, quality against NFE and against
    seconds (log x), colour = diversity with a colour bar, the floor (the data row) as a dashed line and
    the Pareto front (no row both faster and better) as a step line. Each point carries a number; the key
    beside the panels names its row (`pareto_row_name`)."""
    import matplotlib

    matplotlib.use("Agg")

    q, d, lower = summary["quality_metric"], summary["diversity_metric"], summary["lower_is_better"]
    numbered, floor_q = _pareto_rows(summary)
    rows = [r for _, r in numbered]
    key = [f"{n:>2}  {pareto_row_name(r, sampler_names)}" for n, r in numbered]
    key_cols = max(1, math.ceil(len(key) / 24))
    fig, axes, key_ax = _pareto_layout(key_cols)
    cvals = _diversity_colours(rows, d)
    ys = np.array([r[q] for r in rows], dtype=float)
    panels = []
    for ax, xkey, xlabel in ((axes[0], "nfe", "network evaluations (NFE)"),
                             (axes[1], "seconds", f"seconds for {summary['num_samples']} samples")):
        xs = np.array([max(r[xkey], 1e-6) for r in rows], dtype=float)
        sc = _draw_pareto_panel(ax, xs, ys, cvals, floor_q, lower)
        _label_pareto_panel(ax, xlabel, headers.get(q, q), lower)
        panels.append((ax, xs))
    if cvals is not None:
        fig.colorbar(sc, ax=axes[1], label=headers.get(d, d), pad=0.02)
    key_texts = _write_key(key_ax, key, key_cols)
    fig.suptitle(f"{summary['name']}: speed against quality ({summary['dataset']})")
    fig.canvas.draw()  # run the layout once, then freeze it so the numbers are placed on the final axes
    fig.set_layout_engine("none")
    _add_line_legend(key_ax, key_texts, floor_q is not None)
    for ax, xs in panels:
        _place_numbers(ax, xs, ys, [n for n, _ in numbered])
    return fig


def pareto_plot(summary: dict, path: str | Path, sampler_names: dict, headers: dict) -> Path:
    """Write `pareto_figure(summary, sampler_names, headers)` to `path` (PNG)."""
    import matplotlib.pyplot as plt

    fig = pareto_figure(summary, sampler_names, headers)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
