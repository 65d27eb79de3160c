"""`trilemma bench`: place every (model, sampler, steps) on speed, quality and diversity in one run.

A grid file (YAML) names the rows; each row is sampled with the same initial noise per seed, timed in
this process (warm-up excluded) and scored against the dataset's test split on the same metrics:

    points (toy2d)  quality: high-quality % (3-std rule), sliced Wasserstein; diversity: modes covered
    images          quality: FD on the dataset's feature classifier, precision (k=3), KID;
                    diversity: recall (k=3), density / coverage (k=5), class entropy and KL to uniform

The real data's own score (train split against test split, at the same sample count) is the first row of every
table: what a perfect model would score, up to the metrics' sampling noise. Outputs:
results.json, results.csv, results.md, pareto.png, samples/<row>.png and report.html (one page,
offline).
"""

from __future__ import annotations

import csv
import datetime
import html
import io
import itertools
import json
import math
import platform
import re
import subprocess
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .errors import TrilemmaError
from .metrics.likelihood import BPD_BATCH, BPD_DRAWS
from .paths import atomic_write_text
from .samplers import LANGEVIN_STEP_SIZE

__all__ = ["BenchConfig", "BenchRow", "load_grid", "expand_rows", "run_bench", "write_outputs", "environment",
           "markdown_table"]

SAMPLER_NAMES = {"ddpm": "DDPM ancestral", "ancestral": "ancestral", "ddim": "DDIM", "dpmpp": "DPM-Solver++(2M)",
                 "langevin": "Langevin"}


@dataclass
class BenchConfig:
    name: str = "bench"  # title of the report
    rows: list = field(default_factory=list)  # grid entries (see `expand_rows`)
    num_samples: int = 2500  # samples per row and seed
    seeds: list = field(default_factory=lambda: [0])  # one full sample set per seed; metrics are averaged
    batch_size: int = 2500  # samples per sampler call (the unit of "seconds per batch")
    reference_split: str = "test"  # what samples are scored against
    features: str = "auto"  # auto (the dataset's classifier) | inception
    inception_weights: str | None = None  # local Inception weights file for features: inception
    grid_images: int = 64  # images shown per sample grid
    device: str | None = None  # cpu | cuda | mps [default: cuda if available]
    bpd: bool = True  # bits/dim of every checkpoint with a variational bound (vdm; ddpm through its VLB)
    bpd_images: int = 0  # images of the reference split the bound is averaged over (0: all of them)
    bpd_draws: int = BPD_DRAWS  # Monte-Carlo draws of (t, noise) per image for bits/dim (trilemma eval --bpd's default)


@dataclass
class BenchRow:
    checkpoint: str  # run or checkpoint directory
    sampler: str  # ddpm | ddim | dpmpp
    steps: int
    eta: float = 0.0  # DDIM only
    spacing: str | None = None  # time grid [default: leading; linspace for dpmpp]
    label: str | None = None  # model name in tables [default: family and checkpoint directory]
    steps_per_level: int = 1  # langevin only: updates per noise level (steps = noise levels)
    step_size: float = LANGEVIN_STEP_SIZE  # langevin only: eta = step_size * sigma_t^2

    @property
    def key(self) -> str:
        """A file-name-safe id, unique within a grid."""
        eta = f"-eta{self.eta:g}" if self.sampler == "ddim" else ""
        if self.sampler == "langevin":
            eta = f"-x{self.steps_per_level}-h{self.step_size:g}"
        raw = f"{self.label or self.checkpoint}-{self.sampler}{self.steps}{eta}-{self.spacing}"
        return re.sub(r"[^A-Za-z0-9._-]+", "_", raw)


ROW_KEYS = {f.name for f in fields(BenchRow)}
LIST_KEYS = ("sampler", "steps", "eta", "spacing")  # a list here expands into one row per value


def _fail(where: str, msg: str):
    raise TrilemmaError(f"{where}: {msg}")


def load_grid(path: str | Path, overrides: dict | None = None) -> BenchConfig:
    """Parse and validate a grid YAML file; unknown keys are errors that name the file and key."""
    import yaml

    p = Path(path)
    if not p.is_file():
        _fail(str(p), "grid file not found")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        _fail(str(p), f"not valid YAML ({str(e).splitlines()[0]})")
    if not isinstance(raw, dict):
        _fail(str(p), "a grid file is a mapping with a `rows` list")
    return config_from_dict(raw | (overrides or {}), str(p), base=p.parent)


