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
    t, s = k / T, (k - 1) / T
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
        """Adam(beta1, beta2) with separate learning rates for G and D (Xiao et al. 2022, appendix)."""
        g = self.cfg.gan
        return {"lr": g.lr_g if phase == "gen" else g.lr_d, "betas": (g.beta1, g.beta2), "weight_decay": 0.0}

    def denoiser(self, modules: nn.ModuleDict) -> GANDenoiser:
        return GANDenoiser(modules["gen"], self.schedule)

    def _fake(self, gen, x_t, t, s, rng, net_t):
        latent = rng.randn((x_t.shape[0], self.cfg.gan.latent_dim))
        x0 = gen(x_t, net_t, latent)
        return posterior_sample(self.schedule, x_t, x0, t, s, rng.randn(x_t.shape))

    def residual_coefs(self, x_t, t, s):
        """(a_{t|s}, sigma_{t|s}) broadcast to x_t when `gan.d_residual` is on, else None: once per loss call."""
        return tuple(append_dims(v, x_t) for v in transition(self.schedule, t, s)) if self.cfg.gan.d_residual else None

    def fourier_bands(self, step: int) -> float | None:
        """How many of D's Fourier bands are on at `step` with `gan.d_fourier_anneal` (all of them once the
        anneal is over), else None. D first sees only the coarsest bands, so it is smooth while G learns which
        mode each x_t goes to, and sharpens as training goes on."""
        g = self.cfg.gan
        return g.d_fourier * min(step / g.d_fourier_anneal, 1.0) if g.d_fourier_anneal else None

    @staticmethod
    def discriminate(disc, x_prev, x_t, coefs, net_t, bands):
        """D on a pair; with residual `coefs` (a_{t|s}, sigma_{t|s}) the pair is (x_{t-1}, (x_t - a_{t|s} x_{t-1}) /
        sigma_{t|s}), the forward noise that would take x_{t-1} to x_t. For one step that is a bijection of
        (x_{t-1}, x_t), so D judges the same joint, but the consistency of x_{t-1} with x_t becomes "this input
        is N(0, I) and independent of x_{t-1}" instead of a relation an MLP on the concatenated pair has to learn."""
        if coefs is not None:
            x_t = (x_t - coefs[0] * x_prev) / coefs[1]
        return disc(x_prev, x_t, net_t) if bands is None else disc(x_prev, x_t, net_t, bands=bands)

    def loss(self, phase: str, modules: nn.ModuleDict, x: torch.Tensor, rng, step: int) -> torch.Tensor:
        """Per-sample loss. disc: softplus(-D(real)) + softplus(D(fake)) + r1_gamma / 2 ||grad D(real)||^2
        every `lazy_reg` steps (unscaled, as in the paper's code); gen: softplus(-D(fake))."""
        gen, disc = modules["gen"], modules["disc"]
        t, s, x_s, x_t = step_pairs(self.schedule, x, rng.rand(x.shape[0]), rng.randn(x.shape), rng.randn(x.shape))
        net_t, coefs, bands = net_time(self.schedule, t), self.residual_coefs(x_t, t, s), self.fourier_bands(step)
        if phase == "disc":
            with torch.no_grad():
                fake = self._fake(gen, x_t, t, s, rng, net_t)
            r1 = self.cfg.gan.r1_gamma > 0 and step % self.cfg.gan.lazy_reg == 0
            x_s.requires_grad_(r1)
            d_real = self.discriminate(disc, x_s, x_t, coefs, net_t, bands)
            loss = F.softplus(-d_real) + F.softplus(self.discriminate(disc, fake, x_t, coefs, net_t, bands))
            if r1:
                loss = loss + 0.5 * self.cfg.gan.r1_gamma * _r1(d_real, x_s)
            return loss
        fake = self._fake(gen, x_t, t, s, rng, net_t)
        return F.softplus(-self.discriminate(disc, fake, x_t, coefs, net_t, bands))
