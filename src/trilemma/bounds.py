"""The pieces of a variational bound on -log p(x), shared by every family that has one (VDM's bound, DDPM's
VLB) and by the autoencoder's KL term: the discretised decoder p(x | z_0), the prior KL at t = 1, the KL of a
diagonal Gaussian to N(0, I), and bits per dimension. `metrics.likelihood.evaluate_bound` averages a bound
over a data set."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from .denoiser import append_dims

__all__ = ["LN2", "BoundTerms", "bits_per_dim", "decoder_logits", "decoder_nll", "gaussian_kl", "level_grid",
           "prior_kl"]

LN2 = math.log(2.0)


def level_grid(levels: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """The `levels` values of discretised data on [-1, 1]: -1 + 2k / (levels - 1), k = 0..levels-1
    (8-bit pixels p / 127.5 - 1, as `data` scales them)."""
    return torch.linspace(-1.0, 1.0, levels, device=device, dtype=dtype)


def decoder_logits(mean: torch.Tensor, log_var: torch.Tensor, levels: int) -> torch.Tensor:
    """Logits (..., levels) of VDM's factorised decoder p(x | z_0): the Gaussian
    q(z_0 | x) read as a likelihood over the data's levels, logit_k = -(mean - x_k)^2 / (2 exp(log_var)),
    with mean = z_0 / alpha_0 and log_var = gamma_0 (the variance of z_0 / alpha_0 around x)."""
    grid = level_grid(levels, mean.device, mean.dtype)
    return -0.5 * (mean[..., None] - grid).square() * torch.exp(-log_var)


def decoder_nll(x: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor, levels: int | None) -> torch.Tensor:
    """-log p(x | z_0) per sample (B,), summed over dimensions: the categorical of `decoder_logits` at x's
    level for discretised data (a true probability, so the bound is a bound on the discrete data), the
    Gaussian N(x; mean, exp(log_var)) density for continuous data (`levels` None)."""
    log_var = torch.as_tensor(log_var).to(x.dtype)  # a scalar, or per sample (B,)
    if levels is None:
        log_var = append_dims(log_var, x)
        nll = 0.5 * ((x - mean).square() * torch.exp(-log_var) + log_var + math.log(2 * math.pi))
        return nll.flatten(1).sum(1)
    half = 2 / (levels - 1)  # level spacing
    k = ((x + 1) / half).round().long().clamp(0, levels - 1)  # the level index of each value
    # Only levels within a few decoder standard deviations of the mean carry weight: the log-normaliser over
    # a window of +-(12 std + 1 spacing) levels around it equals the full one to within exp(-70) (and costs
    # 7 levels instead of 256 at gamma_0 = -13.3). A mean outside [-1, 1] (a model's x0_hat) gets the window
    # at the nearest end, whose levels are the nearest to it.
    reach = math.ceil(12 * math.exp(0.5 * log_var.max().item()) / half) + 1
    lv = log_var if log_var.ndim == 0 else log_var.reshape(-1, *([1] * x.ndim))  # (B, 1, ..., 1) over (B, ..., levels)
    if 2 * reach + 1 >= levels:
        logp = F.log_softmax(decoder_logits(mean, lv, levels), dim=-1)  # (B, ..., levels)
        return -logp.gather(-1, k[..., None]).squeeze(-1).flatten(1).sum(1)
    centre = ((mean.detach() + 1) / half).round().long().clamp(reach, levels - 1 - reach)  # (B, ...)
    idx = centre[..., None] + torch.arange(-reach, reach + 1, device=x.device)  # (B, ..., window)
    inside = (idx >= 0) & (idx < levels)
    logits = -0.5 * (mean[..., None] - (idx.to(mean.dtype) * half - 1)).square() * torch.exp(-lv)
    norm = torch.logsumexp(logits.masked_fill(~inside, -math.inf), dim=-1)  # (B, ...)
    own = -0.5 * (mean - (k.to(mean.dtype) * half - 1)).square() * torch.exp(-lv.squeeze(-1) if lv.ndim else -lv)
    return (norm - own).flatten(1).sum(1)


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) per sample (B,), summed over coordinates (Kingma & Welling 2014,
    appendix B): 0.5 sum(mean^2 + var - 1 - logvar)."""
    return (0.5 * (mean.square() + logvar.exp() - 1.0 - logvar)).flatten(1).sum(1)


def prior_kl(x: torch.Tensor, gamma_1: torch.Tensor) -> torch.Tensor:
    """KL(q(z_1 | x) || N(0, I)) per sample (B,), VDM's prior loss: q(z_1 | x) = N(alpha_1 x, sigma_1^2 I), with
    log sigma_1^2 = logsigmoid(gamma_1) (stable for any gamma_1)."""
    alpha_1, log_var = (append_dims(v, x) for v in (torch.sigmoid(-gamma_1).sqrt(), F.logsigmoid(gamma_1)))
    return gaussian_kl(alpha_1 * x, log_var.expand_as(x))


def bits_per_dim(nats: torch.Tensor, dims: int) -> torch.Tensor:
    """Nats per sample -> bits per dimension."""
    return nats / (dims * LN2)


@dataclass
class BoundTerms:
    """The three terms of the variational bound per sample (B,), in nats summed over dimensions."""

    prior: torch.Tensor
    recon: torch.Tensor
    diffusion: torch.Tensor

    def total(self) -> torch.Tensor:
        return self.prior + self.recon + self.diffusion
