"""DDIM inversion round trip on real data: invert test images to x_T with DDIM (eta = 0), sample
back on the same grid, report the mean absolute reconstruction error (issue 2, acceptance 3).

    python benchmarks/inversion.py runs/digits-ddpm --steps 50 -n 297
"""

from __future__ import annotations

import argparse
import time

import torch

from trilemma.checkpoint import load_checkpoint
from trilemma.data import load_dataset
from trilemma.denoiser import CountNFE
from trilemma.loading import denoiser_from_checkpoint
from trilemma.samplers import sample_ddim, sample_ddim_inverse
from trilemma.schedules import time_grid


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ckpt")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("-n", type=int, default=297, help="test images (digits has 297)")
    p.add_argument("--fixed-point-iters", type=int, nargs="*", default=[0, 3])
    args = p.parse_args()

    ck = load_checkpoint(args.ckpt)
    den = CountNFE(denoiser_from_checkpoint(ck))
    x = load_dataset(ck.cfg.data, "test").x[: args.n]
    ts = time_grid(den.schedule, args.steps, "leading")
    print(f"{ck.path} (step {ck.meta['step']}), {len(x)} test samples, DDIM {args.steps} steps, eta 0")
    print("| inversion | NFE (invert + sample) | mean abs error | max abs error | seconds |")
    print("|---|---|---|---|---|")
    for iters in args.fixed_point_iters:
        den.nfe = 0
        t0 = time.perf_counter()
        z = sample_ddim_inverse(den, den.schedule, x, ts, fixed_point_iters=iters)
        back = sample_ddim(den, den.schedule, z, ts)
        sec = time.perf_counter() - t0
        err = (back - x).abs()
        name = "one evaluation per step" if iters == 0 else f"{iters} fixed-point iterations"
        print(f"| {name} | {den.nfe} | {err.mean():.4f} | {err.max():.4f} | {sec:.1f} |")
    print(f"inverted noise: mean {z.mean():.3f}, std {z.std():.3f} (a standard normal has 0, 1)")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