def config_from_dict(raw: dict, where: str, base: Path | None = None) -> BenchConfig:
    known = {f.name for f in fields(BenchConfig)}
    for k in raw:
        if k not in known:
            _fail(where, f"unknown key {k!r}; known keys: {', '.join(sorted(known))}")
    cfg = BenchConfig(**raw)
    for k in ("name", "reference_split", "features"):
        if not isinstance(getattr(cfg, k), str):
            _fail(where, f"{k} must be a string, got {getattr(cfg, k)!r}")
    for k in ("inception_weights", "device"):
        if getattr(cfg, k) is not None and not isinstance(getattr(cfg, k), str):
            _fail(where, f"{k} must be a string, got {getattr(cfg, k)!r}")
    for k in ("num_samples", "batch_size", "grid_images", "bpd_images", "bpd_draws"):
        if not isinstance(getattr(cfg, k), int) or isinstance(getattr(cfg, k), bool):
            _fail(where, f"{k} must be an integer, got {getattr(cfg, k)!r}")
    if isinstance(cfg.seeds, int) and not isinstance(cfg.seeds, bool):
        cfg.seeds = [cfg.seeds]
    if not isinstance(cfg.seeds, list) or not cfg.seeds or not all(
            isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**63 for x in cfg.seeds):
        _fail(where, f"seeds must be an integer or a non-empty list of integers in [0, 2^63), got {cfg.seeds!r}")
    if not isinstance(cfg.rows, list) or not cfg.rows:
        _fail(where, "`rows` must be a non-empty list of {checkpoint, sampler, steps, ...}")
    if not isinstance(cfg.bpd, bool):
        _fail(where, f"bpd must be true or false, got {cfg.bpd!r}")
    if cfg.bpd_images < 0 or cfg.bpd_draws < 1:
        _fail(where, f"bpd_images must be >= 0 and bpd_draws >= 1 (got {cfg.bpd_images}, {cfg.bpd_draws})")
    if cfg.num_samples < 2 or cfg.batch_size < 1:
        _fail(where, f"num_samples must be >= 2 and batch_size >= 1 (got {cfg.num_samples}, {cfg.batch_size})")
    if cfg.features not in ("auto", "inception"):
        _fail(where, f"features: {cfg.features!r} is not auto or inception")
    if cfg.reference_split not in ("train", "test"):
        _fail(where, f"reference_split: {cfg.reference_split!r} is not train or test")
    # checkpoints are relative to the grid file, as a reader of the file would expect
    for i, r in enumerate(cfg.rows):
        if not isinstance(r, dict):
            _fail(where, f"rows[{i}] is not a mapping")
        if base is not None and "checkpoint" in r and not Path(str(r["checkpoint"])).is_absolute():
            cand = base / str(r["checkpoint"])
            r["checkpoint"] = str(cand) if cand.exists() else str(r["checkpoint"])
    cfg._where = where
    return cfg


