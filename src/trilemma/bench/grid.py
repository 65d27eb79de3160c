"""A bench grid: the YAML file that names the rows, parsed and checked before anything runs.

Every key is checked by the one config validator (`config.from_dict` for types, `config.check_ranges` for
ranges), and a row's sampler options by the sampler's own declaration (`samplers.check_sampler_options`).
A list-valued sampler, steps, spacing, precision, compile or sampler option expands into one row per value. The
grid's `precision`, `compile` and `channels_last` say how every row's networks run (`runtime.Runtime`); a row's own
`precision`, `compile` or `channels_last` overrides the grid's for that row, so one table can set fp32 and bf16 side
by side.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..config import NON_NEGATIVE, POSITIVE, check_ranges, from_dict, read_yaml
from ..errors import TrilemmaError
from ..metrics.likelihood import BPD_DRAWS
from ..runtime import AUTO, DEFAULT_COMPILE, DEFAULT_PRECISION, PRECISIONS
from ..samplers import SAMPLER_INFO, all_sampler_options, check_sampler_options
from ..schedules import SPACINGS

__all__ = ["BenchConfig", "BenchRow", "load_grid", "config_from_dict", "expand_rows", "check_unique"]


@dataclass
class BenchConfig:
    name: str = "bench"  # title of the report
    rows: list[dict] = field(default_factory=list)  # grid entries (see `expand_rows`)
    num_samples: int = 2500  # samples per row and seed
    seeds: list[int] = field(default_factory=lambda: [0])  # one full sample set per seed; metrics are averaged
    batch_size: int = 2500  # samples per sampler call (the unit of "seconds per batch")
    reference_split: str = "test"  # what samples are scored against
    features: str = "auto"  # auto (the dataset's classifier) | inception
    inception_weights: str | None = None  # local Inception weights file for features: inception
    grid_images: int = 64  # images shown per sample grid
    device: str | None = None  # cpu | cuda | mps [default: cuda if available]
    bpd: bool = True  # bits/dim of every checkpoint with a variational bound (vdm; ddpm through its VLB)
    bpd_images: int = 0  # images of the reference split the bound is averaged over (0: all of them)
    bpd_draws: int = BPD_DRAWS  # Monte-Carlo draws of (t, noise) per image for bits/dim (trilemma eval --bpd's default)
    precision: str = DEFAULT_PRECISION  # auto | fp32 | bf16 | fp16: what the networks run in (a row's overrides;
    # auto: runtime.auto_precision, bits/dim in fp32)
    compile: bool = DEFAULT_COMPILE  # torch.compile the networks (a row's `compile` overrides)
    channels_last: bool | None = None  # conv networks' memory layout [default: runtime.channels_last_default]
    source: str = field(default="grid", init=False, repr=False)  # where it was read from, for messages


BENCH_RANGES = {"num_samples": (2, None), "batch_size": POSITIVE, "grid_images": NON_NEGATIVE,
                "bpd_images": NON_NEGATIVE, "bpd_draws": POSITIVE, "features": ("auto", "inception"),
                "reference_split": ("train", "test"), "precision": (AUTO, *PRECISIONS)}


@dataclass
class BenchRow:
    checkpoint: str  # run or checkpoint directory
    sampler: str  # a name in samplers.SAMPLER_INFO
    steps: int
    spacing: str  # time grid
    label: str | None = None  # model name in tables [default: family and checkpoint directory]
    sampler_options: dict = field(default_factory=dict)  # every option of the sampler, defaults filled in
    precision: str | None = None  # this row's network precision [default: the grid's]
    compile: bool | None = None  # this row's torch.compile [default: the grid's]
    channels_last: bool | None = None  # this row's memory layout [default: the grid's]

    @property
    def key(self) -> str:
        """A file-name-safe id, unique within a grid (a row's own precision, compile and layout are part of it)."""
        own = {o.name: o for o in SAMPLER_INFO[self.sampler].options}
        opts = "".join(own[k].key_part(v) for k, v in self.sampler_options.items())
        run = (f"-{self.precision}" if self.precision else "") + ("-compile" if self.compile else "")
        run += {None: "", True: "-cl", False: "-nocl"}[self.channels_last]
        raw = f"{self.label or self.checkpoint}-{self.sampler}{self.steps}{opts}-{self.spacing}{run}"
        return re.sub(r"[^A-Za-z0-9._-]+", "_", raw)


ROW_KEYS = ("checkpoint", "sampler", "steps", "spacing", "label", "precision", "compile", "channels_last")  # and every sampler option


def _fail(where: str, msg: str):
    raise TrilemmaError(f"{where}: {msg}")


def load_grid(path: str | Path, overrides: dict | None = None) -> BenchConfig:
    """Parse and validate a grid YAML file; unknown keys are errors that name the file and key."""
    p = Path(path)
    raw = read_yaml(p, "grid file")
    if not isinstance(raw, dict):
        _fail(str(p), "a grid file is a mapping with a `rows` list")
    return config_from_dict(raw | (overrides or {}), str(p), base=p.parent)


def config_from_dict(raw: dict, where: str, base: Path | None = None) -> BenchConfig:
    """A BenchConfig from a mapping, checked; checkpoints are taken relative to `base` (the grid file's
    directory) when they exist there, as a reader of the file would expect."""
    raw = dict(raw)
    if isinstance(raw.get("seeds"), int) and not isinstance(raw.get("seeds"), bool):
        raw["seeds"] = [raw["seeds"]]
    cfg = from_dict(BenchConfig, raw, where)
    cfg.source = where
    check_ranges(cfg, BENCH_RANGES, where)
    if not cfg.seeds or not all(0 <= s < 2**63 for s in cfg.seeds):
        _fail(where, f"seeds must be an integer or a non-empty list of integers in [0, 2^63), got {cfg.seeds!r}")
    if not cfg.rows:
        _fail(where, "`rows` must be a non-empty list of {checkpoint, sampler, steps, ...}")
    for i, r in enumerate(cfg.rows):
        if base is not None and "checkpoint" in r and not Path(str(r["checkpoint"])).is_absolute():
            cand = base / str(r["checkpoint"])
            r["checkpoint"] = str(cand) if cand.exists() else str(r["checkpoint"])
    return cfg


def _check_entry(entry: dict, where: str) -> dict[str, list]:
    """An entry's keys checked; its list-valued keys as lists (one value: a list of one)."""
    options = all_sampler_options()
    known = (*ROW_KEYS, *options)
    for k in entry:
        if k not in known:
            _fail(where, f"unknown key {k!r}; known keys: {', '.join(sorted(known))}")
    for k in ("checkpoint", "sampler", "steps"):
        if k not in entry:
            _fail(where, f"missing key {k!r}")
    for k in ("label", "checkpoint"):
        if k in entry and not isinstance(entry[k], (str, int, float)) or isinstance(entry.get(k), bool):
            _fail(where, f"{k} must be a string, got {entry[k]!r}")
    values = {k: entry[k] if isinstance(entry.get(k), list) else [entry.get(k)]
              for k in ("sampler", "steps", "spacing", "precision", "compile", "channels_last", *options)}
    for k, v in values.items():
        if not v:
            _fail(where, f"{k} is an empty list")
    for p in values["precision"]:
        if p is not None and p != AUTO and p not in PRECISIONS:
            _fail(where, f"precision {p!r} is not one of {', '.join([AUTO, *PRECISIONS])}")
    for k in ("compile", "channels_last"):
        for c in values[k]:
            if c is not None and not isinstance(c, bool):
                _fail(where, f"{k} must be true or false, got {c!r}")
    for sampler in values["sampler"]:
        if sampler not in SAMPLER_INFO:
            _fail(where, f"sampler {sampler!r} is not one of {', '.join(SAMPLER_INFO)}")
    # an option applies to the entry's rows of the samplers that take it, and must apply to at least one
    own = {o.name for sampler in values["sampler"] for o in SAMPLER_INFO[sampler].options}
    for k in options:
        if k in entry and k not in own:
            _fail(where, f"{k} is not an option of sampler {', '.join(map(str, values['sampler']))}")
    return values


def _entry_rows(entry: dict, where: str) -> list[BenchRow]:
    """The rows of one grid entry: sampler x steps x each of the sampler's options x spacing."""
    from ..loading import sampling_spacing

    values = _check_entry(entry, where)
    rows = []
    default = {s: sampling_spacing(entry["checkpoint"], s) for s in values["sampler"]}  # per sampler, not per row
    for sampler, steps in itertools.product(values["sampler"], values["steps"]):
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            _fail(where, f"steps must be a positive integer, got {steps!r}")
        own = [o.name for o in SAMPLER_INFO[sampler].options]  # another sampler's option lists do not multiply
        for *combo, spacing, precision, compile_, layout in itertools.product(
                *(values[k] for k in own), values["spacing"], values["precision"], values["compile"],
                values["channels_last"]):
            if spacing is not None and spacing not in SPACINGS:
                _fail(where, f"spacing {spacing!r} is not one of {', '.join(SPACINGS)}")
            opts = check_sampler_options(sampler, dict(zip(own, combo)), f"{where}: ")
            label = None if entry.get("label") is None else str(entry["label"])
            rows.append(BenchRow(str(entry["checkpoint"]), sampler, steps,
                                 spacing or default[sampler], label, opts, precision, compile_, layout))
    return rows


def expand_rows(cfg: BenchConfig) -> list[BenchRow]:
    """One BenchRow per combination of list-valued sampler / steps / sampler option / spacing / precision /
    compile / channels_last in each entry."""
    out: list[BenchRow] = []
    for i, entry in enumerate(cfg.rows):
        out += _entry_rows(entry, f"{cfg.source}: rows[{i}]")
    check_unique(out, cfg.source)
    return out


def check_unique(rows: list[BenchRow], where: str) -> None:
    keys = [r.key for r in rows]
    dup = {k for k in keys if keys.count(k) > 1}
    if dup:
        _fail(where, f"rows repeat the same model x sampler x steps: {', '.join(sorted(dup))} "
                     "(give each model a label)")
