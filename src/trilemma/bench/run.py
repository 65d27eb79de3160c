"""The timed runner: every row of a grid sampled from the same per-sample noise, timed in this process (warm-up
excluded), scored, and returned as typed `RowResult`s in a summary that `report.write_outputs` writes out."""

from __future__ import annotations

import datetime
import math
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import TrilemmaError
from ..metrics.likelihood import BPD_BATCH
from .grid import BenchConfig, BenchRow, check_unique, expand_rows
from .scoring import Scorer, average, make_scorer

__all__ = ["RowResult", "environment", "generate_timed", "run_bench"]


@dataclass
class RowResult:
    """One line of the results: a (model, sampler, steps, options) row, or the data's own score (`floor`)."""

    key: str
    label: str
    sampler: str  # "-" for the data row
    steps: int
    spacing: str | None
    nfe: int
    seconds: float | None  # for all num_samples of one seed
    seconds_per_batch: float | None
    samples_per_second: float | None
    image: str  # the sample grid or scatter plot, relative to the output directory
    floor: bool = False
    checkpoint: str | None = None
    sampler_options: dict = field(default_factory=dict)
    runtime: dict = field(default_factory=dict)  # how the networks ran: {precision, compile, channels_last}
    metrics: dict = field(default_factory=dict)  # metric -> value (and <metric>_std over seeds, bpd_ci95)

    def to_dict(self) -> dict:
        """The flat row of results.json: fields, the sampler's options (eta always, as a table column), metrics."""
        head = {"key": self.key, "label": self.label}
        if self.checkpoint is not None:
            head["checkpoint"] = self.checkpoint
        opts = {"eta": self.sampler_options.get("eta"), **self.sampler_options}
        return {**head, "sampler": self.sampler, "steps": self.steps, **opts, "spacing": self.spacing,
                "nfe": self.nfe, "seconds": self.seconds, "seconds_per_batch": self.seconds_per_batch,
                "samples_per_second": self.samples_per_second, "runtime": self.runtime, "image": self.image,
                "floor": self.floor, **self.metrics}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, cwd=Path(__file__).parent,
                          timeout=10).stdout.strip()