def expand_rows(cfg: BenchConfig) -> list[BenchRow]:
    """One BenchRow per combination of list-valued sampler / steps / eta / spacing in each entry."""
    from .samplers import SAMPLER_OPTIONS, SAMPLERS, check_sampler_options, default_spacing
    from .schedules import SPACINGS

    where = getattr(cfg, "_where", "grid")
    out: list[BenchRow] = []
    for i, entry in enumerate(cfg.rows):
        for k in entry:
            if k not in ROW_KEYS:
                _fail(where, f"rows[{i}]: unknown key {k!r}; known keys: {', '.join(sorted(ROW_KEYS))}")
        for k in ("checkpoint", "sampler", "steps"):
            if k not in entry:
                _fail(where, f"rows[{i}]: missing key {k!r}")
        values = {k: entry[k] if isinstance(entry.get(k), list) else [entry.get(k)] for k in LIST_KEYS}
        for k, v in values.items():
            if not v:
                _fail(where, f"rows[{i}]: {k} is an empty list")
        for k in ("label", "checkpoint"):
            if k in entry and not isinstance(entry[k], (str, int, float)) or isinstance(entry.get(k), bool):
                _fail(where, f"rows[{i}]: {k} must be a string, got {entry[k]!r}")
        # an option applies to the entry's rows of the samplers that take it, and must apply to at least one
        own = {k for sampler in values["sampler"] for k in SAMPLER_OPTIONS.get(sampler, ())}
        for k in ("eta", "steps_per_level", "step_size"):
            if k in entry and k not in own:
                _fail(where, f"rows[{i}]: {k} is not an option of sampler {', '.join(map(str, values['sampler']))}")
        for sampler, steps, eta, spacing in itertools.product(*(values[k] for k in LIST_KEYS)):
            if sampler not in SAMPLERS:
                _fail(where, f"rows[{i}]: sampler {sampler!r} is not one of {', '.join(SAMPLERS)}")
            if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
                _fail(where, f"rows[{i}]: steps must be a positive integer, got {steps!r}")
            if spacing is not None and spacing not in SPACINGS:
                _fail(where, f"rows[{i}]: spacing {spacing!r} is not one of {', '.join(SPACINGS)}")
            if "eta" not in SAMPLER_OPTIONS.get(sampler, ()) and eta != values["eta"][0]:
                continue  # an eta list multiplies only the entry's DDIM rows
            spacing = spacing or default_spacing(sampler)
            given = {"eta": eta, "steps_per_level": entry.get("steps_per_level"), "step_size": entry.get("step_size")}
            opts = check_sampler_options(sampler, {k: v for k, v in given.items() if k in SAMPLER_OPTIONS.get(sampler, ())},
                                         f"{where}: rows[{i}]: ")
            row = BenchRow(str(entry["checkpoint"]), sampler, steps, opts.get("eta", 0.0), spacing,
                           None if entry.get("label") is None else str(entry["label"]),
                           opts.get("steps_per_level", 1), opts.get("step_size", LANGEVIN_STEP_SIZE))
            out.append(row)
    _check_unique(out, where)
    return out


def _check_unique(rows: list[BenchRow], where: str) -> None:
    keys = [r.key for r in rows]
    dup = {k for k in keys if keys.count(k) > 1}
    if dup:
        _fail(where, f"rows repeat the same model x sampler x steps: {', '.join(sorted(dup))} (give each model a label)")


def _default_label(path: str, ck) -> str:
    """"DDPM toy2d-ddpm" for runs/toy2d-ddpm or runs/toy2d-ddpm/checkpoint."""
    p = Path(path).resolve()
    name = p.parent.name if p.name == "checkpoint" else p.name
    return f"{ck.cfg.family.upper()} {name}"


