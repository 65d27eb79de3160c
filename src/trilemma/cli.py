"""The `trilemma` command line: train, sample, export, eval, bench, demo (also `python -m trilemma`)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import click

from .errors import TrilemmaError
from .metrics.likelihood import BPD_BATCH, BPD_DRAWS
from .samplers import SAMPLER_INFO, all_sampler_options, check_sampler_options
from .schedules import SPACINGS

SPACING_CHOICES = list(SPACINGS)


def _fail(message: str, code: int = 2):
    click.echo(f"trilemma: error: {' '.join(str(message).split())}", err=True)
    sys.exit(code)


class _Group(click.Group):
    """Every failure a user can cause is one line on stderr and exit code 2: bad input (TrilemmaError), a
    usage error (click's), a file the system refuses (OSError). Only a bug shows a traceback; with
    TRILEMMA_DEBUG=1 every error does."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        debug = os.environ.get("TRILEMMA_DEBUG", "") not in ("", "0")
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:  # plain `trilemma`: the help, as click shows it
            e.show()
            sys.exit(e.exit_code)
        except click.ClickException as e:
            if debug:
                raise
            where = f" (see '{e.ctx.command_path} --help')" if getattr(e, "ctx", None) is not None else ""
            _fail(e.format_message() + where, e.exit_code)
        except click.Abort:
            _fail("interrupted", 130)
        except TrilemmaError as e:
            if debug:
                raise
            _fail(e)
        except OSError as e:
            if debug:
                raise
            name = f"{e.filename}: " if e.filename else ""
            _fail(f"{name}{e.strerror or e}")
        except (MemoryError, RuntimeError) as e:  # a model, batch or -n too large for this machine
            text = str(e).splitlines()[0] if str(e) else type(e).__name__
            if debug or not (isinstance(e, MemoryError) or "out of memory" in text.lower()
                             or "allocate" in text.lower()):
                raise
            _fail(f"out of memory ({text}); use a smaller model, batch size or -n")
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="trilemma")
def main():
    """trilemma: fast diffusion models measured on speed, quality and diversity.

    \b
    Example:
      trilemma train configs/toy2d-ddpm.yaml --out runs/toy
      trilemma sample runs/toy --sampler ddim --steps 20 -n 2500 --out runs/toy.png
    """


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key, e.g. --set train.lr=3e-4.")
@click.option("--steps", type=int, default=None, help="Training steps (overrides train.steps).")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Run directory [default: runs/<config name>].")
@click.option("--resume", is_flag=True, help="Continue the checkpoint in --out exactly where it stopped.")
@click.option("--dry-run", is_flag=True, help="Print the resolved config as JSON and exit.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(config, overrides, steps, out, resume, dry_run, quiet):
    """Train a model from a YAML CONFIG.

    \b
    Example:
      trilemma train configs/digits-ddpm.yaml --set train.lr=5e-4 --steps 2000 --out runs/digits
    """
    from .config import load_config, to_dict
    from .paths import check_run_dir

    cfg = load_config(config, list(overrides) + ([f"train.steps={steps}"] if steps is not None else []))
    out = Path(out) if out else Path("runs") / Path(config).stem
    if dry_run:
        click.echo(json.dumps(to_dict(cfg), indent=2))
        return
    main_process = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 checks for all
    check_run_dir(out, probe_lock=main_process)
    if resume and main_process:
        _check_resume_config(cfg, out)
    from .training import train as run

    ckpt = run(cfg, out, resume=resume, progress=not quiet)
    if os.environ.get("RANK", "0") == "0":  # once, not per process under accelerate launch / torchrun
        click.echo(f"checkpoint: {ckpt}\nsamples: {out / 'samples'}")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _check_resume_config(cfg, out: Path) -> None:
    """--resume must continue the same run: only train.steps and train.compile (how it runs) may change."""
    from .checkpoint import load_checkpoint, write_leftovers
    from .config import to_dict

    if not (out / "checkpoint").exists() and not write_leftovers(out / "checkpoint"):
        raise TrilemmaError(f"{out}/checkpoint: nothing to resume (no checkpoint)")
    old, new = _flat(to_dict(load_checkpoint(out / "checkpoint").cfg)), _flat(to_dict(cfg))
    diff = [k for k in new if k not in ("train.steps", "train.compile") and old.get(k, new[k]) != new[k]]
    if diff:
        raise TrilemmaError(f"{out}/checkpoint: --resume with a different config ({', '.join(diff)}); only train.steps "
                            "and train.compile may change")


SEED = click.IntRange(0, 2**63 - 1)
SAMPLE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".npz")


