"""Denoising Diffusion GANs (Xiao, Kreis, Vahdat 2022): a conditional GAN models each of T <= 8 large
denoising steps.

The generator G(x_t, z, t) predicts x0'; a fake x'_{t-1} is drawn from the posterior q(x_{t-1} | x_t, x0')
(eq. 6-7 of the paper); the discriminator D(x_{t-1}, x_t, t) tells real pairs from q from fake ones.
Losses are the non-saturating ones (softplus), with an R1 penalty on real x_{t-1}. Sampling is the
core's ancestral sampler with G, wrapped by `GANDenoiser`, as the denoiser.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..denoiser import StochasticDenoiser, append_dims, batch_times, net_time
from ..errors import TrilemmaError
from ..networks import build_discriminator, build_generator
from ..noise import randn
from ..schedules import alpha_sigma, build_schedule, hi_precision, posterior, transition
from .base import Family


class GANDenoiser(StochasticDenoiser):
    """DDGAN's generator under the denoiser contract: denoiser(x_t, t) -> x0' = G(x_t, z, t) with a
    fresh latent z ~ N(0, I) per call, drawn from `latent_generator` (set by `denoiser.seed_latents`)."""

    def __init__(self, gen: nn.Module, schedule):
        super().__init__()
        self.gen, self.schedule = gen, schedule

    def forward(self, z: torch.Tensor, t) -> torch.Tensor:
        t = batch_times(t, z)
        latent = randn((z.shape[0], self.gen.latent_dim), self.latent_generator, z.device, z.dtype)
        return self.gen(z, net_time(self.schedule, t), latent)


def step_pairs(schedule, x: torch.Tensor, u: torch.Tensor, eps: torch.Tensor, eps_step: torch.Tensor):
    """Real training pairs: step k = 1..T from u (B,) uniform, s = t_{k-1}, t = t_k on the grid,
    x_s ~ q(x_s | x) (DDPM eq. 4) and x_t ~ q(x_t | x_s) one step further (eq. 2). Returns
    (t, s, x_s, x_t) with t, s (B,) float64."""
    T = schedule.num_timesteps
    k = (hi_precision(schedule.sample_t(u)) * T).round()  # (B,) in 1..T
    return pairs_at(schedule, x, k / T, (k - 1) / T, eps, eps_step)


def grid_step_pairs(schedule, grid: torch.Tensor, x: torch.Tensor, u: torch.Tensor, eps: torch.Tensor,
                    eps_step: torch.Tensor):
    """`step_pairs` on a coarser grid of T steps, grid = (0 = t_0 < t_1 < ... < t_T) float64 (a distilled
    DDGAN's steps on its teacher's schedule): k = 1..T uniform from u."""
    T = len(grid) - 1
    k = (hi_precision(u) * T).floor().long().clamp(max=T - 1) + 1
    grid = hi_precision(grid, k.device)
    return pairs_at(schedule, x, grid[k], grid[k - 1], eps, eps_step)


def pairs_at(schedule, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor, eps: torch.Tensor, eps_step: torch.Tensor):
    """(t, s, x_s, x_t): x_s ~ q(x_s | x) = alpha_s x + sigma_s eps and x_t ~ q(x_t | x_s) one step on."""
    a_s, sig_s = (append_dims(v, x) for v in alpha_sigma(schedule, s))
    x_s = a_s * x + sig_s * eps
    a_ts, sig_ts = (append_dims(v, x) for v in transition(schedule, t, s))
    return t, s, x_s, a_ts * x_s + sig_ts * eps_step


def posterior_sample(schedule, x_t: torch.Tensor, x0: torch.Tensor, t, s, noise: torch.Tensor) -> torch.Tensor:
    """x_s ~ q(x_s | x_t, x0) (DDPM eq. 6-7) with the given standard-normal noise; x0 exactly at s = 0."""
    c_z, c_x, var = (append_dims(v, x_t) for v in posterior(schedule, t, s))
    return c_z * x_t + c_x * x0 + var.clamp(min=0).sqrt() * noise


def _r1(d_real: torch.Tensor, x_real: torch.Tensor) -> torch.Tensor:
    """||grad_x D(x)||^2 per sample on real inputs (Mescheder et al. 2018, eq. 9), differentiable."""
    (grad,) = torch.autograd.grad(d_real.sum(), x_real, create_graph=True)
    return grad.square().flatten(1).sum(1)


def gan_optimizer_options(gan_cfg, phase: str) -> dict:
    """Adam(beta1, beta2) with separate learning rates for G ("gen") and D (Xiao et al. 2022, appendix)."""
    return {"lr": gan_cfg.lr_g if phase == "gen" else gan_cfg.lr_d, "betas": (gan_cfg.beta1, gan_cfg.beta2),
            "weight_decay": 0.0}


def residual_coefs(gan_cfg, schedule, x_t, t, s):
    """(a_{t|s}, sigma_{t|s}) broadcast to x_t when `gan.d_residual` is on, else None: once per loss call."""
    return tuple(append_dims(v, x_t) for v in transition(schedule, t, s)) if gan_cfg.d_residual else None


def fourier_bands(gan_cfg, step: int) -> float | None:
    """How many of D's Fourier bands are on at `step` with `gan.d_fourier_anneal` (all of them once the
    anneal is over), else None. D first sees only the coarsest bands, so it is smooth while G learns which
    mode each x_t goes to, and sharpens as training goes on."""
    return gan_cfg.d_fourier * min(step / gan_cfg.d_fourier_anneal, 1.0) if gan_cfg.d_fourier_anneal else None


def discriminate(disc, x_prev, x_t, coefs, net_t, bands):
    """D on a pair; with residual `coefs` (a_{t|s}, sigma_{t|s}) the pair is (x_{t-1}, (x_t - a_{t|s} x_{t-1}) /
    sigma_{t|s}), the forward noise that would take x_{t-1} to x_t. For one step that is a bijection of
    (x_{t-1}, x_t), so D judges the same joint, but the consistency of x_{t-1} with x_t becomes "this input
    is N(0, I) and independent of x_{t-1}" instead of a relation an MLP on the concatenated pair has to learn."""
    if coefs is not None:
        x_t = (x_t - coefs[0] * x_prev) / coefs[1]
    return disc(x_prev, x_t, net_t) if bands is None else disc(x_prev, x_t, net_t, bands=bands)