# --- environment ------------------------------------------------------------------------------------


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict:
    """Commit, device, library versions: what a reader needs to trust or reproduce a table."""
    import trilemma

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=10).stdout.strip() or None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=Path(__file__).parent, timeout=10).stdout.strip()
        if commit and dirty:
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
        "python": platform.python_version(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


# --- scoring ------------------------------------------------------------------------------------------


class Scorer:
    """Everything fixed across rows: the reference set, its features and the metric definitions."""

    def __init__(self, data_cfg, cfg: BenchConfig, device: torch.device):
        from .data import load_dataset, toy_modes

        self.cfg, self.device = cfg, device
        self.reference = load_dataset(data_cfg, cfg.reference_split)
        self.train = load_dataset(data_cfg, "train" if cfg.reference_split == "test" else "test")
        self.kind = self.reference.kind
        self.modes = None
        if self.kind == "points":
            try:
                self.modes = toy_modes(data_cfg.toy, data_cfg.unit_variance)  # grid25, ring8
            except TrilemmaError:
                self.modes = None  # swissroll, moons, checkerboard: no discrete modes
            self.ref_x = self.reference.x[: cfg.num_samples]
            self.quality, self.diversity = ("high_quality_%", "modes") if self.modes else ("SW", None)
            self.lower_is_better = self.modes is None
            return
        from .features import extract_features, feature_net_for

        self.extractor = feature_net_for(self.reference.name, cfg.features == "inception", cfg.inception_weights)
        self.fd_name = self.extractor.metric
        from .metrics import knn_radii

        self.ref_f, ref_logits = extract_features(self.extractor, self.reference.x, device=device)
        # the reference's k-NN radii are the same for every row: computed once, not twice per row
        self.ref_radii = {k: knn_radii(torch.from_numpy(self.ref_f), k) for k in (3, 5)}
        self.num_classes = ref_logits.shape[1]
        self.quality, self.diversity, self.lower_is_better = self.fd_name, "recall", True

    def score(self, x: torch.Tensor, seed: int) -> dict:
        """All metrics of one sample set x (N, ...) against the reference."""
        from . import metrics as M

        x = x.detach().cpu().float()
        if not torch.isfinite(x).all():
            return {"nonfinite_%": 100.0 * (~torch.isfinite(x.flatten(1)).all(1)).float().mean().item()}
        if self.kind == "points":
            out = {}
            if self.modes is not None:
                st = M.mode_stats(x, self.modes[0], self.modes[1])
                out["modes"] = int(st["modes_covered"])
                out["high_quality_%"] = 100.0 * float(st["high_quality_fraction"])
            out["SW"] = float(M.sliced_wasserstein(x, self.ref_x, seed=seed))
            return out
        from .features import extract_features

        f, logits = extract_features(self.extractor, x, device=self.device)
        pr = M.precision_recall(self.ref_f, f, k=3, real_radii=self.ref_radii[3])
        dc = M.density_coverage(self.ref_f, f, k=5, real_radii=self.ref_radii[5])
        kid_mean, _ = M.kernel_distance(self.ref_f, f, seed=seed)
        hist = M.class_histogram(logits, self.num_classes)
        return {
            self.fd_name: float(M.frechet_distance_from_features(f, self.ref_f)),
            "KID": float(kid_mean),
            "precision": float(pr["precision"]),
            "recall": float(pr["recall"]),
            "density": float(dc["density"]),
            "coverage": float(dc["coverage"]),
            "class_entropy": float(M.class_entropy(hist)),
            "class_KL": float(M.kl_to_uniform(hist)),
        }

    def floor(self, seeds: list[int]) -> dict:
        """The data's own score: train-split samples scored like a model's (the best a model can do)."""
        per_seed = []
        for s in seeds:
            g = torch.Generator().manual_seed(10_000 + s)
            n = min(self.cfg.num_samples, len(self.train))
            idx = torch.randperm(len(self.train), generator=g)[:n]
            per_seed.append(self.score(self.train.x[idx], s))
        return _average(per_seed)


def _average(per_seed: list[dict]) -> dict:
    out = {}
    for k in per_seed[0]:
        vals = [d[k] for d in per_seed if k in d]
        out[k] = float(np.mean(vals))
        if len(vals) > 1:
            out[k + "_std"] = float(np.std(vals, ddof=1))
    return out


# --- running -----------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _generate_timed(den, decode, ck, row: BenchRow, noise: torch.Tensor, seed: int, batch_size: int, device,
                    progress=None):
    """Sample in batches from fixed noise and decode into data space (a latent model's decoder is part of
    its cost); returns (samples on CPU, NFE per batch, per-batch seconds). Sample i's noise depends only on
    (seed, i) (`samplers.SampleNoise`), so the samples do not depend on `batch_size`. `progress(b, batches, i)`
    is told each network evaluation's place: batch b of `batches`, evaluation i within it."""
    from .samplers import generate

    outs, secs, nfe = [], [], None
    batches = math.ceil(len(noise) / batch_size)
    for b, i in enumerate(range(0, len(noise), batch_size)):
        den.nfe = 0
        callback = None if progress is None else (lambda info, b=b: progress(b, batches, info["i"] + 1))
        _sync(device)
        t0 = time.perf_counter()
        x = generate(den, 0, ck.sample_shape, sampler=row.sampler, steps=row.steps, eta=row.eta, spacing=row.spacing,
                     seed=seed, noise=noise[i : i + batch_size], first_index=i, device=device,
                     steps_per_level=row.steps_per_level, step_size=row.step_size, callback=callback)
        x = decode(x)
        _sync(device)
        secs.append(time.perf_counter() - t0)
        outs.append(x.cpu())
        nfe = den.nfe
    return torch.cat(outs), nfe, secs


def _bits_per_dim(cfg: BenchConfig, ckpts: dict, reference: torch.Tensor, device, progress: bool) -> dict:
    """{checkpoint: {"bpd", "bpd_ci95"}} for every checkpoint whose family has a variational bound, on the
    reference split (the same images and draws for each); checkpoints without one (ddgan) are left out."""
    from .families import bound_from_checkpoint, no_bound_reason
    from .metrics.likelihood import evaluate_bound

    x = reference[: cfg.bpd_images] if cfg.bpd_images else reference
    out = {}
    for path, ck in ckpts.items():
        if no_bound_reason(ck):
            continue  # ddgan has no bound; a latent model's bound is not one on the images
        terms_fn, to_bpd, _ = bound_from_checkpoint(ck, device)
        res = evaluate_bound(terms_fn, x, to_bpd=to_bpd, batch_size=BPD_BATCH, draws=cfg.bpd_draws, seed=0,
                             device=device, progress=progress)
        out[path] = {"bpd": res["terms"]["total"]["mean"], "bpd_ci95": res["terms"]["total"]["ci95"]}
    return out


