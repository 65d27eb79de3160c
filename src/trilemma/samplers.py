"""Samplers: plain functions of (denoiser, schedule, x, ts) in the k-diffusion style.

Every sampler has the signature `sample_<name>(denoiser, schedule, x, ts, *, generator=None,
callback=None, **options)`, where `ts` is a decreasing grid t_N > ... > t_0 = 0 (see
`schedules.time_grid`); step skipping is just a shorter `ts`. The denoiser maps (z_t, t) to
x0_hat; eps_hat is derived through the schedule. NFE is counted by `denoiser.CountNFE`.
Noise levels are computed once per call in float64, outside the loop.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from .errors import TrilemmaError
from .schedules import Schedule, alpha_sigma_of, posterior

__all__ = [
    "sample_ancestral",
    "sample_ddim",
    "sample_ddim_inverse",
    "sample_dpmpp_2m",
    "sample_langevin",
    "slerp",
    "ddim_interpolate",
    "SAMPLERS",
    "SampleNoise",
    "default_spacing",
    "generate",
    "initial_noise",
]

Callback = Callable[[dict], None] | None
LANGEVIN_STEP_SIZE = 0.5  # eta = 0.5 sigma_t^2: stable (ULA needs eta < 2 sigma_t^2 at most), mixes in a few steps


class SampleNoise:
    """Per-sample noise (EDM's StackedRandomGenerator, Karras et al. 2022): row k of every draw comes from
    sample `first + k`'s own generator, a NumPy PCG64 seeded by SeedSequence((seed, first + k, d)) (full-width
    seeds: torch's CPU generator keeps only 32 bits of a seed, which makes equal streams likely among tens of
    thousands of samples). A sample's noise (x_T, every step's noise, a DDGAN latent) therefore depends only on
    (seed, sample index), never on the batch it is drawn in, the number of processes or the device. x_T is each
    sample's first draw; `skip` passes over it when x_T is given.

    Each per-sample draw size d has its own stream, drawn in blocks of max(1, block // d) draws per sample, so
    a 2-D toy's thousands of samples do not pay a Python call per sample and step; the block depends only on d,
    so the numbers a sample receives do not depend on the batch either. Nothing is drawn before it is needed:
    a deterministic sampler started from a given x_T costs nothing here."""

    def __init__(self, seed: int, first: int, n: int, block: int = 256):
        if not 0 <= seed < 2**63:
            raise TrilemmaError(f"seed must be in [0, 2^63), got {seed}")
        self.seed, self.first, self.n, self.block = seed, first, n, block
        self._streams: dict[int, dict] = {}  # per-sample size d -> generators, current block, draws taken

    def _take(self, d: int, materialise: bool = True) -> torch.Tensor | None:
        st = self._streams.setdefault(d, {"gens": None, "buf": None, "taken": 0})
        m = max(1, self.block // d)  # draws per block, a function of d only
        i = st["taken"]
        st["taken"] += 1
        if not materialise and st["buf"] is None and i < m:
            return None  # a skip inside the first block: drawn (and passed over) if a later draw needs the block
        if st["gens"] is None:
            st["gens"] = [np.random.Generator(np.random.PCG64(np.random.SeedSequence((self.seed, self.first + k, d))))
                          for k in range(self.n)]
        while st["buf"] is None or i >= st["start"] + m:  # next block (skipped draws are drawn and passed over)
            buf = np.empty((self.n, m * d), dtype=np.float32)
            for k, g in enumerate(st["gens"]):
                g.standard_normal(out=buf[k], dtype=np.float32)
            st["start"] = 0 if st["buf"] is None else st["start"] + m
            st["buf"] = torch.from_numpy(buf)
        j = i - st["start"]
        return st["buf"][:, j * d : (j + 1) * d]

    def randn(self, shape, device=None, dtype=torch.float32) -> torch.Tensor:
        """Standard normal noise of `shape` = (n, ...), row k from sample first + k."""
        shape = tuple(shape)
        if shape[0] != self.n:
            raise ValueError(f"SampleNoise holds {self.n} samples, asked for {shape[0]}")
        return self._take(math.prod(shape[1:])).reshape(shape).to(device=device, dtype=dtype)

    def skip(self, shape) -> None:
        """Pass over one draw of `shape` (x_T when it is given rather than drawn)."""
        self._take(math.prod(tuple(shape)[1:]), materialise=False)


Generator = torch.Generator | SampleNoise | None


def randn(shape, generator: Generator, device=None, dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise on `device`, drawn on the generator's device (so a CPU generator gives
    the same numbers whatever device the result lives on); a `SampleNoise` draws each row from its sample."""
    if isinstance(generator, SampleNoise):
        return generator.randn(shape, device, dtype)
    draw_on = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=draw_on, dtype=dtype).to(device)


def randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like x (see `randn`)."""
    return randn(x.shape, generator, x.device, x.dtype)


def _levels(schedule: Schedule, ts) -> tuple[list[float], list[float], list[float]]:
    """alpha, sigma and gamma at every grid time, as Python floats (float64)."""
    ts = torch.as_tensor(ts, dtype=torch.float64)
    with torch.no_grad():
        g = schedule(ts).double().cpu()
    a, s = alpha_sigma_of(g)
    return a.tolist(), s.tolist(), g.tolist()


def _times(ts) -> list[float]:
    return torch.as_tensor(ts, dtype=torch.float64).tolist()


@torch.no_grad()
def sample_ancestral(denoiser, schedule: Schedule, x, ts, *, generator=None, callback: Callback = None):
    """DDPM ancestral sampling: z_s ~ q(z_s | z_t, x0_hat) (Ho et al. 2020, eq. 6-7; Alg. 2).

    With a DDGAN generator as the denoiser this is the DDGAN sampler (Xiao et al. 2022, eq. 9).
    """
    t_list = _times(ts)
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


@torch.no_grad()
def sample_ddim(denoiser, schedule: Schedule, x, ts, *, eta: float = 0.0, generator=None, callback: Callback = None):
    """DDIM (Song, Meng, Ermon 2021, eq. 12 and 16): eta = 0 is deterministic, eta = 1 has the
    DDPM posterior variance."""
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    t_list = _times(ts)
    alpha, sigma, _ = _levels(schedule, t_list)
    for i, t in enumerate(t_list[:-1]):
        a_t, s_t, a_s, s_s = alpha[i], sigma[i], alpha[i + 1], sigma[i + 1]
        x0 = denoiser(x, t)
        # sigma_eta^2 = eta^2 * sigma_s^2 / sigma_t^2 * (1 - alpha_t^2 / alpha_s^2)  (eq. 16)
        std = eta * math.sqrt(max(s_s**2 / s_t**2 * (1 - a_t**2 / a_s**2), 0.0))
        # x_s = alpha_s x0 + c eps with eps = (x - alpha_t x0) / sigma_t (eq. 12), c = sqrt(sigma_s^2 - std^2),
        # collected into two coefficients so the update is two tensor ops
        c = math.sqrt(max(s_s**2 - std**2, 0.0)) / s_t
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
    t_list = _times(ts)[::-1]  # 0 = t_0 < t_1 < ... < t_N
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
    t_list = _times(ts)
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
def sample_langevin(denoiser, schedule: Schedule, x, ts, *, steps_per_level: int = 1, step_size: float = LANGEVIN_STEP_SIZE,
                    denoise: bool = True, generator=None, callback: Callback = None):
    """Annealed Langevin dynamics (Song & Ermon 2019, Alg. 1) over the grid's noise levels t > 0: at each,
    `steps_per_level` updates z <- z + eta score(z) + sqrt(2 eta) eps with score(z) = -eps_hat(z, t) / sigma_t
    (the model's score of p_t) and eta = step_size * sigma_t^2 (their eta_i proportional to sigma_i^2).
    z passes from one level to the next unchanged: neighbouring marginals of a variance-preserving process are
    close, while rescaling by alpha_s / alpha_t would also amplify the noise part of z (and diverges when
    alpha_1 is small). The grid's t = 0 is not a level: with `denoise` the chain's end is mapped to x0_hat at the
    last level (one more evaluation, Tweedie's formula), otherwise it is returned as is. The score needs
    x0_hat = E[x | z_t]; a DDGAN generator draws a sample instead and is refused by `generate`."""
    if steps_per_level < 1 or not step_size > 0:
        raise ValueError(f"steps_per_level must be >= 1 and step_size > 0, got {steps_per_level}, {step_size}")
    t_list = _times(ts)
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


SAMPLERS = {
    "ddpm": sample_ancestral,
    "ancestral": sample_ancestral,
    "ddim": sample_ddim,
    "dpmpp": sample_dpmpp_2m,
    "langevin": sample_langevin,
}
SAMPLER_OPTIONS = {"ddim": ("eta",), "langevin": ("steps_per_level", "step_size")}  # options generate() passes on
OPTION_DEFAULTS = {"eta": 0.0, "steps_per_level": 1, "step_size": LANGEVIN_STEP_SIZE}


def check_sampler_options(sampler: str, given: dict, where: str, flag=lambda k: k) -> dict:
    """The options of `sampler` from `given` (name -> value, None = not given), defaults filled in. An option
    the sampler does not take is refused, whatever its value, the same way for every sampler; values are
    range-checked. `flag` names an option in messages (the CLI's --eta, a grid's eta)."""
    own = SAMPLER_OPTIONS.get(sampler, ())
    stray = [k for k, v in given.items() if v is not None and k not in own]
    if stray:
        takes = f"it takes {', '.join(flag(k) for k in own)}" if own else "it takes no options"
        raise TrilemmaError(f"{where}{', '.join(flag(k) for k in stray)}: not an option of sampler {sampler} ({takes})")
    out = {k: OPTION_DEFAULTS[k] if given.get(k) is None else given[k] for k in own}
    checks = {"eta": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1, "in [0, 1]"),
              "steps_per_level": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
              "step_size": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0,
                            "a finite number > 0")}
    for k, v in out.items():
        ok, what = checks[k]
        if not ok(v):
            raise TrilemmaError(f"{where}{flag(k)} must be {what}, got {v!r}")
    return {k: float(v) if k != "steps_per_level" else v for k, v in out.items()}


def default_spacing(sampler: str) -> str:
    """The time grid a sampler uses unless told otherwise: DPM-Solver's linspace (Lu et al. 2022) for
    dpmpp, noise levels evenly spaced in log-SNR for langevin (the geometric sigmas of Song & Ermon 2019),
    diffusers' leading grid for the others."""
    return {"dpmpp": "linspace", "langevin": "logsnr"}.get(sampler, "leading")


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
    """The one rule on which model a sampler can serve: Langevin needs the score -eps_hat / sigma from
    E[x | z_t], and a model that draws x0 at random (a DDGAN generator, `draws_x0`) has none. For configs and
    grids that know the family; `check_sampler_supports` applies it to a denoiser."""
    if sampler == "langevin" and draws_x0:
        raise TrilemmaError(f"{where}sampler langevin needs the score -eps_hat / sigma from E[x | z_t]; a DDGAN "
                            "generator draws x0 at random, so its eps_hat is not a score (use ddpm or ddim)")


def check_sampler_supports(denoiser, sampler: str) -> None:
    """A one-line error for a sampler the denoiser cannot serve (`check_sampler_for_model`)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    check_sampler_for_model(sampler, any(hasattr(m, "latent_generator") for m in denoiser.modules()))


def generate(
    denoiser,
    n: int,
    sample_shape: tuple[int, ...],
    *,
    sampler: str = "ddim",
    steps: int = 50,
    eta: float = 0.0,
    spacing: str = "leading",
    seed: int = 0,
    noise: torch.Tensor | None = None,
    device=None,
    callback: Callback = None,
    steps_per_level: int = 1,
    step_size: float = LANGEVIN_STEP_SIZE,
    first_index: int = 0,
) -> torch.Tensor:
    """Draw samples first_index .. first_index + n - 1 of a run: x_T from `noise` (then n = len(noise)) or from
    each sample's own noise stream (`SampleNoise`), then the named sampler on `time_grid(steps, spacing)` (`eta`
    for ddim; `steps_per_level` and `step_size` for langevin). Every random number a sample sees depends only on
    (seed, its index), so the result does not depend on how the samples are split into batches or devices."""
    from .denoiser import seed_latents
    from .schedules import time_grid

    check_sampler_supports(denoiser, sampler)
    schedule = denoiser.schedule
    ts = time_grid(schedule, steps, spacing)
    n = len(noise) if noise is not None else n
    generator = SampleNoise(seed, first_index, n)
    shape = (n, *sample_shape)
    if noise is None:
        noise = generator.randn(shape)
    else:
        generator.skip(shape)
    x = noise.to(device=device, dtype=torch.float32)
    given = {"eta": eta, "steps_per_level": steps_per_level, "step_size": step_size}
    opts = {k: given[k] for k in SAMPLER_OPTIONS.get(sampler, ())}
    seed_latents(denoiser, generator)
    try:
        return SAMPLERS[sampler](denoiser, schedule, x, ts, generator=generator, callback=callback, **opts)
    finally:
        seed_latents(denoiser, None)  # this run's noise is not left attached to the denoiser


def initial_noise(n: int, sample_shape: tuple[int, ...], seed: int = 0, first_index: int = 0) -> torch.Tensor:
    """The x_T that `generate` draws for samples first_index .. first_index + n - 1 under `seed`."""
    return SampleNoise(seed, first_index, n).randn((n, *sample_shape))
