"""The one contract samplers see: denoiser(z_t, t) -> x0_hat, plus the NFE counter.

A backbone network never sees schedule conventions: `PredictionDenoiser` turns an eps-, v- or
x0-predicting network into a denoiser (k-diffusion `external.py`, EDM `EDMPrecond` do the same).
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import TrilemmaError
from .schedules import Schedule, alpha_sigma

PREDICTIONS = ("eps", "v", "x0")


def append_dims(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-sample scalars (B,) or () -> (B, 1, ..., 1) in like's dtype, for broadcasting."""
    v = v.to(device=like.device, dtype=like.dtype)
    if v.ndim == 0:
        return v
    return v.reshape(-1, *([1] * (like.ndim - 1)))


def batch_times(t, z: torch.Tensor) -> torch.Tensor:
    """A scalar or (B,) time -> (B,) float tensor on z's device."""
    if not torch.is_tensor(t):
        # Python floats keep their full precision (MPS has no float64)
        t = torch.tensor(float(t), dtype=torch.float32 if z.device.type == "mps" else torch.float64)
    t = t.to(z.device)
    if not t.is_floating_point():
        t = t.to(torch.float32)
    return t.expand(z.shape[0]) if t.ndim == 0 else t


def target_for(prediction: str, x: torch.Tensor, eps: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """What the network regresses: eps (Ho et al. eq. 14), v = alpha eps - sigma x (Salimans &
    Ho 2022, sec. 4) or x itself."""
    if prediction == "eps":
        return eps
    if prediction == "v":
        return alpha * eps - sigma * x
    return x


def x0_from_output(prediction: str, z, out, alpha, sigma) -> torch.Tensor:
    """Invert `target_for`: x0 from the network output at z_t = alpha x + sigma eps."""
    if prediction == "eps":
        return (z - sigma * out) / alpha
    if prediction == "v":
        return alpha * z - sigma * out
    return out


def eps_from_x0(schedule: Schedule, z: torch.Tensor, x0: torch.Tensor, t) -> torch.Tensor:
    """eps_hat = (z_t - alpha_t x0_hat) / sigma_t: what samplers derive from the denoiser."""
    a, s = alpha_sigma(schedule, batch_times(t, z))
    return (z - append_dims(a, z) * x0) / append_dims(s, z)


def net_time(schedule: Schedule, t: torch.Tensor) -> torch.Tensor:
    """The conditioning a network is given at time t (diffusers' timestep convention), float32."""
    return schedule.timestep(t).to(torch.float32)


def schedule_state(schedule: Schedule) -> tuple:
    """A key that changes whenever a schedule's values may have (its parameters' and buffers' version counters):
    what caches of schedule-derived values are keyed on."""
    return tuple((id(p), p._version) for p in (*schedule.parameters(), *schedule.buffers()))


class PredictionDenoiser(nn.Module):
    """Adapts a network net(z_t, timestep) predicting eps, v or x0 to denoiser(z_t, t) -> x0_hat.

    Samplers call it with a Python float t under no_grad; then alpha_t, sigma_t and the network's
    timestep are looked up in a small cache instead of being recomputed from the schedule on every
    call. The cache key holds the version counters of the schedule's parameters and buffers, so a
    learned schedule that changes (an optimizer step, load_state_dict) is never read stale; with
    gradients on, or a tensor t, everything is computed afresh.
    """

    _CACHE_SIZE = 4096  # entries (time, batch, device, schedule state); cleared when full

    def __init__(self, net: nn.Module, schedule: Schedule, prediction: str = "eps"):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise TrilemmaError(f"model.prediction: unknown prediction type {prediction!r}; choose one of {PREDICTIONS}")
        self.net, self.schedule, self.prediction = net, schedule, prediction
        self._level_cache: dict = {}

    @property
    def level_cache_size(self) -> int:
        """Entries in the cache of (alpha_t, sigma_t, timestep) lookups."""
        return len(self._level_cache)

    def _schedule_state(self) -> tuple:
        return schedule_state(self.schedule)

    def _scalar_levels(self, t: float, z: torch.Tensor) -> tuple[float, float, torch.Tensor]:
        """(alpha_t, sigma_t) as Python floats and the network's (B,) timestep tensor at time t."""
        key = (t, z.shape[0], z.device, self._schedule_state())
        hit = self._level_cache.get(key)
        if hit is None:
            tt = batch_times(t, z)  # (B,)
            a, s = alpha_sigma(self.schedule, tt[:1])
            hit = (a.item(), s.item(), self.net_time(tt))
            if len(self._level_cache) >= self._CACHE_SIZE:
                self._level_cache.clear()
            self._level_cache[key] = hit
        return hit

    def net_time(self, t: torch.Tensor) -> torch.Tensor:
        return net_time(self.schedule, t)

    def predict(self, z: torch.Tensor, t, *net_args) -> torch.Tensor:
        """The raw network output (eps, v or x0) at (z_t, t); `net_args` follow the timestep (a generator's latent)."""
        return self.net(z, self.net_time(batch_times(t, z)), *net_args)

    def forward(self, z: torch.Tensor, t, *net_args) -> torch.Tensor:
        if isinstance(t, (float, int)) and not torch.is_grad_enabled():
            a, s, net_t = self._scalar_levels(float(t), z)
            return x0_from_output(self.prediction, z, self.net(z, net_t, *net_args), a, s)
        t = batch_times(t, z)
        a, s = alpha_sigma(self.schedule, t)
        return x0_from_output(self.prediction, z, self.predict(z, t, *net_args), append_dims(a, z), append_dims(s, z))


class StochasticDenoiser(nn.Module):
    """A denoiser that draws x0 at random rather than estimating E[x | z_t]: it draws a fresh latent on every
    call (DDGAN's generator G(x_t, z, t)) from `latent_generator`, which `seed_latents` points at the run's
    noise. Its eps_hat is not a score, so samplers that need one (`samplers.SamplerInfo.needs_score`) refuse it."""

    def __init__(self):
        super().__init__()
        self.latent_generator = None  # a torch.Generator or noise.SampleNoise; None: torch's global RNG


def draws_x0(denoiser: nn.Module) -> bool:
    """Whether `denoiser` (or a denoiser it wraps, e.g. under `CountNFE`) draws x0 at random."""
    return any(isinstance(m, StochasticDenoiser) for m in denoiser.modules())


def seed_latents(denoiser: nn.Module, generator) -> None:
    """Point every `StochasticDenoiser` inside `denoiser` at `generator`, so a sampling run is reproducible
    under one seed (None detaches it again)."""
    for m in denoiser.modules():
        if isinstance(m, StochasticDenoiser):
            m.latent_generator = generator


class CountNFE(nn.Module):
    """Counts network function evaluations: samplers never count their own, so NFE is measured the same way
    for every sampler by wrapping the denoiser they are given."""

    def __init__(self, denoiser: nn.Module):
        super().__init__()
        self.denoiser, self.nfe = denoiser, 0

    @property
    def schedule(self) -> Schedule:
        return self.denoiser.schedule

    def forward(self, z, t):
        self.nfe += 1
        return self.denoiser(z, t)