def sampler_option_flags(command):
    """One flag per sampler option, from the samplers' declarations (`samplers.all_sampler_options`): --eta,
    --steps-per-level, --step-size, ... Each defaults to None (not given), so a flag the chosen sampler does not
    take is refused by `check_sampler_options` whatever its value."""
    for o in reversed(list(all_sampler_options().values())):
        users = ", ".join(n for n, info in SAMPLER_INFO.items() if o in info.options)
        default = o.default if o.type is bool else f"{o.default:g}"
        help = f"{users}: {o.rule.help}; {o.describe()} [default: {default}]."
        decl = f"{o.flag}/--no-{o.flag[2:]}" if o.type is bool else o.flag
        command = click.option(decl, o.name, type=None if o.type is bool else o.type, default=None,
                               show_default=False, help=help)(command)
    return command


def runtime_flags(command):
    """--precision, --compile and --channels-last: how the networks run (`runtime.Runtime`), never what the samplers
    compute. Each defaults to None (not given): the grid's setting for bench, else runtime's DEFAULT_*."""
    from .runtime import AUTO, DEFAULT_COMPILE, DEFAULT_PRECISION, PRECISIONS

    command = click.option("--channels-last/--no-channels-last", "channels_last", default=None, show_default=False,
                           help="Convolutional networks in channels_last memory layout [default: off, unless "
                                "runtime.channels_last_default measured it faster on this device].")(command)
    command = click.option("--compile/--no-compile", "compile_", default=None, show_default=False,
                           help=f"torch.compile the networks [default: {'on' if DEFAULT_COMPILE else 'off'}].")(command)
    return click.option("--precision", type=click.Choice([AUTO, *PRECISIONS]), default=None, show_default=False,
                        help="Precision the networks run in (autocast; the schedule and samplers stay in float32/64); "
                             "fp16 needs a GPU; auto is bf16 on a CPU with native bfloat16 (AVX512-BF16 or AMX) and "
                             f"fp32 elsewhere, and fp32 for bits/dim [default: {DEFAULT_PRECISION}].")(command)


def _runtime_overrides(precision, compile_, channels_last) -> dict:
    """The runtime flags a command was given, as bench grid keys (a flag not given keeps the grid's setting)."""
    given = {"precision": precision, "compile": compile_, "channels_last": channels_last}
    return {k: v for k, v in given.items() if v is not None}


def _runtime(precision, compile_, channels_last, device, bound=False):
    """The checked `runtime.Runtime` of a command's flags (None: the defaults; `bound`: for a variational bound)."""
    from .runtime import DEFAULT_COMPILE, DEFAULT_PRECISION, resolve_runtime

    return resolve_runtime(precision or DEFAULT_PRECISION, DEFAULT_COMPILE if compile_ is None else compile_,
                           channels_last, device, bound=bound)


@main.command()
@click.argument("ckpt", type=click.Path())
@click.option("--sampler", type=click.Choice(list(SAMPLER_INFO)), default=None,
              help=", ".join(n if i.title == n else f"{n} = {i.title}" for n, i in SAMPLER_INFO.items())
              + " [default: ddim; a distilled student's own, the sample.sampler it was trained for].")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Sampling steps (network evaluations); for "
              "langevin, noise levels [default: 50; a distilled student's own sample.steps].")
@sampler_option_flags
@click.option("--spacing", type=click.Choice(SPACING_CHOICES), default=None,
              help="Time grid [default: the sampler's: leading; " + ", ".join(
                  f"{i.spacing} for {n}" for n, i in SAMPLER_INFO.items() if i.spacing != "leading")
              + "; trailing for a distilled student, the grid it was trained on].")
