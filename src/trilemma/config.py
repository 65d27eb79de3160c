"""Typed run configuration: nested dataclasses loaded from YAML, saved as JSON beside checkpoints.

Unknown keys and mistyped values are errors (one line naming the file and the key), so a typo
never silently trains the default. No class lookup by string, no exec, no pickles.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .data import DataConfig
from .errors import TrilemmaError
from .samplers import SAMPLER_INFO, all_sampler_options, check_sampler_for_model, check_sampler_options
from .schedules import ScheduleConfig


@dataclass
class ModelConfig:
    prediction: str = "eps"  # what the network predicts: eps | v | x0
    # MLP backbone (2-D data)
    hidden: int = 256  # width
    depth: int = 4  # residual blocks
    fourier: int = 0  # input Fourier features sin/cos(2^k 2pi x / P), k < fourier (0: raw x only)
    fourier_period: float = 16.0  # P, their lowest period: wider than the span of the inputs (data units)
    # UNet2DModel backbone (images)
    channels: list[int] = field(default_factory=lambda: [32, 64, 64])  # one resolution level each
    attention: list[bool] = field(default_factory=lambda: [False, False, True])  # self-attention per level
    layers_per_block: int = 1  # ResNet blocks per level
    norm_groups: int = 8  # GroupNorm groups
    dropout: float = 0.0


@dataclass
class GANConfig:
    """DDGAN (family ddgan): generator latent, discriminator size and the adversarial optimisation."""

    latent_dim: int = 100  # z of G(x_t, z, t)
    mapping_layers: int = 3  # MLP from z into the generator's conditioning (a UNet's AdaGN; a student's time embedding)
    tanh: bool = True  # ddgan image generator: x0' = tanh(UNet output) (false: latents; distill students: linear)
    g_fourier: int = 0  # 2-D adversarial student: Fourier bands added to its generator's input, their weights from 0
    g_fourier_period: float = 8.0  # their lowest period (data units); a ddgan's generator has model.fourier
    d_hidden: int = 256  # 2-D discriminator: width
    d_depth: int = 3  # 2-D discriminator: residual blocks
    d_fourier: int = 8  # 2-D discriminator: input Fourier features sin/cos(2^k 2pi x / P), k < d_fourier (0: raw x)
    d_fourier_period: float = 8.0  # P, their lowest period: wider than the span of x_{t-1} and x_t (data units)
    d_raw_input: bool = True  # 2-D discriminator: x itself beside its Fourier features (false: bounded features only)
    d_residual: bool = False  # D sees (x_{t-1}, (x_t - a x_{t-1}) / sigma), the forward noise, not (x_{t-1}, x_t)
    d_fourier_anneal: int = 0  # 2-D discriminator: steps over which its Fourier bands fade in, coarse to fine (0: off)
    d_channels: list[int] = field(default_factory=lambda: [32, 64, 128])  # image discriminator levels
    d_group: int = 4  # minibatch-std feature over groups of this many consecutive samples (0: none)
    lr_g: float = 1.6e-4  # generator learning rate (Adam)
    lr_d: float = 1.25e-4  # discriminator learning rate (Adam)
    beta1: float = 0.5  # Adam betas of both (Xiao et al. 2022)
    beta2: float = 0.9
    r1_gamma: float = 0.02  # R1 penalty weight on real x_{t-1}: r1_gamma / 2 * ||grad_x D||^2
    lazy_reg: int = 1  # apply R1 every k steps (1: every step)


@dataclass
class VDMConfig:
    """VDM (family vdm): the variational bound, its time discretisation and the network's input features."""

    timesteps: int = 0  # diffusion loss: 0 = continuous time (VDM eq. 17), T > 0 = discrete with T steps (eq. 13)
    antithetic: bool = True  # low-discrepancy times t_i = (u + i / B) mod 1 over the batch (VDM appendix)
    shape_loss: str = "variance"  # learned schedule's shape: variance (minimise Var of the diffusion loss) | bound
    fourier: bool = True  # append sin/cos(2^n pi z), n = fourier_min..fourier_max, to the network's input
    fourier_min: int = 7  # 2^7 pi z: a period of 1/64 (two 8-bit levels)
    fourier_max: int = 8  # 2^8 pi z: a period of 1/128, about one 8-bit level (2/255)
    cond_gamma_min: float = -13.3  # the network sees 1000 (gamma(t) - cond_gamma_min) / (cond_gamma_max - cond_gamma_min)
    cond_gamma_max: float = 5.0