def environment(device: torch.device, runtime=None, bound_runtime=None) -> dict:
    """Commit, device, thread count, library versions and the grid's runtime (precision, compile, layout; and that
    of bits/dim, `bound_runtime`, where there are any): what a reader needs to trust or reproduce a table."""
    import trilemma

    try:
        commit = _git("rev-parse", "--short", "HEAD") or None
        if commit and _git("status", "--porcelain", "--untracked-files=no"):
            commit += "+dirty"
    except (OSError, subprocess.SubprocessError):
        commit = None
    if device.type == "cuda":
        dev = torch.cuda.get_device_name(device)
    else:
        dev = f"{device.type}: {_cpu_name()}, {torch.get_num_threads()} threads"
    return {
        "commit": commit,
        "trilemma": trilemma.__version__,
        "torch": torch.__version__,
        "device": dev,
        "threads": torch.get_num_threads(),
        **({} if runtime is None else {"runtime": runtime.to_dict()}),
        **({} if bound_runtime is None else {"bpd_runtime": bound_runtime.to_dict()}),
        "python": platform.python_version(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def generate_timed(den, decode, sample_shape, row: BenchRow, noise: torch.Tensor, seed: int, batch_size: int,
                   device, progress=None):
    """Sample in batches from fixed noise and decode into data space (a latent model's decoder is part of
    its cost); returns (samples on CPU, NFE per batch, per-batch seconds). Sample i's noise depends only on
    (seed, i) (`noise.SampleNoise`), so the samples do not depend on `batch_size`. `progress(b, batches, i)`
    is told each network evaluation's place: batch b of `batches`, evaluation i within it."""
    from ..samplers import generate

    outs, secs, nfe = [], [], None
    batches = math.ceil(len(noise) / batch_size)
    for b, i in enumerate(range(0, len(noise), batch_size)):
        den.nfe = 0
        callback = None if progress is None else (lambda info, b=b: progress(b, batches, info["i"] + 1))
        _sync(device)
        t0 = time.perf_counter()
        x = generate(den, 0, sample_shape, sampler=row.sampler, steps=row.steps, spacing=row.spacing, seed=seed,
                     noise=noise[i : i + batch_size], first_index=i, device=device, callback=callback,
                     **row.sampler_options)
        x = decode(x)
        _sync(device)
        secs.append(time.perf_counter() - t0)
        outs.append(x.cpu())
        nfe = den.nfe
    return torch.cat(outs), nfe, secs


def _bits_per_dim(cfg: BenchConfig, ckpts: dict, reference: torch.Tensor, device, progress: bool, runtime) -> dict:
    """{checkpoint: {"bpd", "bpd_ci95"}} for every checkpoint whose family has a variational bound, on the
    reference split (the same images and draws for each), its network under `runtime` (the grid's, resolved for a
    bound: `auto` is fp32); checkpoints
    without one (ddgan) are left out."""
    from ..loading import bound_from_checkpoint, no_bound_reason
    from ..metrics.likelihood import evaluate_bound

    x = reference[: cfg.bpd_images] if cfg.bpd_images else reference
    out = {}
    for path, ck in ckpts.items():
        if no_bound_reason(ck):
            continue  # ddgan has no bound; a latent model's bound is not one on the images
        terms_fn, to_bpd, _ = bound_from_checkpoint(ck, device, runtime)
        res = evaluate_bound(terms_fn, x, to_bpd=to_bpd, batch_size=BPD_BATCH, draws=cfg.bpd_draws, seed=0,
                             device=device, progress=progress)
        out[path] = {"bpd": res["terms"]["total"]["mean"], "bpd_ci95": res["terms"]["total"]["ci95"]}
    return out


def _default_label(path: str, ck) -> str:
    """"DDPM toy2d-ddpm" for runs/toy2d-ddpm or runs/toy2d-ddpm/checkpoint."""
    p = Path(path).resolve()
    name = p.parent.name if p.name == "checkpoint" else p.name
    return f"{ck.cfg.family.upper()} {name}"


def _load_rows(cfg: BenchConfig) -> tuple[list[BenchRow], dict]:
    """The grid's rows with their labels, and {checkpoint: loaded checkpoint}, every one checked: one dataset
    per table, and a sampler each model can serve."""
    from ..checkpoint import load_checkpoint
    from ..data import same_points
    from ..families import FAMILIES
    from ..samplers import check_sampler_for_model

    rows = expand_rows(cfg)
    ckpts = {}
    for r in rows:
        if r.checkpoint not in ckpts:
            ckpts[r.checkpoint] = load_checkpoint(r.checkpoint)
    first = ckpts[rows[0].checkpoint]
    for r in rows:
        ck = ckpts[r.checkpoint]
        if not same_points(ck.cfg.data, first.cfg.data):
            raise TrilemmaError(f"{r.checkpoint}: trained on {ck.cfg.data.name} data that differs from "
                                f"{rows[0].checkpoint}'s; a table compares one dataset")
        r.label = r.label or _default_label(r.checkpoint, ck)
        check_sampler_for_model(r.sampler, FAMILIES[ck.cfg.family].config_draws_x0(ck.cfg), f"{r.checkpoint}: ")
    check_unique(rows, cfg.source)
    return rows, ckpts


def _data_row(cfg: BenchConfig, scorer: Scorer, out_dir: Path) -> RowResult:
    """The data's own score (train split against the reference) as the table's first row."""
    from ..plotting import save_samples

    img = save_samples(scorer.shown(scorer.train.x), out_dir / "samples" / "data.png", scorer.plot_reference,
                       title="data (train split)")
    return RowResult("data", f"data (train vs {cfg.reference_split})", "-", 0, None, 0, None, None, None,
                     str(img.relative_to(out_dir)), floor=True, metrics=scorer.floor(cfg.seeds))


def row_runtime(cfg: BenchConfig, row: BenchRow, device, bound: bool = False):
    """How a row's networks run: its own precision, compile and layout where it sets them, else the grid's
    (`bound`: for bits/dim, where `auto` is fp32)."""
    from ..runtime import resolve_runtime

    return resolve_runtime(row.precision or cfg.precision, cfg.compile if row.compile is None else row.compile,
                           cfg.channels_last if row.channels_last is None else row.channels_last, device,
                           f"{cfg.source}: precision", bound=bound)


class _Runner:
    """Runs rows one by one: each checkpoint's denoiser built once, each seed's x_T drawn once per sample shape."""

    def __init__(self, cfg: BenchConfig, ckpts: dict, scorer: Scorer, device, out_dir: Path, bar):
        self.cfg, self.ckpts, self.scorer, self.device = cfg, ckpts, scorer, device
        self.out_dir, self.bar = out_dir, bar
        self.dens: dict[tuple, tuple] = {}  # (checkpoint, runtime) -> (counted denoiser, decode)
        self.x_T: dict[tuple, torch.Tensor] = {}  # (seed, sample shape) -> the x_T every row of that shape starts from
        self.data_cfg = ckpts[next(iter(ckpts))].cfg.data

    def _denoiser(self, checkpoint: str, runtime):
        from ..denoiser import CountNFE
        from ..loading import sampler_from_checkpoint

        if (checkpoint, runtime) not in self.dens:
            den, decode = sampler_from_checkpoint(self.ckpts[checkpoint], self.device, runtime)
            self.dens[checkpoint, runtime] = CountNFE(den), decode
        return self.dens[checkpoint, runtime]

    def _noise(self, seed: int, shape: tuple) -> torch.Tensor:
        from ..noise import initial_noise

        if (seed, shape) not in self.x_T:
            self.x_T[seed, shape] = initial_noise(self.cfg.num_samples, shape, seed)
        return self.x_T[seed, shape]

    def samples(self, row: BenchRow, seed: int, tick):
        """Row `row`'s samples for one seed in the first checkpoint's data coordinates, NFE, per-batch seconds."""
        from ..data import convert_points

        cfg, ck = self.cfg, self.ckpts[row.checkpoint]
        den, decode = self._denoiser(row.checkpoint, row_runtime(cfg, row, self.device))
        noise = self._noise(seed, ck.sample_shape)
        # warm-up (not timed): one full-size batch through one network evaluation, so lazy
        # initialisation, kernel selection and compilation for this batch shape happen before the clock runs
        warm = BenchRow(row.checkpoint, "ddim", 1, "leading", sampler_options={"eta": 0.0})
        generate_timed(den, decode, ck.sample_shape, warm, noise[: cfg.batch_size], seed, cfg.batch_size, self.device)
        x, nfe, secs = generate_timed(den, decode, ck.sample_shape, row, noise, seed, cfg.batch_size, self.device,
                                      progress=tick)
        return convert_points(x, ck.cfg.data, self.data_cfg), nfe, secs  # a toy trained in its own coordinates

    def row(self, row: BenchRow, bpd: dict, progress: bool) -> RowResult:
        from ..plotting import pareto_row_name, save_samples
        from .report import SAMPLER_NAMES

        def tick(b, batches, i):  # where the row is: its batch and network evaluation
            if i == 1 or i % 10 == 0:
                self.bar.set_postfix_str(f"{row.label} {row.sampler}-{row.steps}: batch {b + 1}/{batches}, NFE {i}")

        per_seed, secs, nfe, shown = [], [], None, None
        for seed in self.cfg.seeds:
            x, nfe, s = self.samples(row, seed, tick if progress else None)
            secs += s
            per_seed.append(self.scorer.score(x, seed))
            shown = x if shown is None else shown
        res = RowResult(row.key, row.label, row.sampler, row.steps, row.spacing, nfe, None, None, None, "",
                        checkpoint=row.checkpoint, sampler_options=dict(row.sampler_options),
                        runtime=row_runtime(self.cfg, row, self.device).to_dict(),
                        metrics={**average(per_seed), **bpd.get(row.checkpoint, {})})
        img = save_samples(self.scorer.shown(shown), self.out_dir / "samples" / f"{row.key}.png",
                           self.scorer.plot_reference,
                           title=f"{pareto_row_name(res.to_dict(), SAMPLER_NAMES)} ({nfe} NFE)")
        total = float(np.sum(secs))
        res.image = str(img.relative_to(self.out_dir))
        res.seconds, res.seconds_per_batch = total / len(self.cfg.seeds), float(np.mean(secs))
        res.samples_per_second = self.cfg.num_samples * len(self.cfg.seeds) / total if total > 0 else None
        return res


def run_bench(cfg: BenchConfig, out_dir: str | Path, progress: bool = True, command: str | None = None) -> dict:
    """Run every row of the grid, score it, and write all outputs to `out_dir`; returns the summary."""
    from tqdm import tqdm

    from ..device import resolve_device
    from ..paths import check_bench_dir, prepare_bench_dir
    from .report import metric_columns, write_outputs

    device = resolve_device(cfg.device, f"{cfg.source}: device")
    out_dir = check_bench_dir(out_dir)  # before any compute: a bad --out fails now, not after the sampling
    rows, ckpts = _load_rows(cfg)
    runtime = row_runtime(cfg, BenchRow("", "ddim", 1, "leading"), device)  # the grid's (a bad precision fails here)
    for r in rows:
        row_runtime(cfg, r, device)
    bound_runtime = row_runtime(cfg, BenchRow("", "ddim", 1, "leading"), device, bound=True)  # bits/dim: auto is fp32
    prepare_bench_dir(out_dir)  # every input is checked: create it
    scorer = make_scorer(ckpts[rows[0].checkpoint].cfg.data, cfg, device)
    env = environment(device, runtime, bound_runtime if cfg.bpd else None)
    (out_dir / "samples").mkdir(exist_ok=True)
    results = [_data_row(cfg, scorer, out_dir)]
    bpd = _bits_per_dim(cfg, ckpts, scorer.reference.x, device, progress, bound_runtime) if cfg.bpd else {}
    bar = tqdm(rows, desc="bench", disable=not progress, dynamic_ncols=True)
    runner = _Runner(cfg, ckpts, scorer, device, out_dir, bar)
    for row in bar:
        bar.set_postfix_str(f"{row.label} {row.sampler}-{row.steps}")
        results.append(runner.row(row, bpd, progress))
    bar.close()
    rows_out = [r.to_dict() for r in results]
    summary = {
        "name": cfg.name, "environment": env, "command": command,
        "dataset": scorer.reference.name, "reference": f"{cfg.reference_split} split ({len(scorer.reference)})",
        "num_samples": cfg.num_samples, "seeds": list(cfg.seeds), "batch_size": cfg.batch_size,
        "quality_metric": scorer.quality, "diversity_metric": scorer.diversity,
        "lower_is_better": scorer.lower_is_better, "metrics": metric_columns(rows_out), "rows": rows_out,
    }
    write_outputs(summary, out_dir)
    return summary