def gan_loss(phase: str, gan_cfg, schedule, generate, disc, pairs, rng, step: int, extra=None) -> torch.Tensor:
    """DDGAN's per-sample loss of one phase on real pairs (t, s, x_s, x_t) (`step_pairs`). disc: softplus(-D(real))
    + softplus(D(fake)) + r1_gamma / 2 ||grad D(real)||^2 every `lazy_reg` steps (unscaled, as in the paper's
    code); gen: softplus(-D(fake)), plus `extra(x_t, t, x0')` per sample when given. The fake x_s is drawn from
    the posterior q(x_s | x_t, x0') with x0' = generate(x_t, t, net_t, latent) and a fresh latent."""
    t, s, x_s, x_t = pairs
    net_t, coefs, bands = net_time(schedule, t), residual_coefs(gan_cfg, schedule, x_t, t, s), fourier_bands(gan_cfg, step)

    def fake():
        x0 = generate(x_t, t, net_t, rng.randn((x_t.shape[0], gan_cfg.latent_dim)))
        return x0, posterior_sample(schedule, x_t, x0, t, s, rng.randn(x_t.shape))

    if phase == "disc":
        with torch.no_grad():
            x_fake = fake()[1]
        r1 = gan_cfg.r1_gamma > 0 and step % gan_cfg.lazy_reg == 0
        x_s.requires_grad_(r1)
        d_real = discriminate(disc, x_s, x_t, coefs, net_t, bands)
        loss = F.softplus(-d_real) + F.softplus(discriminate(disc, x_fake, x_t, coefs, net_t, bands))
        if r1:
            loss = loss + 0.5 * gan_cfg.r1_gamma * _r1(d_real, x_s)
        return loss
    x0, x_fake = fake()
    loss = F.softplus(-discriminate(disc, x_fake, x_t, coefs, net_t, bands))
    return loss if extra is None else loss + extra(x_t, t, x0)


class DDGAN(Family):
    """The DDGAN family: generator and discriminator, two optimizer phases (D, then G, each step)."""

    phases = {"disc": ("disc",), "gen": ("gen",)}  # optimizer phase -> the modules it trains
    draws_x0 = True  # G(x_t, z, t) is a draw, not E[x | z_t]

    def __init__(self, cfg, sample_shape: tuple[int, ...]):
        super().__init__(cfg, sample_shape)
        self.schedule = build_schedule(cfg.schedule)
        if self.schedule.num_timesteps is None:
            raise TrilemmaError(
                f"schedule.name: ddgan needs a discrete schedule (e.g. vp-sde-grid), not {cfg.schedule.name!r}"
            )
        if cfg.gan.g_fourier:
            raise TrilemmaError("gan.g_fourier widens a distilled generator's input; a ddgan generator sees Fourier "
                                "features through model.fourier")
        for key in ("lazy_reg", "mapping_layers"):
            if getattr(cfg.gan, key) < 1:
                raise TrilemmaError(f"gan.{key} must be >= 1, got {getattr(cfg.gan, key)}")
        self.modules = nn.ModuleDict({
            "gen": build_generator(cfg.model, cfg.gan, sample_shape),
            "disc": build_discriminator(cfg.gan, sample_shape),
        })

    def ema_names(self) -> list[str]:
        return ["gen"]

    def optimizer_options(self, phase: str) -> dict:
        return gan_optimizer_options(self.cfg.gan, phase)

    def denoiser(self, modules: nn.ModuleDict) -> GANDenoiser:
        return GANDenoiser(modules["gen"], self.schedule)

    def residual_coefs(self, x_t, t, s):
        return residual_coefs(self.cfg.gan, self.schedule, x_t, t, s)

    def fourier_bands(self, step: int) -> float | None:
        return fourier_bands(self.cfg.gan, step)

    discriminate = staticmethod(discriminate)

    def loss(self, phase: str, modules: nn.ModuleDict, x: torch.Tensor, rng, step: int) -> torch.Tensor:
        """Per-sample loss of one phase (`gan_loss`) on real pairs of the schedule's own T-step grid."""
        gen = modules["gen"]
        pairs = step_pairs(self.schedule, x, rng.rand(x.shape[0]), rng.randn(x.shape), rng.randn(x.shape))
        return gan_loss(phase, self.cfg.gan, self.schedule, lambda x_t, t, net_t, latent: gen(x_t, net_t, latent),
                        modules["disc"], pairs, rng, step)
