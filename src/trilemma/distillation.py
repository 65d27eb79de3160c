"""The maths of few-step generators distilled from a trained diffusion model (its training loops are families).

Progressive distillation (Salimans & Ho, ICLR 2022, Alg. 2): a student learns to take, in one DDIM step from t to
t'', the two DDIM steps t -> t' -> t'' of its teacher. The regression target is the x that makes one student DDIM
step land exactly where the teacher's two land,

    x~ = (z_t'' - (sigma_t'' / sigma_t) z_t) / (alpha_t'' - (sigma_t'' / sigma_t) alpha_t),

weighted by the truncated SNR, max(alpha_t^2 / sigma_t^2, 1) (their eq. 10: x-prediction's loss with a floor at
SNR = 1, so the loss does not vanish at high noise, where one step must carry the most).

Consistency distillation (Song et al., ICML 2023) and a diffusion GAN started from the teacher (UFOGen, Xu et al.
2024) are below, each with the denoiser its student samples through.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .denoiser import PredictionDenoiser, StochasticDenoiser, append_dims, batch_times
from .noise import randn
from .schedules import alpha_sigma, hi_dtype, time_grid

__all__ = ["ddim_step", "progressive_target", "truncated_snr_weight", "consistency_scalings", "ConsistencyDenoiser",
           "consistency_grid", "ode_step", "consistency_target", "pseudo_huber", "pseudo_huber_c", "AdversarialDenoiser"]


def ddim_step(z: torch.Tensor, x0: torch.Tensor, a_t, s_t, a_s, s_s) -> torch.Tensor:
    """One deterministic DDIM step z_t -> z_s (Song et al. 2021, eq. 12 with eta = 0) from the denoiser's x0:
    z_s = alpha_s x0 + sigma_s eps_hat, eps_hat = (z_t - alpha_t x0) / sigma_t. Coefficients are floats or
    tensors broadcastable to z (per sample: `append_dims`)."""
    c = s_s / s_t
    return c * z + (a_s - c * a_t) * x0


def _levels(schedule, t, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a, s = alpha_sigma(schedule, batch_times(t, z))
    return append_dims(a, z), append_dims(s, z)


def progressive_target(teacher, schedule, z_t: torch.Tensor, t, t_mid, s) -> torch.Tensor:
    """The student's x0 target x~ at (z_t, t) for one step t -> s that replaces the teacher's two DDIM steps
    t -> t_mid -> s (times: floats or (B,) tensors, t > t_mid > s >= 0). `teacher(z, t)` is a denoiser
    (x0_hat); it is evaluated twice, without gradients. Returned in z_t's dtype; the coefficients are formed in
    the schedule's precision (float64 off MPS) before the cast."""
    with torch.no_grad():
        zw = z_t.to(hi_dtype(z_t.device))
        (a_t, s_t), (a_m, s_m), (a_s, s_s) = (_levels(schedule, u, zw) for u in (t, t_mid, s))
        z_m = ddim_step(zw, teacher(z_t, t).to(zw.dtype), a_t, s_t, a_m, s_m)
        z_s = ddim_step(z_m, teacher(z_m.to(z_t.dtype), t_mid).to(zw.dtype), a_m, s_m, a_s, s_s)
        r = s_s / s_t
        return ((z_s - r * zw) / (a_s - r * a_t)).to(z_t.dtype)


def truncated_snr_weight(schedule, t, like: torch.Tensor) -> torch.Tensor:
    """max(SNR(t), 1) = max(alpha_t^2 / sigma_t^2, 1) per sample, shaped (B,), in like's dtype."""
    a, s = alpha_sigma(schedule, batch_times(t, like))
    return (a.square() / s.square()).clamp(min=1.0).to(like.dtype)


# --- consistency distillation (Song, Dhariwal, Chen, Sutskever, ICML 2023) ------------------------------------
#
# A consistency function maps every point z_t of a probability-flow ODE trajectory to the trajectory's point at
# t_min, so f(z, t_min) = z. The student is parameterised so that this holds exactly (their eq. 5):
# f(z, t) = c_skip(t) z + c_out(t) x0_hat(z, t), with c_skip = sigma_d^2 / ((k tau)^2 + sigma_d^2) and
# c_out = k tau / sqrt((k tau)^2 + sigma_d^2) in the network's timestep tau = timestep(t) - timestep(t_min) and a
# timestep scaling k: the scalings of diffusers' LCMScheduler (Luo et al. 2023), so a student exports with that
# scheduler. With k = 10, c_out > 0.998 from the second training timestep on: the student is its x0_hat network
# (at first, its teacher) everywhere but at t_min, where it is the identity.


