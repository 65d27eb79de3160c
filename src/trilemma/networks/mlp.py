"""A residual MLP backbone for 2-D toy data, conditioned on a sinusoidal time embedding."""

from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of (B,) timesteps -> (B, dim) (Vaswani et al. 2017; DDPM appendix B)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def coarse_to_fine_window(n: int, bands: float, device=None, dtype=None) -> torch.Tensor:
    """(n,) weights of Fourier bands k = 0..n-1 with `bands` of them switched on: (1 - cos(pi clamp(bands - k,
    0, 1))) / 2, so band k fades in smoothly as `bands` goes from k to k + 1 (the coarse-to-fine window of
    Park et al. 2021, Nerfies, and Lin et al. 2021, BARF). bands = 0: all off; bands >= n: all on."""
    k = torch.arange(n, device=device, dtype=dtype)
    return (1 - torch.cos(math.pi * (bands - k).clamp(0, 1))) / 2


def fourier_features(x: torch.Tensor, n: int, base: float = math.pi, include_input: bool = True,
                     bands: float | None = None) -> torch.Tensor:
    """(B, D, *S) -> (B, D (1 + 2n), *S): x with sin and cos of 2^k base x, k = 0..n-1, per coordinate or
    channel (the
    positional encoding of Mildenhall et al. 2020; Tancik et al. 2020 show it lets an MLP fit fine
    detail; VDM's Fourier features are the same map). The lowest period, 2 pi / base, should exceed
    the inputs' range, or points a period apart look alike to every feature but x itself. Without
    `include_input` the x columns are zeros (same width), so the features are bounded and periodic.
    With `bands` the sin/cos of band k are scaled by `coarse_to_fine_window(n, bands)`."""
    if n == 0:
        return x
    spatial = [1] * (x.dim() - 2)
    freqs = base * 2.0 ** torch.arange(n, device=x.device, dtype=x.dtype)
    args = x[:, :, None] * freqs.view(1, 1, n, *spatial)  # (B, D, n, *S)
    sin, cos = torch.sin(args), torch.cos(args)
    if bands is not None:
        w = coarse_to_fine_window(n, bands, x.device, x.dtype).view(1, 1, n, *spatial)
        sin, cos = sin * w, cos * w
    return torch.cat([x if include_input else torch.zeros_like(x), sin.flatten(1, 2), cos.flatten(1, 2)], dim=1)


class FourierInput(nn.Module):
    """net(z, timestep) that sees z together with VDM's Fourier features sin/cos(2^n pi z), n = n_min..n_max
    (Kingma et al. 2021, appendix C): the highest frequency resolves the fine detail (the 8-bit levels) that
    the likelihood depends on and a network on raw z picks up slowly. `backbone` takes the
    C (1 + 2 (n_max - n_min + 1)) input channels and returns C."""

    def __init__(self, backbone: nn.Module, n_min: int, n_max: int):
        super().__init__()
        self.backbone, self.n_min, self.count = backbone, n_min, n_max - n_min + 1

    def forward(self, z: torch.Tensor, timestep: torch.Tensor, *latent: torch.Tensor) -> torch.Tensor:
        feats = fourier_features(z, self.count, math.pi * 2.0**self.n_min)  # (B, C (1 + 2 count), *S)
        return self.backbone(feats, timestep, *latent)  # a generator's backbone takes a latent too


class MLP(nn.Module):
    """x (B, D), timestep (B,) -> (B, D): `depth` residual SiLU blocks of width `hidden`, the time
    embedding added to every block (the MLP analogue of a UNet's time conditioning).

    With `latent_dim` > 0 it is a generator G(x, timestep, latent): the latent (B, latent_dim) goes
    through a small mapping network and joins the time embedding (DDGAN's generator conditioning).
    With `fourier` > 0 the input is seen through `fourier_features` of lowest period `fourier_period`:
    a DDGAN generator's last large step maps x_t to the nearest modes, a staircase in x_t that an MLP
    on raw x learns coarse-first (the spectral bias of Rahaman et al. 2019). `in_dim` (default `dim`) is the
    width of the input when it differs from the output's (a `FourierInput` backbone)."""

    def __init__(self, dim: int = 2, hidden: int = 256, depth: int = 4, temb_dim: int = 128, latent_dim: int = 0,
                 fourier: int = 0, fourier_period: float = 16.0, in_dim: int | None = None):
        super().__init__()
        self.temb_dim, self.latent_dim, self.fourier = temb_dim, latent_dim, fourier
        self.fourier_base = 2 * math.pi / fourier_period
        self.time = nn.Sequential(nn.Linear(temb_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        if latent_dim:
            self.mapping = nn.Sequential(nn.Linear(latent_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.inp = nn.Linear((in_dim or dim) * (1 + 2 * fourier), hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, hidden)) for _ in range(depth)
        )
        self.temb_proj = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, latent: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time(timestep_embedding(timestep, self.temb_dim))  # (B, hidden)
        if self.latent_dim:
            emb = emb + self.mapping(latent)
        h = self.inp(fourier_features(x, self.fourier, self.fourier_base))  # (B, D (1 + 2 fourier)) -> (B, hidden)
        for block, proj in zip(self.blocks, self.temb_proj):
            h = h + block(h + proj(emb))
        return self.out(h)