@click.option("-n", "num", type=click.IntRange(min=1), default=64, help="Number of samples.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Samples per network call [default: all of them]; the samples do not depend on it.")
@click.option("--seed", type=SEED, default=0, help="Seed: sample i's noise (x_T and every step's) depends only on (seed, i).")
@click.option("--noise", type=click.Path(dir_okay=False), default=None, help="Start from x_T in a .npy file of shape (n, *sample_shape).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Plot path (.png, .pdf, .svg, .jpg); raw samples go to the same name with .npz [default: RUN/samples/SAMPLER-STEPS-seedS.png beside the checkpoint, runs/samples/... for a shipped one].")
@click.option("--device", default=None, help="cpu, cuda, cuda:N, mps [default: cuda if available, else cpu].")
@runtime_flags
@click.option("--quiet", is_flag=True, help="No progress bar.")
def sample(ckpt, sampler, steps, spacing, num, batch_size, seed, noise, out, device, precision, compile_, channels_last,
           quiet, **options):
    """Draw samples from a checkpoint: a PNG grid (images) or scatter plot (2-D) and an .npz.

    A latent model samples latents (--noise has their shape) and decodes them; the .npz holds the images, in the
    data's scale (about [-1, 1]; samples are not clipped).

    \b
    Example:
      trilemma sample runs/digits-ddpm --sampler dpmpp --steps 10 -n 64 --seed 1 --out runs/d.png
    """
    import numpy as np

    from .checkpoint import load_checkpoint
    from .device import resolve_device
    from .noise import read_noise_file
    from .paths import check_output_file
    from .plotting import save_samples

    # everything that can be checked is checked before the model runs
    ck = load_checkpoint(ckpt)
    own = ck.cfg.sample if ck.cfg.family == "distill" else None  # a student's sampler and steps, as trained
    sampler, steps = sampler or (own.sampler if own else "ddim"), steps or (own.steps if own else 50)
    opts = check_sampler_options(sampler, options, "", flag=lambda k: "--" + k.replace("_", "-"))
    device = resolve_device(device)
    runtime = _runtime(precision, compile_, channels_last, device)
    if out is None:
        base = ck.path.parent / "samples" if ck.path.name == "checkpoint" else Path("runs") / "samples" / ck.path.name
        out = base / f"{sampler}-{steps}-seed{seed}.png"
    out = check_output_file(out, "--out", SAMPLE_SUFFIXES)
    raw = out.with_suffix(".npz")
    x_T = None if noise is None else read_noise_file(noise, ck.sample_shape)
    num = num if x_T is None else x_T.shape[0]
    from .loading import sampling_spacing

    spacing = spacing or sampling_spacing(ck, sampler)
    x, nfe, seconds = _draw(ck, sampler, steps, spacing, opts, num, batch_size or num, seed, x_T, device, quiet, runtime)
    np.savez(raw, samples=x.numpy(), sampler=sampler, steps=steps, spacing=spacing, seed=seed, nfe=nfe, **opts,
             **runtime.to_dict())
    if out.suffix.lower() != ".npz":
        reference = None
        if len(x.shape) == 2:
            from .data import load_dataset

            reference = load_dataset(ck.cfg.data, "test").x[:2000]
        save_samples(x, out, reference, title=f"{sampler}-{steps} ({nfe} NFE)")
    click.echo(f"{num} samples, {nfe} NFE per sample, {seconds:.2f} s ({runtime.describe()}) -> {out}"
               + (f" and {raw}" if out != raw else ""))


