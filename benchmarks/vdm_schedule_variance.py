"""What the learned schedule's shape buys: one trained VDM's bound under its learned schedule and under the
straight line between the same endpoints (issue 5, acceptance 2).

The network is conditioned on gamma, so the continuous-time bound has the same expectation under any
schedule with the same endpoints; only the Monte-Carlo variance of its estimate changes, and the learned
shape was trained to lower it. Both rows use the same images and the same draws of (u, eps, eps_0).

    python benchmarks/vdm_schedule_variance.py runs/fmnist-vdm -n 10000 --draws 2
"""

from __future__ import annotations

import argparse
import time

import torch

from trilemma.checkpoint import load_checkpoint
from trilemma.data import load_dataset
from trilemma.families import build_family
from trilemma.metrics.likelihood import evaluate_bound
from trilemma.schedules import LearnedGamma, LinearGamma


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ckpt", help="a vdm checkpoint trained with schedule.name: learned")
    p.add_argument("-n", type=int, default=10_000, help="test images")
    p.add_argument("--draws", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    ck = load_checkpoint(args.ckpt)
    fam = build_family(ck.cfg, ck.sample_shape)
    fam.modules.load_state_dict(ck.weights)
    fam.modules.eval()
    learned = fam.modules["schedule"]
    if not isinstance(learned, LearnedGamma):
        raise SystemExit(f"{args.ckpt}: trained with schedule {ck.cfg.schedule.name!r}, not learned")
    if ck.cfg.vdm.timesteps:
        raise SystemExit(f"{args.ckpt}: trained on the discrete-time bound (vdm.timesteps = {ck.cfg.vdm.timesteps}), "
                         "whose expectation depends on the schedule's shape; this comparison needs the continuous one")
    g0, g1 = (v.item() for v in learned.endpoints())
    x = load_dataset(ck.cfg.data, "test").x[: args.n]
    print(f"{args.ckpt} (step {ck.meta['step']}): gamma_0 = {g0:.4f}, gamma_1 = {g1:.4f}; {len(x)} test images x "
          f"{args.draws} draws")
    print("| schedule | bits/dim | 95% CI | diffusion variance per draw | diffusion Monte-Carlo variance | seconds |")
    print("|---|---|---|---|---|---|")
    for name, sched in (("learned", learned), ("linear, same endpoints", LinearGamma(g0, g1))):
        fam.modules["schedule"] = sched
        t0 = time.perf_counter()
        res = evaluate_bound(lambda x, u, e, e0: fam.terms(fam.modules, x, u, e, e0), x, to_bpd=fam.to_bpd,
                             batch_size=args.batch_size, draws=args.draws, seed=args.seed)
        tot, var = res["terms"]["total"], res["variance"]
        mc = f"{var['diffusion_mc']:.4f}" if "diffusion_mc" in var else "-"
        print(f"| {name} | {tot['mean']:.4f} | ± {tot['ci95']:.4f} | {var['diffusion']:.4f} | {mc} | "
              f"{time.perf_counter() - t0:.1f} |", flush=True)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
