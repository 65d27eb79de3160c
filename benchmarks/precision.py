"""Speed of reduced precision, compilation and memory layout (issue 23), measured as ratios in one run.

    python benchmarks/precision.py speed --out runs/precision            # per-NFE seconds, every setting x backbone
    python benchmarks/precision.py quality --out runs/precision          # FD change of bf16 on Fashion-MNIST
    python benchmarks/precision.py demo --settings bf16 --out runs/precision  # the demo's rows at fp32 and bf16
    python benchmarks/precision.py train --out runs/precision            # training step time and final loss

speed: one denoiser call (one NFE, at t = 0.5, under inference_mode) of each backbone at its bench batch size, for
every setting, round-robin over the settings so that drift of the machine falls on all of them alike; the median of
--repeats calls after a warm-up (which includes compilation). Backbones: the digits UNet (configs/digits-ddpm.yaml,
batch 500), the Fashion-MNIST UNet (the shipped trilemma:fmnist-cpu-ddpm, batch 125), the latent UNet
(configs/fmnist-latent-ddpm.yaml on fmnist-ae's 4 x 8 x 8 latents, batch 125) and the toy MLP (trilemma:toy2d-ddpm,
batch 2500). Time does not depend on the weights, so the digits and latent UNets are freshly initialised.

quality: `trilemma bench` rows of the shipped Fashion-MNIST model, DDIM-20 and DPM-Solver++(2M)-20, fp32 eager against
each of --settings (default bf16, and bf16 + compile + channels_last) on the same noises, 2,000 samples, seeds 0 and 1
as separate runs: the FD change beside the run-to-run spread (the two seeds' difference in fp32).

demo: the rows of `trilemma demo` (shipped toy models, 2,500 samples) at fp32 and at each precision of --settings,
seeds 0 and 1 in one bench (mean and std over the seeds): the demo's default is decided by this.

train: `trilemma train configs/fmnist-cpu-ddpm.yaml` for --train-steps and for 20 steps in each setting; the step time
is the difference over the difference in steps (start-up and compilation, from empty caches in both, cancel), and the final loss is the trained
EMA model's L_simple on 1,024 fixed test images and noises, the same for every setting (float32 evaluation). A
setting that train.compile's gradient check refuses is recorded as refused, with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from trilemma.config import load_config
from trilemma.errors import TrilemmaError
from trilemma.families import build_family
from trilemma.runtime import Runtime, check_precision

SETTINGS = {  # name -> Runtime
    "fp32": Runtime(),
    "channels_last": Runtime(channels_last=True),
    "bf16": Runtime("bf16"),
    "bf16 + channels_last": Runtime("bf16", channels_last=True),
    "compile": Runtime(compile=True),
    "bf16 + compile": Runtime("bf16", compile=True),
    "bf16 + compile + channels_last": Runtime("bf16", compile=True, channels_last=True),
}


def _backbones():
    """name -> (family with weights, sample shape, batch size)."""
    from trilemma.checkpoint import load_checkpoint
    from trilemma.loading import loaded_family

    out = {}
    for name, ref in (("fmnist UNet", "trilemma:fmnist-cpu-ddpm"), ("toy MLP", "trilemma:toy2d-ddpm")):
        ck = load_checkpoint(ref)
        out[name] = (lambda ck=ck: loaded_family(ck, torch.device("cpu")), ck.sample_shape,
                     125 if "fmnist" in name else 2500)
    digits = load_config("configs/digits-ddpm.yaml")
    out["digits UNet"] = (lambda: _fresh(digits, (1, 8, 8)), (1, 8, 8), 500)
    latent = load_config("configs/fmnist-latent-ddpm.yaml")
    latent.latent.autoencoder = ""  # the inner UNet alone, on the autoencoder's latent shape
    out["latent UNet"] = (lambda: _fresh(latent, (4, 8, 8)), (4, 8, 8), 125)
    return out


def _fresh(cfg, shape):
    torch.manual_seed(0)
    fam = build_family(cfg, shape)
    fam.modules.eval()
    return fam


def speed(args) -> dict:
    cpu = torch.device("cpu")
    results = {"threads": torch.get_num_threads(), "repeats": args.repeats, "backbones": {}}
    for name, (make, shape, batch) in _backbones().items():
        if args.backbones and name.split()[0] not in args.backbones:
            continue
        torch._dynamo.reset()  # each backbone compiles afresh
        dens, z = {}, torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0))
        for setting, runtime in SETTINGS.items():
            family = make()
            family.accelerate(runtime)
            dens[setting] = family.denoiser(family.modules)
        times = {s: [] for s in dens}
        with torch.inference_mode():
            for s, den in dens.items():  # warm-up: compilation and kernel selection
                t0 = time.perf_counter()
                den(z, 0.5), den(z, 0.5)
                print(f"{name}: {s} warm-up {time.perf_counter() - t0:.1f} s", flush=True)
            for _ in range(args.repeats):
                for s, den in dens.items():
                    t0 = time.perf_counter()
                    den(z, 0.5)
                    times[s].append(time.perf_counter() - t0)
        med = {s: statistics.median(v) for s, v in times.items()}
        results["backbones"][name] = {"batch": batch, "shape": list(shape), "seconds_per_nfe": med,
                                      "speedup": {s: med["fp32"] / v for s, v in med.items()}}
        print(name, json.dumps(results["backbones"][name], indent=1), flush=True)
    return results


def _parse_setting(text: str) -> Runtime:
    """"bf16+compile+channels_last" -> Runtime("bf16", True, True); "fp32" the default."""
    parts = [p.strip() for p in text.split("+")]
    bad = [p for p in parts[1:] if p not in ("compile", "channels_last")]
    if parts[0] not in ("fp32", "bf16", "fp16") or bad:
        raise SystemExit(f"--settings {text!r}: a precision, then '+compile' and/or '+channels_last'")
    return Runtime(parts[0], "compile" in parts, "channels_last" in parts)


def quality(args) -> dict:
    """Each setting's rows beside fp32 eager's, on the same noises, one bench run per seed."""
    from trilemma.bench import config_from_dict, run_bench

    settings = [Runtime()] + [_parse_setting(s) for s in args.settings]
    for r in settings:
        check_precision(r.precision, torch.device("cpu"))
    out = {}
    for seed in (0, 1):
        rows = [{"checkpoint": "trilemma:fmnist-cpu-ddpm", "label": "fmnist", "sampler": ["ddim", "dpmpp"],
                 "steps": 20, **r.to_dict()} for r in settings]
        grid = {"name": "precision: fp32 eager against " + ", ".join(r.describe() for r in settings[1:]),
                "num_samples": args.num_samples, "batch_size": 125, "seeds": [seed], "bpd": False, "device": "cpu",
                "rows": rows}
        s = run_bench(config_from_dict(grid, "precision.py"), Path(args.out) / f"quality-seed{seed}", progress=True,
                      command="python benchmarks/precision.py quality")
        for r in s["rows"][1:]:
            name = Runtime(**r["runtime"]).describe()
            out.setdefault(r["sampler"], {}).setdefault(name, {})[seed] = {
                k: r[k] for k in ("FD-FMNIST", "precision", "recall", "coverage", "seconds")}
    for sampler, by in out.items():
        ref = by["fp32"]
        fd = lambda d, s: d[s]["FD-FMNIST"]  # noqa: E731
        print(f"{sampler}-20: FD fp32 {fd(ref, 0):.4f} / {fd(ref, 1):.4f} (seeds 0 / 1; spread "
              f"{abs(fd(ref, 0) - fd(ref, 1)):.4f})")
        for name, d in by.items():
            if name != "fp32":
                print(f"  {name}: {fd(d, 0):.4f} / {fd(d, 1):.4f} (change {fd(d, 0) - fd(ref, 0):+.4f} / "
                      f"{fd(d, 1) - fd(ref, 1):+.4f})")
    return out


def demo(args) -> dict:
    """The demo's grid (the shipped toy models, 2,500 samples) with every row at fp32 and at --settings, seeds 0 and
    1 in one bench run: each row's metrics as mean and std over the seeds."""
    from trilemma.bench import config_from_dict, run_bench
    from trilemma.demo import SHIPPED, demo_grid, shipped_checkpoint

    settings = [Runtime()] + [_parse_setting(s) for s in args.settings]
    grid = demo_grid({name: shipped_checkpoint(name) for name in SHIPPED}, 2500, "cpu")
    grid["rows"] = [{**row, "precision": [r.precision for r in settings]} for row in grid["rows"]]
    grid.update(name="trilemma demo at " + ", ".join(r.describe() for r in settings), seeds=[0, 1])
    s = run_bench(config_from_dict(grid, "precision.py"), Path(args.out) / "demo", progress=True,
                  command="python benchmarks/precision.py demo")
    return {"rows": s["rows"]}