@dataclass
class AutoencoderConfig:
    """The latent-diffusion first stage (family autoencoder): a KL-regularised AutoencoderKL (Rombach et al. 2022)."""

    channels: list[int] = field(default_factory=lambda: [32, 64, 64])  # one level each: downsampling f = 2^(levels - 1)
    layers_per_block: int = 1  # ResNet blocks per level (the decoder has one more, as in diffusers)
    latent_channels: int = 4  # c of the (c, h, w) latent
    norm_groups: int = 8  # GroupNorm groups (divides every entry of channels)
    mid_attention: bool = True  # self-attention in the middle block, at the latent resolution
    pad: int = 2  # pixels of background (-1) added on every side before encoding, cropped after decoding (28 -> 32)
    recon: str = "l1"  # reconstruction loss per pixel: l1 | l2
    kl_weight: float = 1e-6  # KL(q(z | x) || N(0, I)), summed over latent coordinates, relative to the per-pixel sum
    perceptual: float = 0.0  # weight of a feature distance on the dataset's feature classifier (the FD network)
    scale_images: int = 10_000  # training images the latent scale 1 / std is measured on


@dataclass
class LatentConfig:
    """Latent diffusion: the family of this config trains and samples on an autoencoder's scaled latents."""

    autoencoder: str = ""  # an autoencoder run or checkpoint directory ("": pixel space)
    cache: bool = True  # encode the training split once at the start (false: encode every batch)


@dataclass
class DistillConfig:
    """A few-step student distilled from a trained teacher (family distill). The student is the teacher's model
    (its architecture, schedule and prediction) started from the teacher's EMA weights."""

    teacher: str = ""  # a ddpm or vdm run or checkpoint directory (pixel or latent), or a progressive round;
    # "trilemma:NAME" is a checkpoint shipped with the package (trilemma:toy2d-ddpm)
    method: str = "progressive"  # progressive (Salimans & Ho 2022) | consistency (Song et al. 2023) | adversarial
    # progressive: the student's DDIM steps on the trailing grid (the teacher takes twice as many);
    # adversarial: the generator's steps T <= 8 on the teacher's trailing grid (DDGAN's T)
    student_steps: int = 64
    prediction: str = ""  # what the student's network predicts: "" (the teacher's) | v | x0; v or x0 keep one step
    # stable where an eps-student's x0 = (z - sigma eps) / alpha amplifies errors 1 / alpha (Salimans & Ho, sec. 4)
    grid_steps: int = 40  # consistency: teacher ODE steps between t_min and t = 1 (N - 1 of Song et al.)
    solver: str = "ddim"  # consistency: the teacher's ODE step per segment: ddim (1 evaluation) | heun (2, second order)
    target_ema: float = 0.95  # consistency: EMA decay of the target network theta^- (Song et al.: 0.95; 0: stop-grad)
    distance: str = "pseudo-huber"  # consistency: pseudo-huber (c = 0.00054 sqrt(d), Song & Dhariwal 2023) | l2
    sigma_data: float = 0.5  # consistency: sigma_d of c_skip = sigma_d^2 / ((k tau)^2 + sigma_d^2), tau the timestep from t_min
    timestep_scaling: float = 10.0  # consistency: k above (diffusers' LCMScheduler timestep_scaling)
    rounds: int = 1  # progressive: rounds in one run, from student_steps * 2^(rounds - 1) steps down to student_steps
    teacher_weight: float = 0.0  # adversarial: weight of ||G(x_t, z, t) - teacher x0_hat(x_t, t)||^2 beside the GAN loss


@dataclass
class TrainConfig:
    steps: int = 10_000  # optimizer steps
    batch_size: int = 256  # per process
    lr: float = 1e-3  # peak learning rate (AdamW; ddgan and adversarial students take gan.lr_g, gan.lr_d)
    weight_decay: float = 0.0  # AdamW's decoupled weight decay (ddgan's two phases take none)
    warmup: int = 200  # linear warm-up steps
    lr_decay: str = "none"  # none | linear | cosine: after warm-up the rate falls from its peak to 0 at train.steps
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    ema_decay: float = 0.999  # EMA of the weights, used for sampling
    seed: int = 0
    log_every: int = 100  # tracker logging interval (steps)
    sample_every: int = 0  # write a sample grid every N steps (0: only at the end)
    save_every: int = 2000  # checkpoint interval (steps); a final checkpoint is always written
    mixed_precision: str = "no"  # no | fp16 | bf16: Accelerate's autocast of the trained networks (fp16 needs a GPU);
    # weights, optimizer moments, EMAs and checkpoints stay float32
    compile: bool = False  # torch.compile the trained networks (Accelerate's dynamo backend, inductor); the first
    # batch's gradients are checked against eager mode's and a miscompiled network is refused (BENCHMARKS.md, issue 23)
    tracker: str = "none"  # none | tensorboard