def run_bench(cfg: BenchConfig, out_dir: str | Path, progress: bool = True, command: str | None = None) -> dict:
    """Run every row of the grid, score it, and write all outputs to `out_dir`; returns the results."""
    from tqdm import tqdm

    from .checkpoint import load_checkpoint
    from .data import convert_points, same_points
    from .denoiser import CountNFE
    from .device import resolve_device
    from .families import sampler_from_checkpoint
    from .paths import check_bench_dir, prepare_bench_dir
    from .plotting import pareto_row_name, save_samples
    from .samplers import check_sampler_for_model, initial_noise

    rows = expand_rows(cfg)
    device = resolve_device(cfg.device, f"{getattr(cfg, '_where', 'grid')}: device")
    out_dir = check_bench_dir(out_dir)  # before any compute: a bad --out fails now, not after the sampling
    ckpts = {}
    for r in rows:
        if r.checkpoint not in ckpts:
            ckpts[r.checkpoint] = load_checkpoint(r.checkpoint)
    first = ckpts[rows[0].checkpoint]
    for r in rows:
        ck = ckpts[r.checkpoint]
        if not same_points(ck.cfg.data, first.cfg.data):
            _fail(r.checkpoint, f"trained on {ck.cfg.data.name} data that differs from {rows[0].checkpoint}'s; a table compares one dataset")
        r.label = r.label or _default_label(r.checkpoint, ck)
        check_sampler_for_model(r.sampler, ck.cfg.family == "ddgan", f"{r.checkpoint}: ")
    _check_unique(rows, getattr(cfg, "_where", "grid"))
    prepare_bench_dir(out_dir)  # every input is checked: create it
    scorer = Scorer(first.cfg.data, cfg, device)
    env = environment(device)
    samples_dir = out_dir / "samples"
    samples_dir.mkdir(exist_ok=True)

    results = []
    floor = scorer.floor(cfg.seeds)
    ref_plot = scorer.reference.x[: min(len(scorer.reference), 2000)] if scorer.kind == "points" else None
    floor_img = save_samples(scorer.train.x[: (cfg.num_samples if scorer.kind == "points" else cfg.grid_images)],
                             samples_dir / "data.png", ref_plot, title="data (train split)")
    results.append({"key": "data", "label": "data (train vs " + cfg.reference_split + ")", "sampler": "-", "steps": 0,
                    "eta": None, "spacing": None, "nfe": 0, "seconds": None, "seconds_per_batch": None,
                    "samples_per_second": None, "image": str(floor_img.relative_to(out_dir)), "floor": True, **floor})

    bpd = _bits_per_dim(cfg, ckpts, scorer.reference.x, device, progress) if cfg.bpd else {}
    dens: dict[str, tuple[CountNFE, Callable]] = {}
    x_T: dict[tuple, torch.Tensor] = {}  # (seed, sample shape) -> the x_T every row of that shape starts from
    bar = tqdm(rows, desc="bench", disable=not progress, dynamic_ncols=True)
    for row in bar:
        bar.set_postfix_str(f"{row.label} {row.sampler}-{row.steps}")

        def tick(b, batches, i, row=row):  # where the row is: its batch and network evaluation
            if i == 1 or i % 10 == 0:
                bar.set_postfix_str(f"{row.label} {row.sampler}-{row.steps}: batch {b + 1}/{batches}, NFE {i}")
        ck = ckpts[row.checkpoint]
        if row.checkpoint not in dens:
            den, decode = sampler_from_checkpoint(ck, device)
            dens[row.checkpoint] = CountNFE(den), decode
        den, decode = dens[row.checkpoint]
        per_seed, secs, nfe, shown = [], [], None, None
        for seed in cfg.seeds:
            if (seed, ck.sample_shape) not in x_T:
                x_T[seed, ck.sample_shape] = initial_noise(cfg.num_samples, ck.sample_shape, seed)
            noise = x_T[seed, ck.sample_shape]
            # warm-up (not timed): one full-size batch through one network evaluation, so lazy
            # initialisation and kernel selection for this batch shape happen before the clock runs
            warm = BenchRow(row.checkpoint, "ddim", 1, spacing="leading")
            _generate_timed(den, decode, ck, warm, noise[: cfg.batch_size], seed, cfg.batch_size, device)
            x, nfe, s = _generate_timed(den, decode, ck, row, noise, seed, cfg.batch_size, device,
                                        progress=tick if progress else None)
            x = convert_points(x, ck.cfg.data, first.cfg.data)  # a toy trained in its own coordinates
            secs += s
            per_seed.append(scorer.score(x, seed))
            shown = x if shown is None else shown
        eta = row.eta if row.sampler == "ddim" else None
        img = save_samples(shown[: (len(shown) if scorer.kind == "points" else cfg.grid_images)],
                           samples_dir / f"{row.key}.png", ref_plot,
                           title=f"{pareto_row_name(vars(row) | {'eta': eta}, SAMPLER_NAMES)} ({nfe} NFE)")
        total = float(np.sum(secs))
        results.append({
            "key": row.key, "label": row.label, "checkpoint": row.checkpoint, "sampler": row.sampler,
            "steps": row.steps, "eta": eta, "spacing": row.spacing,
            **({"steps_per_level": row.steps_per_level, "step_size": row.step_size} if row.sampler == "langevin" else {}),
            "nfe": nfe, "seconds": total / len(cfg.seeds), "seconds_per_batch": float(np.mean(secs)),
            "samples_per_second": cfg.num_samples * len(cfg.seeds) / total if total > 0 else None,
            "image": str(img.relative_to(out_dir)), "floor": False, **_average(per_seed), **bpd.get(row.checkpoint, {}),
        })
    bar.close()
    summary = {
        "name": cfg.name, "environment": env, "command": command,
        "dataset": scorer.reference.name, "reference": f"{cfg.reference_split} split ({len(scorer.reference)})",
        "num_samples": cfg.num_samples, "seeds": list(cfg.seeds), "batch_size": cfg.batch_size,
        "quality_metric": scorer.quality, "diversity_metric": scorer.diversity,
        "lower_is_better": scorer.lower_is_better, "metrics": _metric_columns(results), "rows": results,
    }
    write_outputs(summary, out_dir)
    return summary