def consistency_scalings(tau: torch.Tensor, sigma_data: float, scaling: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_skip, c_out) at timestep offsets tau >= 0 from t_min: exactly (1, 0) at tau = 0."""
    k = scaling * tau
    c_skip = sigma_data**2 / (k.square() + sigma_data**2)
    c_out = k / (k.square() + sigma_data**2).sqrt()
    return c_skip, c_out


class ConsistencyDenoiser(nn.Module):
    """A consistency function under the denoiser contract: f(z_t, t) = c_skip z_t + c_out x0_hat of the wrapped
    denoiser (a `PredictionDenoiser` of any prediction), with f(z, t) = z exactly for t <= t_min, the smallest time
    of the consistency grid. The timestep is the wrapped network's (`net_time`: a learned schedule's is read at
    each call)."""

    def __init__(self, inner: PredictionDenoiser, t_min: float, sigma_data: float = 0.5, scaling: float = 10.0):
        super().__init__()
        self.inner, self.t_min, self.sigma_data, self.scaling = inner, float(t_min), float(sigma_data), float(scaling)

    @property
    def schedule(self):
        return self.inner.schedule

    def forward(self, z: torch.Tensor, t) -> torch.Tensor:
        x0 = self.inner(z, t)
        tt = batch_times(t, z)
        tau = self.inner.net_time(torch.cat([tt, tt.new_full((1,), self.t_min)])).to(hi_dtype(z.device))
        c_skip, c_out = consistency_scalings((tau[:-1] - tau[-1]).clamp(min=0), self.sigma_data, self.scaling)
        at_min = tt <= self.t_min  # exactly (1, 0) there by construction, whatever the timestep arithmetic gives
        c_skip, c_out = torch.where(at_min, 1.0, c_skip), torch.where(at_min, 0.0, c_out)
        return append_dims(c_skip, z) * z + append_dims(c_out, z) * x0


def consistency_grid(schedule, segments: int) -> torch.Tensor:
    """The consistency grid t_min = t_1 < ... < t_{segments+1} = 1 (float64): uniform in log SNR between the
    schedule's first noisy level and t = 1, on the training grid of a discrete schedule (`schedules.time_grid`'s
    "logsnr" spacing; Karras et al.'s grid as rho -> infinity)."""
    return time_grid(schedule, segments + 1, "logsnr")[:-1].flip(0)


def ode_step(teacher, schedule, z_t: torch.Tensor, t, s, solver: str = "ddim") -> torch.Tensor:
    """One step t -> s > 0 of the teacher's probability-flow ODE from z_t, in z_t's dtype (coefficients in the
    schedule's precision): "ddim", the DDIM step (Euler in EDM's y = z / alpha, sigma~ = sigma / alpha; one
    evaluation), or "heun", EDM's second-order step (Karras et al. 2022, Alg. 1; two evaluations), whose local error
    is a power of the step smaller. No gradients."""
    if solver not in ("ddim", "heun"):
        raise ValueError(f"solver must be ddim or heun, got {solver!r}")
    with torch.no_grad():
        zw = z_t.to(hi_dtype(z_t.device))
        (a_t, s_t), (a_s, s_s) = _levels(schedule, t, zw), _levels(schedule, s, zw)
        x0_t = teacher(z_t, t).to(zw.dtype)
        z_s = ddim_step(zw, x0_t, a_t, s_t, a_s, s_s)
        if solver == "heun":  # average the slopes dy/dsigma~ = (y - x0) / sigma~ at both ends
            n_t, n_s = s_t / a_t, s_s / a_s
            x0_s = teacher(z_s.to(z_t.dtype), s).to(zw.dtype)
            slope = ((zw / a_t - x0_t) / n_t + (z_s / a_s - x0_s) / n_s) / 2
            z_s = a_s * (zw / a_t + (n_s - n_t) * slope)
        return z_s.to(z_t.dtype)


def consistency_target(teacher, target, schedule, z_t: torch.Tensor, t, s, solver: str = "ddim") -> torch.Tensor:
    """The consistency-distillation target at (z_t, t) for the adjacent grid time s < t: one step of the teacher's
    probability-flow ODE (`ode_step`), then the target network's f(z_s, s) (Song et al. 2023, Alg. 2). No
    gradients."""
    with torch.no_grad():
        return target(ode_step(teacher, schedule, z_t, t, s, solver), s)


def pseudo_huber(a: torch.Tensor, b: torch.Tensor, c: float) -> torch.Tensor:
    """sqrt(||a - b||^2 + c^2) - c per sample (Song & Dhariwal 2023, improved consistency training): about ||a - b||
    (linear, like L1) for errors much larger than c, ||a - b||^2 / 2c for smaller ones; c = 0: the L2 norm."""
    d = (a - b).flatten(1).square().sum(1)
    return (d + c * c).sqrt() - c


def pseudo_huber_c(dims: int) -> float:
    """The pseudo-Huber constant c = 0.00054 sqrt(d) that Song & Dhariwal use for d-dimensional data."""
    return 0.00054 * math.sqrt(dims)


# --- a diffusion GAN started from the teacher ----------------------------------------------------------------


class AdversarialDenoiser(StochasticDenoiser):
    """A generator made from a teacher's network (`networks.latent_generator`) under the denoiser contract:
    x0' = G(z_t, t, latent), read through the teacher's prediction (eps, v or x0) as `PredictionDenoiser` reads its
    network, with a fresh latent per call unless one is given. While the latent path is still zero this is
    exactly the wrapped denoiser, whatever the latent."""

    def __init__(self, inner: PredictionDenoiser, latent_dim: int):
        super().__init__()
        self.inner, self.latent_dim = inner, latent_dim

    @property
    def schedule(self):
        return self.inner.schedule

    def forward(self, z: torch.Tensor, t, latent: torch.Tensor | None = None) -> torch.Tensor:
        if latent is None:
            latent = randn((z.shape[0], self.latent_dim), self.latent_generator, z.device, z.dtype)
        return self.inner(z, t, latent)
