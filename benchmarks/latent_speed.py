"""Pixel against latent diffusion at equal backbone width: seconds per training step and per sampling
step (one network evaluation), measured in one process, alternating, on the same batch size (issue 6,
acceptance 2).

    python benchmarks/latent_speed.py configs/fmnist-cpu-ddpm.yaml configs/fmnist-latent-ddpm.yaml \
        --batch 64 --sample-batch 125 --repeats 30

A training step is what the training loop does per step: the family's loss on a batch, backward, an AdamW
step. The latent model is timed on cached latents (its preset's `latent.cache`, encoded once before
training) and, separately, with the batch encoded inside the step (`latent.cache: false`). A sampling step
is one denoiser evaluation; decoding a sampled batch happens once per sample set, whatever the number of
steps, and is timed on its own. The autoencoder is the one the latent config names (its weights do not
change the timings; --autoencoder points at another).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from trilemma.config import load_config
from trilemma.data import load_dataset
from trilemma.families import build_family
from trilemma.training import ShardedRNG, frozen, phase_parameters


def _timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _train_step(family, x: torch.Tensor, seed: int):
    """A closure running one training step of `family` on the batch x, as the training loop does: per
    optimizer phase, its loss with the other phases' modules frozen, backward, an AdamW step."""
    mods = family.modules
    opts = {ph: torch.optim.AdamW(phase_parameters(mods, names), lr=1e-4) for ph, names in family.phases.items()}
    rng = ShardedRNG(seed)

    def step():
        mods.train()
        batch = x.clone()  # a new batch object each step, as the loader gives (so nothing is memoised across steps)
        for phase, names in family.phases.items():
            with frozen([mods[n] for n in mods if n not in names]):
                family.loss(phase, mods, batch, rng, 0).mean().backward()
            opts[phase].step()
            opts[phase].zero_grad(set_to_none=True)
    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pixel", help="the pixel-space config (YAML)")
    p.add_argument("latent", help="the latent config (YAML) with latent.autoencoder")
    p.add_argument("--autoencoder", default=None, help="override the latent config's latent.autoencoder")
    p.add_argument("--batch", type=int, default=64, help="training batch")
    p.add_argument("--sample-batch", type=int, default=125, help="sampling batch")
    p.add_argument("--repeats", type=int, default=30, help="timed repeats of each measurement (after 3 warm-up ones)")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()
    torch.manual_seed(0)
    pix_cfg = load_config(args.pixel)
    lat_over = [f"latent.autoencoder={args.autoencoder}"] if args.autoencoder else []
    lat_cfg = load_config(args.latent, lat_over)
    otf_cfg = load_config(args.latent, lat_over + ["latent.cache=false"])
    data = load_dataset(pix_cfg.data, "train")
    x = data.x[: max(args.batch, args.sample_batch)]
    pix, lat, otf = (build_family(c, data.shape) for c in (pix_cfg, lat_cfg, otf_cfg))
    width = {name: sum(q.numel() for q in f.modules.parameters()) for name, f in (("pixel", pix), ("latent", lat))}
    with torch.no_grad():
        z = lat.ae.encode(x)
    g = torch.Generator().manual_seed(1)
    noise = {"pixel": torch.randn((args.sample_batch, *pix.sample_shape), generator=g),
             "latent": torch.randn((args.sample_batch, *lat.sample_shape), generator=g)}
    dens = {"pixel": pix.denoiser(pix.modules), "latent": lat.denoiser(lat.modules)}

    def sample_step(name):
        dens[name].net.eval()
        with torch.no_grad():
            dens[name](noise[name], 0.5)

    def decode():
        with torch.no_grad():
            lat.decode(noise["latent"])

    jobs = {
        "train pixel": _train_step(pix, x[: args.batch], 0),
        "train latent (cached latents)": _train_step(lat, z[: args.batch], 0),
        "train latent (encoding each batch)": _train_step(otf, x[: args.batch], 0),
        "sample step pixel": lambda: sample_step("pixel"),
        "sample step latent": lambda: sample_step("latent"),
        "decode a sample batch": decode,
    }
    times = {k: [] for k in jobs}
    for _ in range(3):  # warm-up
        for fn in jobs.values():
            fn()
    for _ in range(args.repeats):  # alternate, so drift hits every job alike
        for k, fn in jobs.items():
            times[k] += _timed(fn, 1)
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {
        "batch": args.batch, "sample_batch": args.sample_batch, "repeats": args.repeats,
        "threads": torch.get_num_threads(), "parameters": width,
        "shapes": {"pixel": list(pix.sample_shape), "latent": list(lat.sample_shape)},
        "median_seconds": med,
        "train_speedup_cached": med["train pixel"] / med["train latent (cached latents)"],
        "train_speedup_encoding": med["train pixel"] / med["train latent (encoding each batch)"],
        "sample_step_speedup": med["sample step pixel"] / med["sample step latent"],
    }
    print(f"backbone parameters: pixel {width['pixel']:,}, latent {width['latent']:,}; "
          f"shapes {tuple(pix.sample_shape)} -> {tuple(lat.sample_shape)}; {torch.get_num_threads()} threads")
    print("| measurement | batch | median seconds |\n|---|---|---|")
    for k, v in med.items():
        print(f"| {k} | {args.batch if k.startswith('train') else args.sample_batch} | {v:.4f} |")
    print(f"training step: {res['train_speedup_cached']:.1f}x cheaper on cached latents, "
          f"{res['train_speedup_encoding']:.1f}x encoding each batch; sampling step: {res['sample_step_speedup']:.1f}x cheaper")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