def _final_loss(ckpt: Path) -> float:
    """L_simple of the EMA model on 1,024 fixed test images and noises (float32, the same for every setting)."""
    from trilemma.checkpoint import load_checkpoint
    from trilemma.data import load_dataset
    from trilemma.loading import loaded_family
    from trilemma.training import ShardedRNG

    ck = load_checkpoint(ckpt)
    family = loaded_family(ck, torch.device("cpu"))
    x = load_dataset(ck.cfg.data, "test").x[:1024]
    rng = ShardedRNG(1234, 0, 1, torch.device("cpu"))
    with torch.no_grad():
        return float(torch.cat([family.loss("model", family.modules, xb, rng, 0) for xb in x.split(256)]).mean())


def train(args) -> dict:
    from trilemma.training import train as run

    out = {}
    for name, mp, comp in (("fp32", "no", False), ("bf16", "bf16", False), ("compile", "no", True),
                           ("bf16 + compile", "bf16", True)):
        cfg = load_config("configs/fmnist-cpu-ddpm.yaml")
        cfg.train.mixed_precision, cfg.train.compile, cfg.train.save_every = mp, comp, 0
        walls = {}
        for steps in (20, args.train_steps):
            cfg.train.steps = steps
            d = Path(args.out) / f"train-{name.replace(' + ', '-')}-{steps}"
            # both runs compile from nothing, so that compilation cancels in the difference: dynamo's in-process
            # cache is cleared and inductor writes to an empty cache directory
            torch._dynamo.reset()
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")
            t0 = time.perf_counter()
            try:
                run(cfg, d, progress=False)
            except TrilemmaError as e:  # train.compile's gradient check refused a miscompiled network
                walls = None
                out[name] = {"refused": str(e)}
                print(name, out[name], flush=True)
                break
            walls[steps] = time.perf_counter() - t0
        if walls is None:
            continue
        rate = (args.train_steps - 20) / (walls[args.train_steps] - walls[20])
        out[name] = {"steps_per_second": rate, "wall": walls,
                     "final_loss": _final_loss(Path(args.out) / f"train-{name.replace(' + ', '-')}-{args.train_steps}" / "checkpoint")}
        print(name, out[name], flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["speed", "quality", "demo", "train"])
    p.add_argument("--out", default="runs/precision")
    p.add_argument("--repeats", type=int, default=8, help="speed: timed calls per setting")
    p.add_argument("--backbones", nargs="*", help="speed: only these (digits, fmnist, latent, toy)")
    p.add_argument("--settings", nargs="+", default=["bf16", "bf16+compile+channels_last"],
                   help="quality: the settings compared with fp32 eager (precision[+compile][+channels_last])")
    p.add_argument("--num-samples", type=int, default=2000)
    p.add_argument("--train-steps", type=int, default=200)
    args = p.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    res = {"speed": speed, "quality": quality, "demo": demo, "train": train}[args.what](args)
    (Path(args.out) / f"{args.what}.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
