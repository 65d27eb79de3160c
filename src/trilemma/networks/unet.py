"""diffusers' UNet2DModel behind the backbone contract net(x, timestep) -> tensor."""

from __future__ import annotations

import torch
from diffusers import UNet2DModel
from torch import nn


def build_unet(
    sample_size: int,
    in_channels: int,
    channels: list[int],
    attention: list[bool],
    layers_per_block: int = 1,
    norm_groups: int = 8,
    dropout: float = 0.0,
) -> UNet2DModel:
    """A UNet2DModel with one resolution level per entry of `channels` (attention where asked)."""
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention))
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=in_channels,
        block_out_channels=tuple(channels),
        down_block_types=down,
        up_block_types=up,
        layers_per_block=layers_per_block,
        norm_num_groups=norm_groups,
        dropout=dropout,
    )


class UNet(nn.Module):
    """Wraps a UNet2DModel so the backbone returns a tensor; `.unet` is what `export` saves."""

    def __init__(self, unet: UNet2DModel):
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self.unet(x, timestep).sample