def _draw(ck, sampler, steps, spacing, opts, num, batch_size, seed, x_T, device, quiet, runtime=None):
    """`trilemma sample`'s samples (decoded, on the CPU, all finite), NFE per sample and the sampling seconds
    (model loading excluded), batch by batch with a progress bar: per batch when there are several, else per
    network evaluation of the one batch."""
    import torch
    from tqdm.auto import tqdm

    from .denoiser import CountNFE
    from .loading import sampler_from_checkpoint
    from .samplers import check_sampler_supports, generate
    from .schedules import time_grid

    den, decode = sampler_from_checkpoint(ck, device, runtime)
    den = CountNFE(den)
    check_sampler_supports(den, sampler)
    grid = len(time_grid(den.schedule, steps, spacing)) - 1  # a grid the schedule cannot give is refused here
    if grid != steps:
        click.echo(f"trilemma: note: the {spacing} grid has {grid} distinct times for --steps {steps} on this "
                   f"{den.schedule.num_timesteps}-step schedule: {grid} steps", err=True)
    batches = -(-num // batch_size)
    total, unit = (batches, "batch") if batches > 1 else (SAMPLER_INFO[sampler].nfe(grid, opts), "NFE")
    bar = tqdm(total=total, desc=f"sample {sampler}-{steps}", unit=unit, disable=quiet, dynamic_ncols=True, leave=False)
    xs, t0 = [], time.perf_counter()
    for i in range(0, num, batch_size):
        k = min(batch_size, num - i)
        xs.append(decode(generate(den, k, ck.sample_shape, sampler=sampler, steps=steps, spacing=spacing, seed=seed,
                                  noise=None if x_T is None else x_T[i : i + k], first_index=i, device=device,
                                  callback=None if batches > 1 else (lambda info: bar.update(1)), **opts)).cpu())
        if batches > 1:
            bar.update(1)
    bar.close()
    seconds = time.perf_counter() - t0
    x = torch.cat(xs)
    bad = int((~torch.isfinite(x.flatten(1)).all(1)).sum())
    if bad:
        raise TrilemmaError(f"{bad} of {num} samples are not finite (NaN or infinity); nothing was written")
    return x, den.nfe // batches, seconds


@main.command()
@click.argument("ckpt", type=click.Path())
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["diffusers"]), default="diffusers", help="Export format.")
def export(ckpt, out, fmt):
    """Export CKPT (a checkpoint or run directory) to OUT: a ddpm model as a DDIMPipeline, an autoencoder as
    an AutoencoderKL (scaling_factor = its latent scale; it takes images padded by autoencoder.pad).

    \b
    Example:
      trilemma export runs/digits-ddpm --format diffusers exported/digits
      python -c "from diffusers import DDIMPipeline; DDIMPipeline.from_pretrained('exported/digits')"
    """
    from .checkpoint import load_checkpoint
    from .export import export_diffusers
    from .paths import checkpoint_above

    inside = checkpoint_above(Path(out))
    if inside is not None:
        raise TrilemmaError(f"{out}: {inside} is a checkpoint directory; export elsewhere")
    ck = load_checkpoint(ckpt)
    path = export_diffusers(ck, out)
    kind = "AutoencoderKL" if ck.cfg.family == "autoencoder" else "DDIMPipeline"
    click.echo(f"diffusers {kind} written to {path}")


