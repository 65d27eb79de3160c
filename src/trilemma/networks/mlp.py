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


class MLP(nn.Module):
    """x (B, D), timestep (B,) -> (B, D): `depth` residual SiLU blocks of width `hidden`, the time
    embedding added to every block (the MLP analogue of a UNet's time conditioning)."""

    def __init__(self, dim: int = 2, hidden: int = 256, depth: int = 4, temb_dim: int = 128):
        super().__init__()
        self.temb_dim = temb_dim
        self.time = nn.Sequential(nn.Linear(temb_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, hidden)) for _ in range(depth)
        )
        self.temb_proj = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        emb = self.time(timestep_embedding(timestep, self.temb_dim))  # (B, hidden)
        h = self.inp(x)
        for block, proj in zip(self.blocks, self.temb_proj):
            h = h + block(h + proj(emb))
        return self.out(h)
