"""Samplers: plain functions of (denoiser, schedule, x, ts) in the k-diffusion style.

Every sampler has the signature `sample_<name>(denoiser, schedule, x, ts, *, generator=None,
callback=None, **options)`, where `ts` is a decreasing grid t_N > ... > t_0 = 0 (see
`schedules.time_grid`); step skipping is just a shorter `ts`. The denoiser maps (z_t, t) to
x0_hat; eps_hat is derived through the schedule. NFE is counted by `denoiser.CountNFE`.
Noise levels are computed once per call in float64, outside the loop.

A sampler's options are declared once, in its signature: `eta: Annotated[float, Option(...)] = 0.0`.
`SAMPLER_INFO` registers the samplers by name; the CLI flags (`--eta`), the config keys (`sample.eta`),
the bench grid keys and every range check derive from these two places (`sampler_options`).
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Callable

import numpy as np
import torch

from .denoiser import draws_x0, seed_latents
from .errors import TrilemmaError
from .noise import SampleNoise, initial_noise, randn, randn_like  # noqa: F401  (randn: public here too)
from .schedules import Schedule, alpha_sigma_of, posterior, time_grid

__all__ = [
    "sample_ancestral",
    "sample_ddim",
    "sample_ddim_inverse",
    "sample_dpmpp_2m",
    "sample_langevin",
    "sample_consistency",
    "slerp",
    "ddim_interpolate",
    "SAMPLERS",
    "SAMPLER_INFO",
    "Option",
    "SamplerOption",
    "SamplerInfo",
    "sampler_options",
    "all_sampler_options",
    "check_sampler_options",
    "SampleNoise",
    "default_spacing",
    "generate",
    "initial_noise",
]

Callback = Callable[[dict], None] | None
LANGEVIN_STEP_SIZE = 0.5  # eta = 0.5 sigma_t^2: stable (ULA needs eta < 2 sigma_t^2 at most), mixes in a few steps


@dataclass(frozen=True)
class Option:
    """The rule of a sampler option, declared in the sampler's signature as `Annotated[type, Option(...)]`.

    `low` / `high` bound the value (`above`: strictly above `low`); `tag` names the value in bench row keys
    (`eta` gives "-eta0.5"); `help` is the CLI's help text and the config's documentation."""

    help: str
    low: float | None = None
    high: float | None = None
    above: bool = False
    tag: str = ""


@dataclass(frozen=True)
class SamplerOption:
    """One option as the rest of the library sees it: name, type (int, float or bool), default and rule."""

    name: str
    type: type
    default: Any
    rule: Option

    @property
    def flag(self) -> str:
        """Its command-line flag."""
        return "--" + self.name.replace("_", "-")

    def describe(self) -> str:
        """The allowed values in words, e.g. "a number in [0, 1]"."""
        r, what = self.rule, {int: "an integer", float: "a number", bool: "true or false"}[self.type]
        if r.low is not None and r.high is not None:
            return f"{what} in {'(' if r.above else '['}{r.low:g}, {r.high:g}]"
        if r.low is not None:
            return f"{what} {'>' if r.above else '>='} {r.low:g}"
        return what

    def accepts(self, v) -> bool:
        """Whether `v` is a value of this option: its type (NumPy scalars included; an int for a float, never a
        bool for a number) and within its rule."""
        if isinstance(v, (bool, np.bool_)) != (self.type is bool):
            return False
        if self.type is bool:
            return True
        if not isinstance(v, numbers.Integral if self.type is int else numbers.Real):
            return False
        try:
            if self.type is float and not math.isfinite(float(v)):
                return False
        except OverflowError:  # an int beyond float's range
            return False
        r = self.rule
        return ((r.low is None or (v > r.low if r.above else v >= r.low)) and (r.high is None or v <= r.high))

    def key_part(self, v) -> str:
        """This option's part of a bench row key."""
        return f"-{self.rule.tag or self.name}{v:g}" if self.type is not bool else (f"-{self.rule.tag}" if v else "")


@functools.cache
def sampler_options(fn: Callable) -> tuple[SamplerOption, ...]:
    """The options a sampler function declares: its keyword-only parameters annotated with an `Option` (read once
    per function: `checked` and `generate` ask on every call)."""
    hints = typing.get_type_hints(fn, include_extras=True)
    out = []
    for name, p in inspect.signature(fn).parameters.items():
        hint = hints.get(name)
        if p.kind is p.KEYWORD_ONLY and typing.get_origin(hint) is Annotated:
            base, *extra = typing.get_args(hint)
            rules = [e for e in extra if isinstance(e, Option)]
            if rules:
                out.append(SamplerOption(name, base, p.default, rules[0]))
    return tuple(out)


