"""Variational Diffusion Models (Kingma, Salimans, Poole, Ho 2021): the likelihood corner.

A VDM is a schedule module (fixed linear-gamma, or learned: `schedules.LearnedGamma`), an eps-network
conditioned on the normalised gamma(t) and seeing Fourier features of z (`networks.build_vdm_net`), and
one loss: the variational bound in bits/dim,

    -log p(x) <= KL(q(z_1 | x) || N(0, I))          prior loss
               + E_q(z_0|x)[-log p(x | z_0)]          reconstruction loss, a discretised decoder
               + L_T or L_inf                         diffusion loss (discrete or continuous time)

with L_inf = 0.5 E_t[gamma'(t) ||eps - eps_hat(z_t; t)||^2] (gamma' by autograd) and
L_T = 0.5 T E_i[expm1(gamma(t_i) - gamma(t_{i-1})) ||eps - eps_hat||^2]. Sampling is the core's samplers
on `VDMDenoiser`: ancestral p(z_s | z_t) = q(z_s | z_t, x = x_hat) is `samplers.sample_ancestral` on any
grid, and every other sampler in `samplers.SAMPLER_INFO` goes through the same denoiser contract.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..bounds import BoundTerms, bits_per_dim, decoder_nll, prior_kl
from ..data import data_levels
from ..denoiser import PredictionDenoiser, append_dims
from ..errors import TrilemmaError
from ..networks import build_vdm_net
from ..schedules import GradScale, LearnedGamma, alpha_sigma_of, build_schedule, hi_precision
from .base import Family

SHAPE_LOSSES = ("variance", "bound")


class VDMDenoiser(PredictionDenoiser):
    """VDM's eps-network under the denoiser contract; the network is conditioned on the normalised
    log-SNR, 1000 (gamma(t) - cond_min) / (cond_max - cond_min) (the official score network's input),
    so the same network serves any schedule with the same endpoints."""

    def __init__(self, net: nn.Module, schedule, cond_min: float = -13.3, cond_max: float = 5.0):
        super().__init__(net, schedule, "eps")
        self.cond_min, self.cond_max = cond_min, cond_max

    def cond(self, gamma: torch.Tensor) -> torch.Tensor:
        """The network's conditioning for log-SNR values gamma (differentiable in gamma)."""
        return (1000.0 * (gamma - self.cond_min) / (self.cond_max - self.cond_min)).to(torch.float32)

    def net_time(self, t: torch.Tensor) -> torch.Tensor:
        # a sampler's batch shares one time: a learned schedule's network runs once per distinct time
        times, where = torch.unique(t, return_inverse=True)
        return self.cond(self.schedule(times))[where]


def vdm_terms(den: VDMDenoiser, schedule: nn.Module, x: torch.Tensor, u: torch.Tensor, eps: torch.Tensor,
              eps_0: torch.Tensor, *, levels: int | None, timesteps: int = 0,
              shape_grad: GradScale | None = None) -> BoundTerms:
    """The VDM bound's terms (prior, reconstruction, diffusion) for data x (B, ...), with time draws u (B,) in [0, 1),
    forward noise eps at t and eps_0 at t = 0. `schedule` is called exactly once (one forward of a
    DDP-wrapped module); `den` supplies the network and its conditioning. With `shape_grad`, its value
    must be set to the per-sample weights (length B + 2) before backward (see `LearnedGamma.forward`)."""
    B, dev = x.shape[0], x.device
    u = hi_precision(u, dev)
    ends = torch.tensor([0.0, 1.0], dtype=u.dtype, device=dev)
    if timesteps:  # t_i = i / T, i = 1..T, and s = t_{i-1}
        t = ((u * timesteps).floor().clamp(max=timesteps - 1) + 1) / timesteps
        g = schedule(torch.cat([t, t - 1.0 / timesteps, ends]))
        g_t, g_s, g_0, g_1 = g[:B], g[B : 2 * B], g[2 * B], g[2 * B + 1]
        weight = 0.5 * timesteps * torch.expm1(g_t - g_s)  # (SNR(s) - SNR(t)) / SNR(t): L_T in eps form
    else:
        g, dg = schedule(torch.cat([u, ends]), derivative=True, shape_grad=shape_grad)
        g_t, g_0, g_1 = g[:B], g[B], g[B + 1]
        weight = 0.5 * dg[:B]  # L_inf
    prior = prior_kl(x, g_1)
    # reconstruction: z_0 / alpha_0 = x + exp(gamma_0 / 2) eps_0
    recon = decoder_nll(x, x + torch.exp(0.5 * g_0).to(x.dtype) * eps_0, g_0, levels)
    # diffusion: z_t = alpha_t x + sigma_t eps, the network sees z_t and the normalised gamma_t
    a_t, s_t = (append_dims(v, x) for v in alpha_sigma_of(g_t))
    eps_hat = den.net(a_t * x + s_t * eps, den.cond(g_t))
    mse = (eps - eps_hat).square().flatten(1).sum(1)
    return BoundTerms(prior, recon, weight * mse)


def stratified(u0: torch.Tensor, n: int) -> torch.Tensor:
    """n low-discrepancy uniforms (u0 + i / n) mod 1 from one uniform u0: VDM's antithetic time sampling
    (it lowers the variance of the batch estimate of the diffusion loss)."""
    return (u0 + torch.arange(n, dtype=torch.float64) / n) % 1.0


class VDM(Family):
    """The VDM family: an eps-network and a schedule module (trained with it when learned), one phase."""

    phases = {"model": ("net", "schedule")}  # optimizer phase -> the modules it trains
    has_bound = True

    def __init__(self, cfg, sample_shape: tuple[int, ...]):
        super().__init__(cfg, sample_shape)
        v = cfg.vdm
        if v.timesteps < 0:
            raise TrilemmaError(f"vdm.timesteps must be >= 0 (0: continuous time), got {v.timesteps}")
        if v.shape_loss not in SHAPE_LOSSES:
            raise TrilemmaError(f"vdm.shape_loss: {v.shape_loss!r} is not one of {', '.join(SHAPE_LOSSES)}")
        if not v.cond_gamma_max > v.cond_gamma_min:
            raise TrilemmaError(f"vdm.cond_gamma_max ({v.cond_gamma_max}) must exceed vdm.cond_gamma_min ({v.cond_gamma_min})")
        schedule = build_schedule(cfg.schedule)
        if schedule.num_timesteps is not None:
            raise TrilemmaError(f"schedule.name: vdm needs a continuous-time schedule (linear-gamma or learned), "
                                f"not {cfg.schedule.name!r}")
        with torch.no_grad():
            g01 = schedule(torch.tensor([0.0, 1.0], dtype=torch.float64))
        if not torch.isfinite(g01).all():
            raise TrilemmaError(f"schedule.name: {cfg.schedule.name!r} has gamma(0), gamma(1) = {g01.tolist()}; the VDM "
                                "bound needs both finite (use linear-gamma or learned)")
        self.learned = isinstance(schedule, LearnedGamma)
        if self.learned and v.shape_loss == "variance" and v.timesteps:
            raise TrilemmaError("vdm.shape_loss: variance applies to the continuous loss, where the bound does not "
                                "depend on the shape; with vdm.timesteps > 0 use shape_loss: bound")
        # the decoder's data levels (None: continuous data, and latents, whose bound is on the latents)
        self.levels = None if cfg.latent.autoencoder else data_levels(cfg.data)
        self.dims = math.prod(sample_shape)
        self.modules = nn.ModuleDict({"net": build_vdm_net(cfg.model, v, sample_shape), "schedule": schedule})

    @property
    def schedule(self):
        return self.modules["schedule"]

    def ema_names(self) -> list[str]:
        return ["net", "schedule"]

    def denoiser(self, modules: nn.ModuleDict) -> VDMDenoiser:
        return VDMDenoiser(modules["net"], modules["schedule"], self.cfg.vdm.cond_gamma_min, self.cfg.vdm.cond_gamma_max)

    def bound_name(self) -> str:
        T = self.cfg.vdm.timesteps
        return f"VDM bound, {'continuous time' if not T else f'T = {T}'}, {self.cfg.schedule.name} schedule"

    def to_bpd(self, nats: torch.Tensor) -> torch.Tensor:
        return bits_per_dim(nats, self.dims)

    def terms(self, modules: nn.ModuleDict, x: torch.Tensor, u, eps, eps_0, shape_grad=None) -> BoundTerms:
        return vdm_terms(self.denoiser(modules), modules["schedule"], x, u, eps, eps_0, levels=self.levels,
                         timesteps=self.cfg.vdm.timesteps, shape_grad=shape_grad)

    def loss(self, phase: str, modules: nn.ModuleDict, x: torch.Tensor, rng, step: int) -> torch.Tensor:
        """Per-sample bound in bits/dim. With a learned schedule and shape_loss variance, the shape's gradient
        is that of the squared diffusion term (VDM's variance minimisation), while the network and the endpoints follow
        the bound."""
        B = x.shape[0]
        u = rng.stratified(B) if self.cfg.vdm.antithetic else rng.rand(B)
        eps, eps_0 = rng.randn(x.shape), rng.randn(x.shape)
        shape_grad = GradScale() if self.learned and self.cfg.vdm.shape_loss == "variance" else None
        terms = self.terms(modules, x, u, eps, eps_0, shape_grad)
        if shape_grad is not None:  # d E[L^2] = E[2 L dL]; the two endpoint entries have no shape gradient
            w = 2 * self.to_bpd(terms.diffusion.detach())
            shape_grad.value = torch.cat([w, w.new_ones(2)])
        return self.to_bpd(terms.total()).to(x.dtype)
