"""DDPM family: one eps / v / x0 network trained with L_simple (Ho et al. 2020, eq. 14)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..data import data_levels
from ..errors import TrilemmaError
from ..denoiser import PredictionDenoiser, append_dims, target_for
from ..schedules import alpha_sigma, alpha_sigma_of, build_schedule, hi_precision
from ..networks import build_backbone
from .base import Family
from ..bounds import BoundTerms, bits_per_dim, decoder_nll, prior_kl


def ddpm_loss(denoiser: PredictionDenoiser, x: torch.Tensor, u: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """L_simple per sample: ||target - net(z_t, t)||^2 averaged over dimensions (Ho et al. eq. 14),
    target eps, v or x0. `u` (B,) uniform in [0, 1) picks t; `eps` is the forward noise."""
    t = denoiser.schedule.sample_t(u)
    a, s = (append_dims(v, x) for v in alpha_sigma(denoiser.schedule, t))
    z = a * x + s * eps  # z_t = alpha_t x + sigma_t eps (DDPM eq. 4)
    out = denoiser.predict(z, t)
    return (out - target_for(denoiser.prediction, x, eps, a, s)).square().flatten(1).mean(1)


def ddpm_vlb_terms(denoiser: PredictionDenoiser, x: torch.Tensor, u: torch.Tensor, eps: torch.Tensor,
                   eps_0: torch.Tensor, *, levels: int | None) -> BoundTerms:
    """DDPM's variational bound (Ho et al. 2020, eq. 5) per sample, on the T-step grid t_i = i / T (T = 1000 for
    a continuous schedule): prior KL at t_T; L_{1:T-1} = (T - 1) E_i[KL(q(z_{i-1} | z_i, x) || p(z_{i-1} | z_i))],
    i uniform in 2..T, which with the posterior variance is 0.5 expm1(gamma_i - gamma_{i-1}) ||eps - eps_hat||^2
    (VDM's L_T); and the decoder -log p(x | z_1) over the data's levels, centred on the model's x0_hat(z_1)
    with variance exp(gamma_1) = sigma_1^2 / alpha_1^2 = beta_1 / (1 - beta_1) (close to Ho et al.'s beta_1)."""
    schedule = denoiser.schedule
    T = schedule.num_timesteps or 1000
    B = x.shape[0]
    u = hi_precision(u, x.device)
    i = (u * (T - 1)).floor().clamp(max=T - 2) + 2  # (B,) in 2..T
    ends = torch.tensor([1.0 / T, 1.0], dtype=u.dtype, device=x.device)
    with torch.no_grad():
        g = schedule(torch.cat([i / T, (i - 1) / T, ends])).to(torch.float64)
    g_t, g_s, g_first, g_1 = g[:B], g[B : 2 * B], g[2 * B], g[2 * B + 1]
    # decoder at the first noisy level t_1 = 1 / T
    a, s = (append_dims(v, x) for v in alpha_sigma_of(g_first))
    recon = decoder_nll(x, denoiser(a * x + s * eps_0, ends[0]), g_first, levels)
    a_t, s_t = (append_dims(v, x) for v in alpha_sigma_of(g_t))
    z = a_t * x + s_t * eps
    eps_hat = (z - a_t * denoiser(z, i / T)) / s_t
    diffusion = 0.5 * (T - 1) * torch.expm1(g_t - g_s) * (eps - eps_hat).square().flatten(1).sum(1)
    return BoundTerms(prior_kl(x, g_1), recon, diffusion)


class DDPM(Family):
    """The DDPM family: a backbone under `PredictionDenoiser`, one optimizer phase."""

    phases = {"model": ("net",)}  # optimizer phase -> the modules it trains, stepped in this order
    has_bound = True  # its VLB (`ddpm_vlb_terms`)

    def __init__(self, cfg, sample_shape: tuple[int, ...]):
        super().__init__(cfg, sample_shape)
        self.schedule = build_schedule(cfg.schedule)
        if any(True for _ in self.schedule.parameters()):
            raise TrilemmaError(f"schedule.name: {cfg.schedule.name!r} has parameters, which the ddpm family does not "
                                "train or save; a learned schedule needs family: vdm")
        self.modules = nn.ModuleDict({"net": build_backbone(cfg.model, sample_shape)})
        # the decoder's data levels (None: continuous data, and latents, whose bound is on the latents)
        self.levels = None if cfg.latent.autoencoder else data_levels(cfg.data)
        self.dims = math.prod(sample_shape)

    def ema_names(self) -> list[str]:
        return ["net"]

    def denoiser(self, modules: nn.ModuleDict) -> PredictionDenoiser:
        return PredictionDenoiser(modules["net"], self.schedule, self.cfg.model.prediction)

    def terms(self, modules: nn.ModuleDict, x: torch.Tensor, u, eps, eps_0) -> BoundTerms:
        """The variational bound's terms (`ddpm_vlb_terms`), in nats per sample."""
        return ddpm_vlb_terms(self.denoiser(modules), x, u, eps, eps_0, levels=self.levels)

    def bound_name(self) -> str:
        return f"DDPM VLB, T = {self.schedule.num_timesteps or 1000}, {self.cfg.schedule.name} schedule"

    def to_bpd(self, nats: torch.Tensor) -> torch.Tensor:
        return bits_per_dim(nats, self.dims)

    def loss(self, phase: str, modules: nn.ModuleDict, x: torch.Tensor, rng, step: int) -> torch.Tensor:
        """Per-sample loss for one phase; the training loop reduces, backpropagates and logs."""
        return ddpm_loss(self.denoiser(modules), x, rng.rand(x.shape[0]), rng.randn(x.shape))