@dataclass
class SampleSettings:
    """The periodic sample grids of a training run (and a checkpoint's default sampler)."""

    sampler: str = "ddim"  # a name in samplers.SAMPLER_INFO (`trilemma sample --help` lists them)
    steps: int = 50
    spacing: str = "leading"  # time grid: leading | trailing | linspace | quadratic | logsnr
    n: int = 64  # samples per grid


# SampleConfig: the settings above plus one field per sampler option (eta, steps_per_level, step_size, ...), with
# the type and default each sampler declares in its signature (`samplers.all_sampler_options`): an option added to
# a sampler is a config key without an edit here.
SampleConfig = dataclasses.make_dataclass(
    "SampleConfig", [(o.name, o.type, o.default) for o in all_sampler_options().values()], bases=(SampleSettings,))
SampleConfig.__module__ = __name__


def sample_options(sample, where: str) -> dict:
    """The options of `sample.sampler` from a SampleConfig, checked. Every config carries every option's field,
    so another sampler's option is accepted at its default and refused at any other value."""
    own = {o.name for o in SAMPLER_INFO[sample.sampler].options}
    given = {k: getattr(sample, k) for k, o in all_sampler_options().items()
             if k in own or getattr(sample, k) != o.default}
    return check_sampler_options(sample.sampler, given, f"{where}: sample.")


@dataclass
class Config:
    family: str = "ddpm"  # a name in families.FAMILIES; latent.autoencoder makes any but autoencoder latent
    data: DataConfig = field(default_factory=DataConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    gan: GANConfig = field(default_factory=GANConfig)  # family ddgan only
    vdm: VDMConfig = field(default_factory=VDMConfig)  # family vdm only
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)  # family autoencoder only
    latent: LatentConfig = field(default_factory=LatentConfig)  # ddpm, vdm, ddgan on an autoencoder's latents
    distill: DistillConfig = field(default_factory=DistillConfig)  # family distill only
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)


