"""Time-conditional discriminators D(x_{t-1}, x_t, t) -> logit for DDGAN (Xiao et al. 2022, sec. 3.2).

Both see the pair concatenated (features for 2-D data, channels for images) and the step through a
sinusoidal embedding, and return one unnormalised logit per sample (B,).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .mlp import fourier_features, timestep_embedding


def minibatch_std(h: torch.Tensor, group: int) -> torch.Tensor:
    """Append one feature (channel) to h (B, C, ...): the mean over features and positions of the
    standard deviation across a group of samples (Karras et al. 2018, sec. 3), the same for every member.
    Groups are runs of gcd(group, B) consecutive samples, so a batch split into contiguous per-process
    slices whose size `group` divides sees the same groups as one process with the whole batch."""
    n = h.shape[0]
    g = math.gcd(group, n)
    y = h.reshape(n // g, g, *h.shape[1:])  # (B/g, g, C, ...)
    y = (y.var(dim=1, unbiased=False) + 1e-8).sqrt().flatten(1).mean(1)  # (B/g,)
    y = y.repeat_interleave(g).reshape(n, *([1] * (h.dim() - 1)))  # (B, 1, ...)
    return torch.cat([h, y.expand(n, 1, *h.shape[2:])], dim=1)


class MLPDiscriminator(nn.Module):
    """(x_prev, x_t) (B, D) each, timestep (B,) -> (B,): residual LeakyReLU(0.2) blocks of width
    `hidden`, the time embedding added to every block, and with `group` > 0 a `minibatch_std` feature
    before the logit. With `fourier` > 0 both inputs are seen through `fourier_features` whose lowest
    period is `fourier_period`: without them an MLP learns sharp modes (the unit-variance 25-Gaussian
    grid's are 0.018 wide) so slowly that the generator outruns it and the game stalls at chance. The
    period must exceed the span of the inputs: points a period apart share every feature but x itself,
    so a generator overshooting one edge of the data looks, to D, like real data at the other edge
    (8 suits unit-variance data, whose x_t spans about [-3.5, 3.5]; scale it with the data). Without
    `raw_input` D sees only the bounded periodic features: a D that sees x itself can grow linearly
    outside the data, where neither real nor fake samples constrain it, and pull G's samples outward.
    `bands` in forward switches the Fourier bands on coarse-to-fine (`coarse_to_fine_window`; None: all on)."""

    def __init__(self, dim: int = 2, hidden: int = 256, depth: int = 3, temb_dim: int = 128, fourier: int = 0,
                 group: int = 0, fourier_period: float = 8.0, raw_input: bool = True):
        super().__init__()
        self.temb_dim, self.fourier, self.group, self.raw_input = temb_dim, fourier, group, raw_input
        self.fourier_base = 2 * math.pi / fourier_period
        self.time = nn.Sequential(nn.Linear(temb_dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden))
        self.inp = nn.Linear(2 * dim * (1 + 2 * fourier), hidden)
        self.temb_proj = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
        self.blocks = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
        self.out = nn.Linear(hidden + (group > 0), 1)

    def forward(self, x_prev: torch.Tensor, x_t: torch.Tensor, timestep: torch.Tensor,
                bands: float | None = None) -> torch.Tensor:
        emb = self.time(timestep_embedding(timestep, self.temb_dim))  # (B, hidden)
        pair = torch.cat([x_prev, x_t], dim=1)  # (B, 2D)
        feats = fourier_features(pair, self.fourier, self.fourier_base, self.raw_input, bands)  # (B, 2D (1 + 2 F))
        h = self.inp(feats)  # (B, hidden)
        for block, proj in zip(self.blocks, self.temb_proj):
            h = h + block(F.leaky_relu(h + proj(emb), 0.2))
        h = F.leaky_relu(h, 0.2)
        return self.out(minibatch_std(h, self.group) if self.group else h).squeeze(1)


class _DownBlock(nn.Module):
    """Residual conv block with the time embedding added after the first conv; halves the
    resolution unless it is the last level."""

    def __init__(self, c_in: int, c_out: int, emb: int, down: bool):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c_in, c_out, 3, padding=1), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.temb = nn.Linear(emb, c_out)
        self.skip = nn.Conv2d(c_in, c_out, 1, bias=False) if c_in != c_out else nn.Identity()
        self.down = down

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.leaky_relu(h, 0.2)) + self.temb(emb)[:, :, None, None]
        y = self.conv2(F.leaky_relu(y, 0.2))
        h = (y + self.skip(h)) / math.sqrt(2)
        return F.avg_pool2d(h, 2) if self.down else h


class ConvDiscriminator(nn.Module):
    """(x_prev, x_t) (B, C, H, W) each, timestep (B,) -> (B,): residual conv levels (one per entry of
    `channels`, halving the resolution between levels), a `minibatch_std` channel over groups of up to
    `group` samples (0: none), then a sum over space and a linear logit."""

    def __init__(self, in_channels: int = 1, channels: tuple[int, ...] = (32, 64, 128), temb_dim: int = 128,
                 group: int = 4):
        super().__init__()
        emb = 4 * channels[0]
        self.temb_dim, self.group = temb_dim, group
        self.time = nn.Sequential(nn.Linear(temb_dim, emb), nn.LeakyReLU(0.2), nn.Linear(emb, emb))
        self.inp = nn.Conv2d(2 * in_channels, channels[0], 3, padding=1)
        widths = [channels[0], *channels]
        self.blocks = nn.ModuleList(
            _DownBlock(widths[i], widths[i + 1], emb, down=i < len(channels) - 1) for i in range(len(channels))
        )
        self.final = nn.Conv2d(channels[-1] + (group > 0), channels[-1], 3, padding=1)
        self.out = nn.Linear(channels[-1], 1)

    def forward(self, x_prev: torch.Tensor, x_t: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        emb = self.time(timestep_embedding(timestep, self.temb_dim))  # (B, emb)
        h = self.inp(torch.cat([x_prev, x_t], dim=1))  # (B, 2C, H, W) -> (B, c0, H, W)
        for block in self.blocks:
            h = block(h, emb)
        h = F.leaky_relu(h, 0.2)
        h = self.final(minibatch_std(h, self.group) if self.group else h)
        return self.out(F.leaky_relu(h, 0.2).sum(dim=(2, 3))).squeeze(1)  # (B, c) -> (B,)