@main.command("eval")
@click.argument("ckpt", type=click.Path())
@click.option("--bpd", is_flag=True, help="Bits/dim of the model's variational bound on a data split (vdm; ddpm through its VLB).")
@click.option("--recon", is_flag=True, help="An autoencoder's reconstructions of a data split: PSNR and their Frechet distance to it.")
@click.option("--split", type=click.Choice(["train", "test"]), default="test", help="Data split to evaluate.")
@click.option("--draws", type=int, default=BPD_DRAWS, help="Monte-Carlo draws of (t, noise) per image (>= 2 also gives the Monte-Carlo variance).")
@click.option("-n", "num", type=int, default=None, help="Only the first N images of the split [default: all].")
@click.option("--batch-size", type=int, default=BPD_BATCH, help="Images per network call (the draws do not depend on it).")
@click.option("--seed", type=SEED, default=0, help="Seed of the Monte-Carlo draws.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Also write the results to this JSON file.")
@click.option("--device", default=None, help="cpu, cuda, mps [default: cuda if available, else cpu].")
@runtime_flags
@click.option("--quiet", is_flag=True, help="No progress bar.")
def eval_(ckpt, bpd, recon, split, draws, num, batch_size, seed, json_out, device, precision, compile_, channels_last,
          quiet):
    """Evaluate a checkpoint: with --bpd, the variational bound in bits/dim, term by term, with a 95% interval;
    with --recon, an autoencoder's reconstruction PSNR and FD.

    \b
    Example:
      trilemma eval runs/fmnist-vdm --bpd --split test --draws 2
      trilemma eval runs/fmnist-ae --recon --split test
    """
    from .checkpoint import load_checkpoint
    from .data import describe, load_dataset
    from .device import resolve_device
    from .loading import bound_from_checkpoint
    from .metrics.likelihood import bpd_table, evaluate_bound
    from .paths import atomic_write_text, check_output_file

    if bpd == recon:
        raise TrilemmaError("eval: choose one thing to evaluate (--bpd or --recon)")
    if draws < 1 or batch_size < 1 or (num is not None and num < 1):
        raise TrilemmaError(f"--draws, --batch-size and -n must be >= 1, got {draws}, {batch_size}, {num}")
    device = resolve_device(device)
    runtime = _runtime(precision, compile_, channels_last, device, bound=bpd)  # `auto` bits/dim: fp32
    if json_out:
        check_output_file(json_out, "--json", (".json",))
    ck = load_checkpoint(ckpt)
    if recon:
        res = _eval_recon(ck, split, num, batch_size, device, quiet, runtime)
        if json_out:
            atomic_write_text(json_out, json.dumps(res, indent=2))
        return
    terms_fn, to_bpd, name = bound_from_checkpoint(ck, device, runtime)
    data = load_dataset(ck.cfg.data, split)
    x = data.x[:num] if num else data.x
    t0 = time.perf_counter()
    res = evaluate_bound(terms_fn, x, to_bpd=to_bpd, batch_size=batch_size, draws=draws, seed=seed, device=device,
                         progress=not quiet)
    res.update(checkpoint=str(ck.path), step=ck.meta.get("step"), bound=name, split=split,
               data=describe(data), seconds=time.perf_counter() - t0, runtime=runtime.to_dict())
    click.echo(f"{name}; {data.name} {split} split, {res['images']} images x {draws} draws ({res['seconds']:.1f} s, "
               f"{runtime.describe()})")
    click.echo(bpd_table(res))
    if json_out:
        atomic_write_text(json_out, json.dumps(res, indent=2))


def _eval_recon(ck, split, num, batch_size, device, quiet, runtime) -> dict:
    """`trilemma eval --recon`: print and return an autoencoder's reconstruction metrics on a split."""
    from .data import describe, load_dataset
    from .loading import autoencoder_from_checkpoint
    from .families.autoencoder import evaluate_reconstruction

    ae = autoencoder_from_checkpoint(ck, device, "--recon: ")
    data = load_dataset(ck.cfg.data, split)
    x = data.x[:num] if num else data.x
    t0 = time.perf_counter()
    res = evaluate_reconstruction(ae, x, data.name, batch_size, device, progress=not quiet, runtime=runtime)
    res.update(checkpoint=str(ck.path), step=ck.meta.get("step"), split=split, data=describe(data),
               seconds=time.perf_counter() - t0, runtime=runtime.to_dict())
    c, h, w = res["latent_shape"]
    click.echo(f"autoencoder {ck.path} (step {res['step']}): {data.name} {split} split, {res['images']} images "
               f"({res['seconds']:.1f} s); latents {c}x{h}x{w}, latent scale {res['latent_scale']:.4f}")
    lines = ["| metric | value |", "|---|---|", f"| PSNR (dB) | {res['psnr']:.2f} ± {res['psnr_ci95']:.2f} |",
             f"| MSE | {res['mse']:.5f} |"]
    if "fd" in res:
        lines.append(f"| {res['fd_metric']} of reconstructions | {res['fd']:.4f} |")
    click.echo("\n".join(lines))
    return res