# --- outputs -----------------------------------------------------------------------------------------

BASE_COLUMNS = ["label", "sampler", "steps", "eta", "nfe", "seconds", "samples_per_second"]
HEADERS = {"label": "model", "nfe": "NFE", "seconds": "seconds", "samples_per_second": "samples/s",
           "high_quality_%": "high-quality %", "class_entropy": "class entropy", "class_KL": "class KL",
           "bpd": "bits/dim"}
METRIC_ORDER = ["modes", "high_quality_%", "SW", "FID", "FD-digits", "FD-FMNIST", "KID", "precision", "recall",
                "density", "coverage", "class_entropy", "class_KL", "bpd", "nonfinite_%"]


def _metric_columns(results: list[dict]) -> list[str]:
    present = {k for r in results for k in r}
    return [m for m in METRIC_ORDER if m in present]


def _fmt(key: str, v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if key == "sampler":
        return SAMPLER_NAMES.get(v, v)
    if key == "eta":
        return f"{v:g}"
    if key in ("modes", "nfe", "steps"):
        return f"{v:g}" if isinstance(v, float) else str(v)
    if isinstance(v, float):
        if key == "seconds":
            return f"{v:.2f}"
        if key in ("samples_per_second", "high_quality_%"):
            return f"{v:.1f}"
        if key == "KID":
            return f"{v:.4f}"
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)


def _cell(r: dict, k: str) -> str:
    s = _fmt(k, r.get(k))
    for spread in ("_std", "_ci95"):  # a spread over seeds, or a 95% interval (bits/dim)
        if k + spread in r and s != "-":
            s += f" ± {_fmt(k, r[k + spread])}"
    return s


