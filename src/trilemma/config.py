"""Typed run configuration: nested dataclasses loaded from YAML, saved as JSON beside checkpoints.

Unknown keys and mistyped values are errors (one line naming the file and the key), so a typo
never silently trains the default. No class lookup by string, no exec, no pickles.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .data import DataConfig
from .errors import TrilemmaError
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
    mapping_layers: int = 3  # image generator: MLP from z into the UNet's AdaGN conditioning
    tanh: bool = True  # image generator: x0' = tanh(UNet output), in [-1, 1] (false for unbounded latents)
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
class TrainConfig:
    steps: int = 10_000  # optimizer steps
    batch_size: int = 256  # per process
    lr: float = 1e-3  # peak learning rate (AdamW; ddgan uses gan.lr_g and gan.lr_d)
    weight_decay: float = 0.0
    warmup: int = 200  # linear warm-up steps
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    ema_decay: float = 0.999  # EMA of the weights, used for sampling
    seed: int = 0
    log_every: int = 100  # tracker logging interval (steps)
    sample_every: int = 0  # write a sample grid every N steps (0: only at the end)
    save_every: int = 2000  # checkpoint interval (steps); a final checkpoint is always written
    mixed_precision: str = "no"  # no | fp16 | bf16 (Accelerate)
    tracker: str = "none"  # none | tensorboard


@dataclass
class SampleConfig:
    sampler: str = "ddim"  # sampler for the periodic grids: ddpm | ancestral | ddim | dpmpp | langevin
    steps: int = 50
    eta: float = 0.0
    spacing: str = "leading"  # time grid: leading | trailing | linspace | quadratic | logsnr
    n: int = 64  # samples per grid


@dataclass
class Config:
    family: str = "ddpm"  # ddpm | ddgan | vdm | autoencoder (a latent model is one of the first three with latent.autoencoder)
    data: DataConfig = field(default_factory=DataConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    gan: GANConfig = field(default_factory=GANConfig)  # family ddgan only
    vdm: VDMConfig = field(default_factory=VDMConfig)  # family vdm only
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)  # family autoencoder only
    latent: LatentConfig = field(default_factory=LatentConfig)  # ddpm, vdm, ddgan on an autoencoder's latents
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)


FAMILY_NAMES = ("ddpm", "ddgan", "vdm", "autoencoder")


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


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
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads 3e-4 (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp in (str, bool) and isinstance(value, tp):
        return value
    raise TrilemmaError(f"{where}: {key} must be {_type_name(tp)}, got {value!r}")


def from_dict(cls, data: dict, where: str, prefix: str = ""):
    """Build dataclass `cls` from a nested dict; unknown keys and wrong types raise TrilemmaError."""
    if not isinstance(data, dict):
        raise TrilemmaError(f"{where}: {prefix.rstrip('.') or 'the config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
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


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Read a YAML (or JSON) config, apply `key=value` overrides (values parsed as YAML), validate."""
    raw: dict = {}
    where = str(path) if path else "config"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise TrilemmaError(f"{p}: config file not found")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f" (line {mark.line + 1})" if mark else ""
            raise TrilemmaError(f"{p}: not valid YAML{at}") from None
    for item in overrides:
        if "=" not in item:
            raise TrilemmaError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        _set_path(raw, key.strip(), yaml.safe_load(value), where)
    cfg = from_dict(Config, raw, where)
    if cfg.family not in FAMILY_NAMES:
        raise TrilemmaError(f"{where}: family {cfg.family!r} is not one of {', '.join(FAMILY_NAMES)}")
    return cfg


def config_from_json(text: str, where: str) -> Config:
    try:
        return from_dict(Config, json.loads(text)["config"], where)
    except (ValueError, KeyError, TypeError):
        raise TrilemmaError(f"{where}: not a trilemma checkpoint config") from None