@main.command()
@click.argument("grid", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Output directory [default: runs/bench-<grid name>].")
@click.option("-n", "--num-samples", type=int, default=None, help="Samples per row and seed (overrides the grid's num_samples).")
@click.option("--seeds", type=str, default=None, help="Comma-separated seeds (overrides the grid's seeds).")
@click.option("--device", default=None, help="cpu, cuda, mps [default: the grid's, else cuda if available].")
@runtime_flags
@click.option("--quiet", is_flag=True, help="No progress bar.")
def bench(grid, out, num_samples, seeds, device, precision, compile_, channels_last, quiet):
    """Place every (checkpoint, sampler, steps) of a GRID file on speed, quality and diversity.

    Writes results.json, results.csv, results.md, pareto.png, samples/ and report.html to --out.

    \b
    Example:
      trilemma bench benchmarks/grids/digits.yaml --out runs/bench-digits -n 1000
    """
    from .bench import load_grid, run_bench

    overrides = {}
    if num_samples is not None:
        overrides["num_samples"] = num_samples
    if seeds is not None:
        try:
            overrides["seeds"] = [int(s) for s in seeds.split(",")]
        except ValueError:
            raise TrilemmaError(f"--seeds: expected comma-separated integers, got {seeds!r}") from None
    if device is not None:
        overrides["device"] = device
    overrides |= _runtime_overrides(precision, compile_, channels_last)
    cfg = load_grid(grid, overrides)
    out = Path(out) if out else Path("runs") / f"bench-{Path(grid).stem}"
    summary = run_bench(cfg, out, progress=not quiet, command=_command_line())
    _print_summary(summary, out)


def _command_line() -> str:
    return " ".join(["trilemma"] + [a if " " not in a else repr(a) for a in sys.argv[1:]])


def _print_summary(summary: dict, out: Path) -> None:
    from .bench import markdown_table

    click.echo(markdown_table(summary))
    click.echo(f"report: {out / 'report.html'}")


@main.command()
@click.option("--out", type=click.Path(file_okay=False), default="runs/demo", help="Output directory.")
@click.option("--retrain", is_flag=True, help="Train the toy models anew (DDPM, DDGAN at T = 4 and T = 1, the DDPM's progressive student; about 80 minutes on 2 CPU cores) "
              "instead of using the shipped ones.")
@click.option("-n", "--num-samples", type=int, default=2500, help="Samples per row.")
@click.option("--device", default=None, help="cpu, cuda, cuda:N, mps [default: cuda if available, else cpu].")
@runtime_flags
@click.option("--quiet", is_flag=True, help="No progress bars.")
def demo(out, retrain, num_samples, device, precision, compile_, channels_last, quiet):
    """The trilemma on the 25-Gaussian grid: toy DDPM, DDGAN and distilled models on several samplers and step counts,
    one table.

    Starts from the small toy checkpoints shipped with the package (or trains them with --retrain),
    then runs the benchmark and writes its report to OUT/report.html.

    \b
    Example:
      trilemma demo --out runs/demo
    """
    from .bench import config_from_dict, run_bench
    from .demo import SHIPPED, demo_grid, shipped_checkpoint
    from .device import resolve_device
    from .paths import SHIPPED_PREFIX, check_bench_dir, check_run_dir, prepare_bench_dir

    out = Path(out)
    shipped = {name: shipped_checkpoint(name) for name in SHIPPED}
    ckpts = {name: out / name / "checkpoint" for name in SHIPPED} if retrain else shipped
    cfg = config_from_dict(demo_grid(ckpts, num_samples, device) | _runtime_overrides(precision, compile_, channels_last),
                           "demo")  # checked before anything runs
    resolve_device(device)
    check_bench_dir(out)
    if retrain:
        from .checkpoint import load_checkpoint
        from .training import train as run

        for name in SHIPPED:
            check_run_dir(out / name)
        prepare_bench_dir(out)  # every input checked: mark it, so the bench accepts the runs trained into it
        for name, c in shipped.items():
            train_cfg = load_checkpoint(c).cfg  # not `cfg`: that is the bench grid run below
            teacher = train_cfg.distill.teacher if train_cfg.family == "distill" else ""
            if teacher.startswith(SHIPPED_PREFIX) and teacher[len(SHIPPED_PREFIX):] in SHIPPED:  # retrained above
                train_cfg = dataclasses.replace(train_cfg, distill=dataclasses.replace(
                    train_cfg.distill, teacher=str(out / teacher[len(SHIPPED_PREFIX):] / "checkpoint")))
            run(train_cfg, out / name, progress=not quiet)
    summary = run_bench(cfg, out, progress=not quiet, command=_command_line())
    _print_summary(summary, out)


if __name__ == "__main__":  # pragma: no cover
    main()