def markdown_table(summary: dict) -> str:
    cols = BASE_COLUMNS + summary["metrics"]
    lines = ["| " + " | ".join(HEADERS.get(c, c) for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in summary["rows"]:
        cells = [_cell(r, c) for c in cols]
        if r.get("floor"):
            cells = [f"*{c}*" if c != "-" else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_outputs(summary: dict, out_dir: Path) -> None:
    """results.json / .csv / .md, pareto.png and report.html from a summary."""
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "results.json", json.dumps(summary, indent=2))
    cols = ["key"] + BASE_COLUMNS + ["spacing", "seconds_per_batch"] + summary["metrics"]
    cols += sorted({k for r in summary["rows"] for k in r if k.endswith(("_std", "_ci95"))})
    env = summary["environment"]
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=cols + ["commit", "device", "torch"], extrasaction="ignore")
    w.writeheader()
    for r in summary["rows"]:
        w.writerow({**r, "commit": env["commit"], "device": env["device"], "torch": env["torch"]})
    atomic_write_text(out_dir / "results.csv", buf.getvalue())
    md = markdown_table(summary)
    atomic_write_text(out_dir / "results.md", f"{_caption(summary)}\n\n{md}\n")
    from .plotting import pareto_plot

    pareto_plot(summary, out_dir / "pareto.png", SAMPLER_NAMES, HEADERS)
    atomic_write_text(out_dir / "report.html", report_html(summary, md))


def _caption(summary: dict) -> str:
    e = summary["environment"]
    seeds = summary["seeds"]
    return (f"{summary['name']}: {summary['dataset']}, {summary['num_samples']} samples per row"
            f"{f' x {len(seeds)} seeds (mean ± std)' if len(seeds) > 1 else ''} against the {summary['reference']}; "
            f"seconds for all {summary['num_samples']} in batches of {summary['batch_size']} on {e['device']}, "
            f"torch {e['torch']}, commit {e['commit'] or 'unknown'}.")


def report_html(summary: dict, md_table: str) -> str:
    """One self-contained page (images by relative path, no scripts or network)."""
    esc = html.escape
    e = summary["environment"]
    cols = BASE_COLUMNS + summary["metrics"]
    head = "".join(f"<th>{esc(HEADERS.get(c, c))}</th>" for c in cols)
    body = ""
    for r in summary["rows"]:
        cls = ' class="floor"' if r.get("floor") else ""
        body += f"<tr{cls}>" + "".join(f"<td>{esc(_cell(r, c))}</td>" for c in cols) + "</tr>\n"
    cards = ""
    from .plotting import pareto_row_name

    for r in summary["rows"]:
        title = r["label"] if r.get("floor") else pareto_row_name(r, SAMPLER_NAMES)
        q = summary["quality_metric"]
        sub = f"{HEADERS.get(q, q)} {_cell(r, q)}" if r.get(q) is not None else ""
        cards += (f'<figure><img src="{esc(r["image"])}" alt="{esc(title)}"><figcaption><b>{esc(title)}</b>'
                  f"<br>{esc(sub)}</figcaption></figure>\n")
    meta = "".join(f"<li><b>{esc(k)}</b>: {esc(str(v))}</li>" for k, v in e.items())
    cmd = f"<p>Reproduce: <code>{esc(summary['command'])}</code></p>" if summary.get("command") else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(summary['name'])}: trilemma report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }} th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th {{ background: #f0f0f0; }} td:first-child, td:nth-child(2) {{ text-align: left; }} tr.floor {{ font-style: italic; background: #fafae8; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 12px; }} figure {{ margin: 0; width: 270px; }}
figure img {{ width: 100%; image-rendering: pixelated; border: 1px solid #ddd; }} figcaption {{ font-size: 0.8em; }}
</style></head><body>
<h1>{esc(summary['name'])}</h1>
<p>{esc(_caption(summary))}</p>{cmd}
<p>Quality: <b>{esc(HEADERS.get(summary['quality_metric'], summary['quality_metric']))}</b>;
diversity: <b>{esc(str(HEADERS.get(summary['diversity_metric'], summary['diversity_metric'])))}</b>.
The italic first row is the data itself: {esc(str(summary['num_samples']))} training images or points scored against the
{esc(summary['reference'])} exactly like a model's samples. It is the score of a perfect model at this sample count,
not a hard floor: the metrics are estimates from finitely many samples, so a model can land on either side of it by chance.</p>
<table><thead><tr>{head}</tr></thead><tbody>
{body}</tbody></table>
<h2>Speed against quality</h2>
<img src="pareto.png" alt="Pareto plot" style="max-width:100%">
<h2>Samples</h2>
<div class="grid">
{cards}</div>
<h2>Environment</h2><ul>{meta}</ul>
</body></html>
"""
