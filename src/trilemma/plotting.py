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


def save_scatter(points: torch.Tensor, path: str | Path, reference: torch.Tensor | None = None, title: str = "") -> Path:
    """Scatter plot of (N, 2) samples, optionally over reference data in grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
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
        ax.legend(loc="upper right", markerscale=4)
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
