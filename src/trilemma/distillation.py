"""The maths of few-step generators distilled from a trained diffusion model (its training loops are families).

Progressive distillation (Salimans & Ho, ICLR 2022, Alg. 2): a student learns to take, in one DDIM step from t to
t'', the two DDIM steps t -> t' -> t'' of its teacher. The regression target is the x that makes one student DDIM
step land exactly where the teacher's two land,

    x~ = (z_t'' - (sigma_t'' / sigma_t) z_t) / (alpha_t'' - (sigma_t'' / sigma_t) alpha_t),

weighted by the truncated SNR, max(alpha_t^2 / sigma_t^2, 1) (their eq. 10: x-prediction's loss with a floor at
SNR = 1, so the loss does not vanish at high noise, where one step must carry the most).
"""

from __future__ import annotations

import torch

from .denoiser import append_dims, batch_times
from .schedules import alpha_sigma

__all__ = ["ddim_step", "progressive_target", "truncated_snr_weight"]


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
        zw = z_t.to(torch.float64) if z_t.device.type != "mps" else z_t
        (a_t, s_t), (a_m, s_m), (a_s, s_s) = (_levels(schedule, u, zw) for u in (t, t_mid, s))
        z_m = ddim_step(zw, teacher(z_t, t).to(zw.dtype), a_t, s_t, a_m, s_m)
        z_s = ddim_step(z_m, teacher(z_m.to(z_t.dtype), t_mid).to(zw.dtype), a_m, s_m, a_s, s_s)
        r = s_s / s_t
        return ((z_s - r * zw) / (a_s - r * a_t)).to(z_t.dtype)


def truncated_snr_weight(schedule, t, like: torch.Tensor) -> torch.Tensor:
    """max(SNR(t), 1) = max(alpha_t^2 / sigma_t^2, 1) per sample, shaped (B,), in like's dtype."""
    a, s = alpha_sigma(schedule, batch_times(t, like))
    return (a.square() / s.square()).clamp(min=1.0).to(like.dtype)
