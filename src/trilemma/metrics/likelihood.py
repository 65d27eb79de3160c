"""Bits/dim from a variational bound, with a confidence interval over images and Monte-Carlo draws.

A model family supplies `terms_fn(x, u, eps, eps_0) -> BoundTerms` (nats per sample, each term separately;
`families.vdm.vdm_terms`, `families.ddpm.ddpm_vlb_terms`, built from `trilemma.bounds`); this module draws
the randomness, batches a dataset and summarises. Each image gets `draws` independent draws of
(t, eps, eps_0). The reported mean is over all images and draws; its 95%
interval is 1.96 times the standard error of the per-image means (the spread of the data and of the draws
together); with two or more draws the within-image variance is the Monte-Carlo variance of the estimator
alone, the quantity a learned schedule shape lowers (Kingma et al. 2021).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

TERMS = ("prior", "recon", "diffusion")
BPD_DRAWS = 2  # default draws per image, everywhere (trilemma eval --bpd, the bench): two also give the MC variance
BPD_BATCH = 250  # default images per network call (the result does not depend on it beyond float rounding)
CHUNK = 1000  # images per block of random draws


def summarise(per_draw: dict[str, np.ndarray]) -> dict:
    """Per-term statistics from arrays (N images, K draws) of per-draw values (bits/dim)."""
    out: dict = {"terms": {}, "variance": {}}
    for name, v in per_draw.items():
        n, k = v.shape
        per_image = v.mean(1)
        se = per_image.std(ddof=1) / math.sqrt(n) if n > 1 else float("nan")
        out["terms"][name] = {"mean": float(v.mean()), "ci95": float(1.96 * se)}
        out["variance"][name] = float(v.var(ddof=1)) if v.size > 1 else float("nan")
        if k > 1:
            out["variance"][f"{name}_mc"] = float(v.var(axis=1, ddof=1).mean())
    return out


@torch.no_grad()
def evaluate_bound(terms_fn: Callable, x_all: torch.Tensor, *, to_bpd: Callable, batch_size: int = 250,
                   draws: int = 1, seed: int = 0, device=None, progress: bool = False) -> dict:
    """Bits/dim of every image in x_all (N, ...) under `terms_fn`, `draws` draws each: the summary of
    `summarise` for prior, recon, diffusion and total, plus the image and draw counts. The same seed gives the
    same numbers at any batch size."""
    from tqdm.auto import tqdm

    if draws < 1 or batch_size < 1:
        raise ValueError(f"draws and batch_size must be >= 1, got {draws} and {batch_size}")
    gen = torch.Generator().manual_seed(seed)
    vals = {name: [] for name in (*TERMS, "total")}
    bar = tqdm(total=len(x_all), desc="bits/dim", disable=not progress)
    # the draws are made per chunk of CHUNK images, whatever the batch size, so results do not depend on it
    for c in range(0, len(x_all), CHUNK):
        xc = x_all[c : c + CHUNK]
        noise = [(torch.rand(len(xc), generator=gen, dtype=torch.float64), torch.randn(xc.shape, generator=gen),
                  torch.randn(xc.shape, generator=gen)) for _ in range(draws)]
        for i in range(0, len(xc), batch_size):
            x = xc[i : i + batch_size].to(device)
            cols = {name: [] for name in vals}
            for u, eps, eps_0 in noise:
                sl = slice(i, i + batch_size)
                t = terms_fn(x, u[sl], eps[sl].to(device=device, dtype=x.dtype), eps_0[sl].to(device=device, dtype=x.dtype))
                parts = {"prior": t.prior, "recon": t.recon, "diffusion": t.diffusion, "total": t.total()}
                for name, p in parts.items():
                    cols[name].append(to_bpd(p.detach()).double().cpu())
            for name in vals:
                vals[name].append(torch.stack(cols[name], 1))  # (B, draws)
            bar.update(len(x))
    bar.close()
    out = summarise({name: torch.cat(v).numpy() for name, v in vals.items()})
    out.update(images=len(x_all), draws=draws)
    return out


def bpd_table(res: dict) -> str:
    """The terms of an `evaluate_bound` result as a Markdown table (bits/dim, 95% interval, variances)."""
    names = {"prior": "prior (t = 1)", "recon": "reconstruction", "diffusion": "diffusion", "total": "total"}
    mc = "diffusion_mc" in res["variance"]
    lines = ["| term | bits/dim | 95% CI | variance per draw" + (" | Monte-Carlo variance |" if mc else " |"),
             "|---|---|---|---" + ("|---|" if mc else "|")]
    for k, label in names.items():
        t, v = res["terms"][k], res["variance"]
        cells = [label, f"{t['mean']:.4f}", f"± {t['ci95']:.4f}", f"{v[k]:.4g}"] + ([f"{v[k + '_mc']:.4g}"] if mc else [])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