def _type_name(tp) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a mapping"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value, tp, key: str, where: str):
    """Check `value` against the annotation `tp`; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key, where)
            except TrilemmaError as e:
                errors.append(e)
        raise errors[0]
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise TrilemmaError(f"{where}: {key} must be a list, got {value!r}")
        return [_coerce(v, inner, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads 3e-4 (no dot) as a string
            value = float(value)
        except ValueError:
            pass
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise TrilemmaError(f"{where}: {key} must be a finite number, got {value!r}")
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp in (str, bool, dict) and isinstance(value, tp):
        return value
    raise TrilemmaError(f"{where}: {key} must be {_type_name(tp)}, got {value!r}")


def from_dict(cls, data: dict, where: str, prefix: str = ""):
    """Build dataclass `cls` from a nested dict; unknown keys and wrong types raise TrilemmaError."""
    if not isinstance(data, dict):
        raise TrilemmaError(f"{where}: {prefix.rstrip('.') or 'the config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f" (known: {', '.join(names)})"
            raise TrilemmaError(f"{where}: unknown config key '{prefix}{key}'{hint}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = from_dict(tp, value, where, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, tp, f"{prefix}{key}", where)
    try:
        return cls(**kwargs)
    except TrilemmaError as e:
        raise TrilemmaError(f"{where}: {e}") from None


# Allowed values of every config key that has a range or a fixed set, declared once and checked by `validate`
# for every config, before anything is computed (YAML presets, --set overrides, a checkpoint's config.json).
# (low, high): inclusive bounds, None for no bound; OVER_ZERO: a number > 0; a tuple of strings: the choices.
POSITIVE, NON_NEGATIVE = (1, None), (0, None)
OVER_ZERO = (0.0, None, "exclusive")
RANGES: dict[str, tuple] = {
    "model.hidden": POSITIVE, "model.depth": POSITIVE, "model.fourier": NON_NEGATIVE,
    "model.fourier_period": OVER_ZERO, "model.layers_per_block": POSITIVE, "model.norm_groups": POSITIVE,
    "model.dropout": (0.0, 0.99),
    "gan.latent_dim": POSITIVE, "gan.mapping_layers": NON_NEGATIVE, "gan.d_hidden": POSITIVE, "gan.d_depth": POSITIVE,
    "gan.g_fourier": NON_NEGATIVE, "gan.g_fourier_period": OVER_ZERO, "gan.d_fourier": NON_NEGATIVE, "gan.d_fourier_period": OVER_ZERO, "gan.d_fourier_anneal": NON_NEGATIVE,
    "gan.d_group": NON_NEGATIVE, "gan.lr_g": OVER_ZERO, "gan.lr_d": OVER_ZERO, "gan.beta1": (0.0, 0.999999),
    "gan.beta2": (0.0, 0.999999), "gan.r1_gamma": (0.0, None), "gan.lazy_reg": POSITIVE,
    "vdm.timesteps": NON_NEGATIVE, "vdm.fourier_min": NON_NEGATIVE, "vdm.fourier_max": NON_NEGATIVE,
    "autoencoder.layers_per_block": POSITIVE, "autoencoder.latent_channels": POSITIVE,
    "autoencoder.norm_groups": POSITIVE, "autoencoder.pad": NON_NEGATIVE, "autoencoder.kl_weight": (0.0, None),
    "autoencoder.perceptual": (0.0, None), "autoencoder.scale_images": (2, None),
    "train.steps": POSITIVE, "train.batch_size": POSITIVE, "train.lr": OVER_ZERO, "train.weight_decay": (0.0, None),
    "train.warmup": NON_NEGATIVE, "train.grad_clip": (0.0, None), "train.ema_decay": (0.0, 0.999999999),
    "train.seed": (0, 2**32 - 1), "train.log_every": POSITIVE, "train.sample_every": NON_NEGATIVE,
    "train.save_every": NON_NEGATIVE,
    "train.mixed_precision": ("no", "fp16", "bf16"), "train.tracker": ("none", "tensorboard"),
    "train.lr_decay": ("none", "linear", "cosine"),
    "sample.steps": POSITIVE, "sample.n": POSITIVE,  # the sampler's options: `sample_options`
    "vdm.shape_loss": ("variance", "bound"), "autoencoder.recon": ("l1", "l2"),
    "distill.method": ("progressive", "consistency", "adversarial"), "distill.student_steps": POSITIVE,
    "distill.grid_steps": POSITIVE, "distill.rounds": POSITIVE, "distill.target_ema": (0.0, 0.999999), "distill.distance": ("pseudo-huber", "l2"), "distill.solver": ("ddim", "heun"),
    "distill.sigma_data": OVER_ZERO, "distill.timestep_scaling": OVER_ZERO, "distill.teacher_weight": (0.0, None), "distill.prediction": ("", "eps", "v", "x0"),
    "model.prediction": ("eps", "v", "x0"),
    "schedule.num_timesteps": POSITIVE, "schedule.beta_start": (0.0, 0.999, "exclusive"), "schedule.beta_end": (0.0, 0.999, "exclusive"),
    "schedule.beta_min": (0.0, None), "schedule.beta_max": OVER_ZERO, "schedule.grid_eps": (0.0, 0.999),
    "schedule.hidden": POSITIVE,
}
POSITIVE_LISTS = ("model.channels", "gan.d_channels", "autoencoder.channels")  # non-empty, every entry >= 1


def _get(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def check_ranges(cfg, ranges: dict[str, tuple], where: str) -> None:
    """Check the values of a config dataclass against a table like `RANGES` (dotted key -> (low, high[,
    "exclusive"]) or a tuple of choices): the first one out of range is one line naming `where` and the key."""
    for key, rule in ranges.items():
        v = _get(cfg, key)
        if rule and isinstance(rule[0], str):
            if v not in rule:
                raise TrilemmaError(f"{where}: {key} must be one of {', '.join(rule)}, got {v!r}")
            continue
        lo, hi, *exclusive = rule
        if (lo is not None and (v <= lo if exclusive else v < lo)) or (hi is not None and v > hi):
            bound = f"> {lo:g}" if exclusive else f">= {lo:g}"
            span = bound if hi is None else f"{bound} and <= {hi:g}"
            raise TrilemmaError(f"{where}: {key} must be {span}, got {v!r}")


def validate(cfg: "Config", where: str) -> "Config":
    """Check every value of a loaded config against `RANGES` and the cross-key rules (one line naming the
    file and the key), so that nothing invalid reaches training or sampling."""
    from .families import FAMILIES
    from .schedules import SCHEDULES, SPACINGS

    def fail(msg):
        raise TrilemmaError(f"{where}: {msg}")

    if cfg.family not in FAMILIES:
        fail(f"family {cfg.family!r} is not one of {', '.join(FAMILIES)}")
    choices = {"sample.sampler": tuple(SAMPLER_INFO), "sample.spacing": SPACINGS, "schedule.name": SCHEDULES}
    check_ranges(cfg, {**RANGES, **choices}, where)
    for key in POSITIVE_LISTS:
        v = _get(cfg, key)
        if not v or any(c < 1 for c in v):
            fail(f"{key} must be a non-empty list of positive integers, got {v!r}")
    uneven = [c for c in cfg.model.channels if c % cfg.model.norm_groups]
    if cfg.data.name != "toy2d" and uneven:
        fail(f"model.norm_groups ({cfg.model.norm_groups}) must divide every entry of model.channels, not {uneven}")
    if len(cfg.model.attention) != len(cfg.model.channels):
        fail(f"model.attention has {len(cfg.model.attention)} entries for {len(cfg.model.channels)} levels of "
             "model.channels")
    if cfg.schedule.beta_start > cfg.schedule.beta_end:
        fail(f"schedule.beta_start ({cfg.schedule.beta_start:g}) must not exceed schedule.beta_end "
             f"({cfg.schedule.beta_end:g})")
    if cfg.schedule.gamma_min >= cfg.schedule.gamma_max:
        fail(f"schedule needs gamma_max > gamma_min, got gamma_min = {cfg.schedule.gamma_min:g} and "
             f"gamma_max = {cfg.schedule.gamma_max:g}")
    if cfg.vdm.fourier_min > cfg.vdm.fourier_max:
        fail(f"vdm.fourier_min ({cfg.vdm.fourier_min}) must not exceed vdm.fourier_max ({cfg.vdm.fourier_max})")
    check_sampler_for_model(cfg.sample.sampler, FAMILIES[cfg.family].config_draws_x0(cfg), f"{where}: sample.")
    sample_options(cfg.sample, where)
    return cfg


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def _set_path(d: dict, dotted: str, value, where: str):
    """Apply one --set key=value override to a nested dict."""
    parts = dotted.split(".")
    node = d
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise TrilemmaError(f"{where}: --set {dotted}: {p!r} is not a section")
    node[parts[-1]] = value


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last silently)."""


