"""Sampler overhead: our DDIM loop against diffusers' DDIMScheduler loop on the same UNet, the same
steps and the same x_T, timed alternately in one process (issue 3, acceptance 6).

Both loops call the identical network the same number of times, so the ratio (ours / diffusers)
measures everything around the network: schedule arithmetic, the denoiser wrapper, the update. A
ratio <= 1.0 means our loop adds no more than diffusers' does. The outputs are compared too.

    python benchmarks/sampler_overhead.py runs/digits-ddpm --steps 50 --batch 64 --repeats 20
    python benchmarks/sampler_overhead.py configs/digits-ddpm.yaml   # random weights of the preset
    python benchmarks/sampler_overhead.py runs/digits-ddpm --null-net  # loop overhead alone

--null-net swaps the UNet for a module that returns 0.1 x (in both loops), so the times are the loops'
own cost per step: schedule arithmetic, wrappers, updates.
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import torch

from trilemma.checkpoint import load_checkpoint
from trilemma.config import load_config
from trilemma.denoiser import CountNFE
from trilemma.export import ddim_scheduler_for
from trilemma.families import build_family
from trilemma.samplers import sample_ddim
from trilemma.schedules import time_grid


def diffusers_ddim(unet, scheduler, x: torch.Tensor, steps: int) -> tuple[torch.Tensor, int]:
    """The DDIMPipeline loop without its pre/post-processing: unet -> scheduler.step, eta = 0."""
    scheduler.set_timesteps(steps)
    nfe = 0
    for t in scheduler.timesteps:
        out = unet(x, t).sample
        nfe += 1
        x = scheduler.step(out, t, x, eta=0.0).prev_sample
    return x, nfe


class NullUNet(torch.nn.Module):
    """Stands in for UNet2DModel at (almost) zero cost: output 0.1 x, in diffusers' output wrapper."""

    def forward(self, x, timestep):
        return SimpleNamespace(sample=0.1 * x)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="a checkpoint / run directory, or a YAML config (random weights)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=20, help="timed runs of each loop (after 2 warm-up runs each)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--null-net", action="store_true", help="replace the UNet by 0.1 x: time the loops alone")
    args = p.parse_args()

    device = torch.device(args.device)
    if args.source.endswith((".yaml", ".yml")):
        cfg, weights = load_config(args.source), None
        torch.manual_seed(0)
    else:
        ck = load_checkpoint(args.source)
        cfg, weights = ck.cfg, ck.weights
    data_shape = {"digits": (1, 8, 8), "fashion-mnist": (1, 32, 32) if cfg.data.pad32 else (1, 28, 28)}
    shape = data_shape.get(cfg.data.name)
    if shape is None:
        raise SystemExit(f"{args.source}: the overhead benchmark runs on image UNets (digits, fashion-mnist)")
    fam = build_family(cfg, shape)
    if weights is not None:
        fam.modules.load_state_dict(weights)
    if args.null_net:
        fam.modules["net"].unet = NullUNet()
    fam.modules.to(device).eval()
    den = CountNFE(fam.denoiser(fam.modules))
    unet = fam.modules["net"].unet  # the very module our denoiser wraps
    scheduler = ddim_scheduler_for(cfg)
    ts = time_grid(den.schedule, args.steps, "leading")
    x_T = torch.randn((args.batch, *shape), generator=torch.Generator().manual_seed(0)).to(device)

    def ours():
        den.nfe = 0
        return sample_ddim(den, den.schedule, x_T.clone(), ts), den.nfe

    def theirs():
        with torch.no_grad():
            return diffusers_ddim(unet, scheduler, x_T.clone(), args.steps)

    def timed(fn):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0, out

    for _ in range(2):  # warm-up: allocator, kernel selection
        ours(), theirs()
    times, outs = {"ours": [], "diffusers": []}, {}
    for r in range(args.repeats):
        order = [("ours", ours), ("diffusers", theirs)]
        for name, fn in order if r % 2 == 0 else order[::-1]:  # alternate who goes first
            t, (x, nfe) = timed(fn)
            times[name].append(t)
            outs[name] = (x, nfe)
    (xo, nfe_o), (xd, nfe_d) = outs["ours"], outs["diffusers"]
    med = {k: statistics.median(v) for k, v in times.items()}
    params = sum(p.numel() for p in unet.parameters())
    net = "null network (0.1 x)" if args.null_net else f"UNet {params / 1e6:.2f} M parameters"
    print(f"{args.source}: {net}, batch {args.batch} x {shape}, DDIM {args.steps} steps, "
          f"{args.repeats} alternating repeats on {device} ({torch.get_num_threads()} threads), torch {torch.__version__}")
    print("| loop | NFE | median seconds | min | max |")
    print("|---|---|---|---|---|")
    for name, nfe in (("ours", nfe_o), ("diffusers", nfe_d)):
        v = times[name]
        print(f"| {name} | {nfe} | {med[name]:.4f} | {min(v):.4f} | {max(v):.4f} |")
    # each repeat runs the two loops back to back, so the per-repeat ratio cancels slow drifts of the
    # machine's speed (frequency, other load) that a ratio of two separate medians keeps
    paired = sorted(o / d for o, d in zip(times["ours"], times["diffusers"]))
    q1, _, q3 = statistics.quantiles(paired, n=4) if len(paired) > 1 else paired * 3
    print(f"ratio ours / diffusers: median of paired ratios {statistics.median(paired):.3f} "
          f"(quartiles {q1:.3f}-{q3:.3f}); ratio of medians {med['ours'] / med['diffusers']:.3f}; "
          f"max abs difference of the samples: {(xo - xd).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
