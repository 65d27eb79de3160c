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
    out_channels: int | None = None,
    **extra,
) -> UNet2DModel:
    """A UNet2DModel with one resolution level per entry of `channels` (attention where asked);
    `extra` goes to UNet2DModel (e.g. the class-embedding options of a GAN generator). `out_channels`
    defaults to `in_channels`."""
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention))
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=out_channels or in_channels,
        block_out_channels=tuple(channels),
        down_block_types=down,
        up_block_types=up,
        layers_per_block=layers_per_block,
        norm_num_groups=norm_groups,
        dropout=dropout,
        **extra,
    )


class UNet(nn.Module):
    """Wraps a UNet2DModel so the backbone returns a tensor; `.unet` is what `export` saves."""

    def __init__(self, unet: UNet2DModel):
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self.unet(x, timestep).sample


class GANUNet(nn.Module):
    """A DDGAN image generator G(x_t, timestep, latent) -> x0' in [-1, 1] (Xiao et al. 2022, sec. 4):
    the latent goes through a mapping MLP into UNet2DModel's class embedding, which is added to the
    time embedding and applied as a GroupNorm scale and shift in every ResNet block (AdaGN, with
    `class_embed_type="identity"` and `resnet_time_scale_shift="scale_shift"`); tanh output for data in
    [-1, 1], a linear one for unbounded data (an autoencoder's latents). `networks.latent_generator` also wraps a
    trained UNet in it, with an identity class embedding added to its time embedding as that UNet was trained."""

    def __init__(self, unet: UNet2DModel, latent_dim: int, mapping_layers: int = 3, tanh: bool = True):
        super().__init__()
        emb = unet.config.block_out_channels[0] * 4  # UNet2DModel's time-embedding width
        layers, width = [], latent_dim
        for _ in range(mapping_layers):
            layers += [nn.Linear(width, emb), nn.SiLU()]
            width = emb
        self.mapping = nn.Sequential(*layers[:-1])  # (B, latent_dim) -> (B, emb), no final activation
        self.unet, self.latent_dim, self.tanh = unet, latent_dim, tanh

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        out = self.unet(x, timestep, class_labels=self.mapping(latent)).sample
        return torch.tanh(out) if self.tanh else out