def _no_duplicates(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def read_yaml(path: str | Path, what: str = "config file"):
    """A YAML (or JSON) file as Python data; a missing, unreadable, binary or invalid file is a one-line error
    naming it (and the line, for a syntax error or a repeated key)."""
    p = Path(path)
    if not p.is_file():
        raise TrilemmaError(f"{p}: {what} not found")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TrilemmaError(f"{p}: not a text file (a {what} is YAML)") from None
    except OSError as e:
        raise TrilemmaError(f"{p}: cannot read the {what} ({e.strerror or e})") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise TrilemmaError(f"{p}: not valid YAML{at}: {problem}") from None


def parse_override(item: str) -> tuple[str, object]:
    """`--set key=value`: the key and the value parsed as YAML."""
    if "=" not in item:
        raise TrilemmaError(f"--set {item!r}: expected key=value")
    key, value = item.split("=", 1)
    if not key.strip():
        raise TrilemmaError(f"--set {item!r}: empty key")
    try:
        return key.strip(), yaml.load(value, Loader=_StrictLoader)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise TrilemmaError(f"--set {item!r}: the value is not valid YAML ({problem})") from None


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Read a YAML (or JSON) config, apply `key=value` overrides (values parsed as YAML), validate."""
    raw: dict = {}
    where = str(path) if path else "config"
    if path is not None:
        raw = read_yaml(path)
        if raw is None:
            raise TrilemmaError(f"{where}: the config is empty (it needs at least `family` and `data`)")
        if not isinstance(raw, dict):
            raise TrilemmaError(f"{where}: a config is a mapping of sections, got a {type(raw).__name__}")
    for item in overrides:
        key, value = parse_override(item)
        _set_path(raw, key, value, where)
    cfg = from_dict(Config, raw, where)
    return validate(cfg, where)


def config_from_json(text: str, where: str) -> Config:
    try:
        raw = json.loads(text)["config"]
    except (ValueError, KeyError, TypeError):
        raise TrilemmaError(f"{where}: not a trilemma checkpoint config") from None
    return validate(from_dict(Config, raw, where), where)