def checked(fn: Callable) -> Callable:
    """Check the options of every call of a sampler (a direct call too) against their declared rules."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        for o in sampler_options(fn):
            if o.name in kwargs and not o.accepts(kwargs[o.name]):
                raise ValueError(f"{o.name} must be {o.describe()}, got {kwargs[o.name]!r}")
        return fn(*args, **kwargs)

    return wrapper


def _levels(schedule: Schedule, ts) -> tuple[list[float], list[float], list[float]]:
    """alpha, sigma and gamma at every grid time, as Python floats (float64)."""
    ts = torch.as_tensor(ts, dtype=torch.float64)
    with torch.no_grad():
        g = schedule(ts).double().cpu()
    a, s = alpha_sigma_of(g)
    return a.tolist(), s.tolist(), g.tolist()


def _grid_list(ts) -> list[float]:
    """A time grid as Python floats (float64)."""
    return torch.as_tensor(ts, dtype=torch.float64).tolist()


@torch.no_grad()
def sample_ancestral(denoiser, schedule: Schedule, x, ts, *, generator=None, callback: Callback = None):
    """DDPM ancestral sampling: z_s ~ q(z_s | z_t, x0_hat) (Ho et al. 2020, eq. 6-7; Alg. 2).

    With a DDGAN generator as the denoiser this is the DDGAN sampler (Xiao et al. 2022, eq. 9).
    """
    t_list = _grid_list(ts)
    c_z, c_x, var = posterior(schedule, torch.tensor(t_list[:-1], dtype=torch.float64), torch.tensor(t_list[1:], dtype=torch.float64))
    c_z, c_x, std = c_z.tolist(), c_x.tolist(), var.clamp(min=0).sqrt().tolist()
    for i, (t, s) in enumerate(zip(t_list[:-1], t_list[1:])):
        x0 = denoiser(x, t)
        x = c_z[i] * x + c_x[i] * x0
        if s > 0:
            x = x + std[i] * randn_like(x, generator)
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "denoised": x0})
    return x


@checked
@torch.no_grad()
def sample_ddim(denoiser, schedule: Schedule, x, ts, *,
                eta: Annotated[float, Option("noise scale: 0 deterministic, 1 the DDPM posterior variance",
                                             low=0, high=1, tag="eta")] = 0.0,
                clip_x0: Annotated[bool, Option("clip x0_hat to [-1, 1], the data's range (diffusers' clip_sample)",
                                                tag="clip")] = False,
                generator=None, callback: Callback = None):
    """DDIM (Song, Meng, Ermon 2021, eq. 12 and 16): eta = 0 is deterministic, eta = 1 has the
    DDPM posterior variance."""
    t_list = _grid_list(ts)
    alpha, sigma, _ = _levels(schedule, t_list)
    for i, t in enumerate(t_list[:-1]):
        a_t, s_t, a_s, s_s = alpha[i], sigma[i], alpha[i + 1], sigma[i + 1]
        x0 = denoiser(x, t)
        # sigma_eta^2 = eta^2 * sigma_s^2 / sigma_t^2 * (1 - alpha_t^2 / alpha_s^2)  (eq. 16)
        std = eta * math.sqrt(max(s_s**2 / s_t**2 * (1 - a_t**2 / a_s**2), 0.0))
        # x_s = alpha_s x0 + c eps with eps = (x - alpha_t x0) / sigma_t (eq. 12), c = sqrt(sigma_s^2 - std^2),
        # collected into two coefficients so the update is two tensor ops
        c = math.sqrt(max(s_s**2 - std**2, 0.0)) / s_t
        if clip_x0:  # the x0 term takes the clipped x0_hat, eps stays the network's (as diffusers' DDIMScheduler)
            x0_c = x0.clamp(-1.0, 1.0)
            x, x0 = torch.add(c * (x - a_t * x0), x0_c, alpha=a_s), x0_c
        else:
            x = torch.add(c * x, x0, alpha=a_s - c * a_t)
        if std > 0:
            x = x + std * randn_like(x, generator)
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "denoised": x0})
    return x


@torch.no_grad()
def sample_ddim_inverse(denoiser, schedule: Schedule, x, ts, *, fixed_point_iters: int = 0, callback: Callback = None):
    """DDIM inversion x0 -> x_T along the reversed grid (Song et al. 2021, sec. 4.3; eq. 13 run
    backwards). Each step solves z_{t'} = alpha_{t'} (z_t - sigma_t eps) / alpha_t + sigma_{t'} eps
    with eps = eps_hat(z_{t'}, t'); the usual inversion evaluates eps at the current point, and
    `fixed_point_iters` > 0 refines it by fixed-point iteration, which makes DDIM(eta = 0)
    sampling from the result reproduce x exactly when it converges."""
    t_list = _grid_list(ts)[::-1]  # 0 = t_0 < t_1 < ... < t_N
    alpha, sigma, _ = _levels(schedule, t_list)
    for i, t_next in enumerate(t_list[1:]):
        a_t, s_t, a_n, s_n = alpha[i], sigma[i], alpha[i + 1], sigma[i + 1]
        y = x
        for _ in range(fixed_point_iters + 1):
            x0 = denoiser(y, t_next)
            eps = (y - a_n * x0) / s_n
            y = a_n * (x - s_t * eps) / a_t + s_n * eps
        x = y
        if callback is not None:
            callback({"i": i, "t": t_next, "x": x, "denoised": x0})
    return x


@torch.no_grad()
def sample_dpmpp_2m(denoiser, schedule: Schedule, x, ts, *, generator=None, callback: Callback = None):
    """DPM-Solver++(2M), multistep second order in the data prediction (Lu et al. 2022, Alg. 2),
    first order on the first step and on the last step to sigma = 0 (as diffusers does)."""
    t_list = _grid_list(ts)
    alpha, sigma, gamma = _levels(schedule, t_list)
    lam = [-g / 2 for g in gamma]  # lambda = log(alpha / sigma) = -gamma / 2
    x0_prev, h_prev = None, None
    for i, t in enumerate(t_list[:-1]):
        x0 = denoiser(x, t)
        if sigma[i + 1] == 0.0:
            x = x0  # the step to sigma = 0 lands on the data prediction
        else:
            h = lam[i + 1] - lam[i]
            phi = -math.expm1(-h)  # 1 - e^{-h}
            # first order after a zero-length step (a repeated time) too: no slope to extrapolate from
            d = x0 if not h_prev else x0 + (x0 - x0_prev) * (h / (2 * h_prev))
            x = (sigma[i + 1] / sigma[i]) * x + alpha[i + 1] * phi * d
            h_prev = h
        x0_prev = x0
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "denoised": x0})
    return x


@torch.no_grad()
def sample_consistency(denoiser, schedule: Schedule, x, ts, *, generator=None, callback: Callback = None):
    """Multistep consistency sampling (Song et al. 2023, Alg. 1): x0 = f(z_t, t) from the denoiser (a consistency
    model maps any point of a trajectory to its end), then fresh noise to the next grid time,
    z_s = alpha_s x0 + sigma_s eps, independent of z_t; the last step returns x0. One step from t_max is one
    network evaluation; each further step trades time for quality."""
    t_list = _grid_list(ts)
    alpha, sigma, _ = _levels(schedule, t_list)
    for i, t in enumerate(t_list[:-1]):
        x0 = denoiser(x, t)
        x = x0 if t_list[i + 1] == 0 else alpha[i + 1] * x0 + sigma[i + 1] * randn_like(x0, generator)
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "denoised": x0})
    return x


@checked
@torch.no_grad()
def sample_langevin(denoiser, schedule: Schedule, x, ts, *,
                    steps_per_level: Annotated[int, Option("updates per noise level", low=1, tag="x")] = 1,
                    step_size: Annotated[float, Option("step eta = step_size * sigma_t^2", low=0, above=True,
                                                       tag="h")] = LANGEVIN_STEP_SIZE,
                    denoise: bool = True, generator=None, callback: Callback = None):
    """Annealed Langevin dynamics (Song & Ermon 2019, Alg. 1) over the grid's noise levels t > 0: at each,
    `steps_per_level` updates z <- z + eta score(z) + sqrt(2 eta) eps with score(z) = -eps_hat(z, t) / sigma_t
    (the model's score of p_t) and eta = step_size * sigma_t^2 (their eta_i proportional to sigma_i^2).
    z passes from one level to the next unchanged: neighbouring marginals of a variance-preserving process are
    close, while rescaling by alpha_s / alpha_t would also amplify the noise part of z (and diverges when
    alpha_1 is small). The grid's t = 0 is not a level: with `denoise` the chain's end is mapped to x0_hat at the
    last level (one more evaluation, Tweedie's formula), otherwise it is returned as is. The score needs
    x0_hat = E[x | z_t]; a DDGAN generator draws a sample instead and is refused by `generate`."""
    t_list = _grid_list(ts)
    alpha, sigma, _ = _levels(schedule, t_list)
    levels = [i for i, t in enumerate(t_list) if t > 0]  # every grid time but t = 0 (sigma_0 > 0 for VDM)
    n = 0
    for j, i in enumerate(levels):
        eta = step_size * sigma[i] ** 2
        for _ in range(steps_per_level):
            x0 = denoiser(x, t_list[i])
            # eta * score = -(eta / sigma) * eps_hat, eps_hat = (z - alpha x0_hat) / sigma
            x = x - (eta / sigma[i] ** 2) * (x - alpha[i] * x0) + math.sqrt(2 * eta) * randn_like(x, generator)
            if callback is not None:
                callback({"i": n, "t": t_list[i], "x": x, "denoised": x0})
            n += 1
    if denoise and levels:
        x = denoiser(x, t_list[levels[-1]])
        if callback is not None:
            callback({"i": n, "t": t_list[levels[-1]], "x": x, "denoised": x})
    return x


@dataclass(frozen=True)
class SamplerInfo:
    """A registered sampler: its function (whose signature declares its options), its name in tables, the
    time grid it uses unless told otherwise, and whether it needs eps_hat to be a score."""

    fn: Callable
    title: str
    spacing: str = "leading"
    needs_score: bool = False  # the score -eps_hat / sigma needs x0_hat = E[x | z_t] (`denoiser.StochasticDenoiser`)
    extra_nfe: Callable[[int, dict], int] | None = None  # network evaluations beyond one per step, given the options

    @property
    def options(self) -> tuple[SamplerOption, ...]:
        return sampler_options(self.fn)

    def nfe(self, steps: int, options: dict) -> int:
        """Network evaluations for a grid of `steps` steps."""
        return steps if self.extra_nfe is None else steps + self.extra_nfe(steps, options)


# The samplers by name: a new sampler is its function plus one line here. DPM-Solver's linspace grid (Lu et al.
# 2022) for dpmpp; noise levels evenly spaced in log-SNR for langevin (the geometric sigmas of Song & Ermon 2019);
# trailing for consistency (its first step starts at t = 1, where one-step sampling must); diffusers' leading grid
# for the others.
SAMPLER_INFO: dict[str, SamplerInfo] = {
    "ddpm": SamplerInfo(sample_ancestral, "DDPM ancestral"),
    "ancestral": SamplerInfo(sample_ancestral, "ancestral"),
    "ddim": SamplerInfo(sample_ddim, "DDIM"),
    "dpmpp": SamplerInfo(sample_dpmpp_2m, "DPM-Solver++(2M)", spacing="linspace"),
    "langevin": SamplerInfo(sample_langevin, "Langevin", spacing="logsnr", needs_score=True,
                            extra_nfe=lambda steps, o: steps * (o["steps_per_level"] - 1) + 1),  # + the final denoise
    "consistency": SamplerInfo(sample_consistency, "consistency", spacing="trailing"),  # trailing: the first step is t = 1
}
SAMPLERS = {name: info.fn for name, info in SAMPLER_INFO.items()}


def all_sampler_options() -> dict[str, SamplerOption]:
    """Every option of every sampler by name (an option two samplers share is declared alike in both)."""
    out: dict[str, SamplerOption] = {}
    for info in SAMPLER_INFO.values():
        for o in info.options:
            if out.setdefault(o.name, o) != o:
                raise TypeError(f"option {o.name} is declared differently by two samplers")
    return out


def check_sampler_options(sampler: str, given: dict, where: str, flag: Callable[[str], str] | None = None) -> dict:
    """The options of `sampler` from `given` (name -> value, None = not given), defaults filled in. An option
    the sampler does not take is refused, whatever its value, the same way for every sampler; values are
    checked against their declared rules. `flag` names an option in messages (the CLI's --eta, a grid's eta)."""
    flag = flag or (lambda k: k)
    own = {o.name: o for o in SAMPLER_INFO[sampler].options}
    stray = [k for k, v in given.items() if v is not None and k not in own]
    if stray:
        takes = f"it takes {', '.join(flag(k) for k in own)}" if own else "it takes no options"
        raise TrilemmaError(f"{where}{', '.join(flag(k) for k in stray)}: not an option of sampler {sampler} ({takes})")
    out = {}
    for k, o in own.items():
        v = o.default if given.get(k) is None else given[k]
        if not o.accepts(v):
            raise TrilemmaError(f"{where}{flag(k)} must be {o.describe()}, got {v!r}")
        out[k] = o.type(v)
    return out


def default_spacing(sampler: str) -> str:
    """The time grid a sampler uses unless told otherwise (`SamplerInfo.spacing`)."""
    return SAMPLER_INFO[sampler].spacing


def slerp(a: torch.Tensor, b: torch.Tensor, w: float) -> torch.Tensor:
    """Spherical interpolation between two noises, per sample (Shoemake 1985; DDIM sec. 5.4)."""
    af, bf = a.flatten(1), b.flatten(1)  # (B, D)
    cos = (af * bf).sum(1) / (af.norm(dim=1) * bf.norm(dim=1))
    theta = torch.arccos(cos.clamp(-1, 1))[:, None]  # (B, 1)
    sin = torch.sin(theta)
    wa = torch.where(sin > 1e-6, torch.sin((1 - w) * theta) / sin, torch.full_like(sin, 1 - w))
    wb = torch.where(sin > 1e-6, torch.sin(w * theta) / sin, torch.full_like(sin, w))
    return (wa * af + wb * bf).view_as(a)


@torch.no_grad()
def ddim_interpolate(denoiser, schedule: Schedule, x_a, x_b, ts, weights) -> torch.Tensor:
    """Invert two data batches with DDIM, slerp their noises and decode: (len(weights), *x_a.shape)."""
    z_a = sample_ddim_inverse(denoiser, schedule, x_a, ts)
    z_b = sample_ddim_inverse(denoiser, schedule, x_b, ts)
    return torch.stack([sample_ddim(denoiser, schedule, slerp(z_a, z_b, float(w)), ts) for w in weights])


def check_sampler_for_model(sampler: str, draws_x0: bool, where: str = "") -> None:
    """The one rule on which model a sampler can serve: a sampler that needs the score -eps_hat / sigma from
    E[x | z_t] (langevin) cannot use a model that draws x0 at random (a DDGAN generator, `draws_x0`). For configs
    and grids that know the family; `check_sampler_supports` applies it to a denoiser."""
    if SAMPLER_INFO[sampler].needs_score and draws_x0:
        raise TrilemmaError(f"{where}sampler {sampler} needs the score -eps_hat / sigma from E[x | z_t]; a DDGAN "
                            "generator draws x0 at random, so its eps_hat is not a score (use ddpm or ddim)")


def check_sampler_supports(denoiser, sampler: str) -> None:
    """A one-line error for a sampler the denoiser cannot serve (`check_sampler_for_model`)."""
    if sampler not in SAMPLER_INFO:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLER_INFO)}")
    check_sampler_for_model(sampler, draws_x0(denoiser))


def generate(
    denoiser,
    n: int,
    sample_shape: tuple[int, ...],
    *,
    sampler: str = "ddim",
    steps: int = 50,
    spacing: str | None = None,
    seed: int = 0,
    noise: torch.Tensor | None = None,
    device=None,
    callback: Callback = None,
    first_index: int = 0,
    **options,
) -> torch.Tensor:
    """Draw samples first_index .. first_index + n - 1 of a run: x_T from `noise` (then n = len(noise)) or from
    each sample's own noise stream (`SampleNoise`), then the named sampler on `time_grid(steps, spacing)` (by default
    the sampler's own grid, `default_spacing`, as `trilemma sample` uses) with its `options` (e.g. eta for ddim; see
    `check_sampler_options`). Every random number a sample sees depends only on
    (seed, its index), so the result does not depend on how the samples are split into batches or devices."""
    check_sampler_supports(denoiser, sampler)
    options = check_sampler_options(sampler, options, "generate: ")
    schedule = denoiser.schedule
    ts = time_grid(schedule, steps, spacing or default_spacing(sampler))
    n = len(noise) if noise is not None else n
    generator = SampleNoise(seed, first_index, n)
    shape = (n, *sample_shape)
    if noise is None:
        noise = generator.randn(shape)
    else:
        generator.skip(shape)
    x = noise.to(device=device, dtype=torch.float32)
    seed_latents(denoiser, generator)
    try:
        return SAMPLERS[sampler](denoiser, schedule, x, ts, generator=generator, callback=callback, **options)
    finally:
        seed_latents(denoiser, None)  # this run's noise is not left attached to the denoiser
