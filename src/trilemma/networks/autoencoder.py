"""The latent-diffusion first stage: diffusers' AutoencoderKL behind encode / decode on the data's own shape.

Images are padded with the background value -1 before the encoder (Fashion-MNIST 28 -> 32, so f = 4 gives
8x8 latents) and the padding is cropped off the decoder's output, so reconstructions, their PSNR and the
decoded samples of a latent model all live on the data's shape. `latent_scale` (1 / std of the latents on
training data, Rombach et al. 2022, sec. 4.3.2) is a buffer, so it travels with the weights.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL
from torch import nn
from torch.nn import functional as F

from ..errors import TrilemmaError

PAD_VALUE = -1.0  # the data's background (a black pixel in [-1, 1])


def build_vae(in_channels: int, sample_size: int, channels: list[int], layers_per_block: int, latent_channels: int,
              norm_groups: int, mid_attention: bool) -> AutoencoderKL:
    """An AutoencoderKL with one resolution level per entry of `channels`: downsampling f = 2^(levels - 1)."""
    n = len(channels)
    return AutoencoderKL(
        in_channels=in_channels,
        out_channels=in_channels,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(channels),
        layers_per_block=layers_per_block,
        latent_channels=latent_channels,
        norm_num_groups=norm_groups,
        sample_size=sample_size,
        mid_block_add_attention=mid_attention,
    )


class Autoencoder(nn.Module):
    """A KL-regularised autoencoder (encoder e, decoder g) on images of shape `data_shape`.

    `posterior(x)` gives the mean and log-variance of q(z | x) in the autoencoder's own units; `encode(x)`
    is the posterior mean times `latent_scale`, the latent a diffusion model sees; `decode(z)` inverts that
    scaling and runs g. The padding added before e is cropped after g.
    """

    def __init__(self, vae: AutoencoderKL, pad: int, data_shape: tuple[int, ...]):
        super().__init__()
        self.vae, self.pad, self.data_shape = vae, pad, tuple(data_shape)
        self.register_buffer("latent_scale", torch.ones(()))  # set from training data (`families.autoencoder`)

    @property
    def factor(self) -> int:
        """The downsampling factor f."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(latent channels, (H + 2 pad) / f, (W + 2 pad) / f)."""
        _, h, w = self.data_shape
        p, f = self.pad, self.factor
        return (self.vae.config.latent_channels, (h + 2 * p) // f, (w + 2 * p) // f)

    def _check(self, x: torch.Tensor, shape: tuple[int, ...], what: str) -> None:
        if tuple(x.shape[1:]) != shape:
            raise TrilemmaError(f"autoencoder: {what} of shape {tuple(x.shape[1:])}, expected {shape}")

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z | x) = N(mean, exp(logvar)) per latent coordinate: (B, c, h, w) each, unscaled."""
        self._check(x, self.data_shape, "images")
        if self.pad:
            x = F.pad(x, (self.pad,) * 4, value=PAD_VALUE)  # (B, C, H + 2p, W + 2p)
        moments = self.vae.quant_conv(self.vae.encoder(x))  # (B, 2c, h, w)
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)  # as diffusers' DiagonalGaussianDistribution

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """g(z) for an unscaled latent, cropped to the data's shape."""
        x = self.vae.decode(z).sample  # (B, C, H + 2p, W + 2p)
        p = self.pad
        return x[..., p:-p, p:-p] if p else x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The scaled latent of x: latent_scale * E[z | x] (the posterior mean)."""
        return self.posterior(x)[0] * self.latent_scale

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images from scaled latents: g(z / latent_scale)."""
        self._check(z, self.latent_shape, "latents")
        return self.decode_raw(z / self.latent_scale)

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None):
        """(reconstruction, mean, logvar): g(z) with z = mean + exp(logvar / 2) noise (the reparameterised
        posterior sample; noise None decodes the mean)."""
        mean, logvar = self.posterior(x)
        z = mean if noise is None else mean + torch.exp(0.5 * logvar) * noise
        return self.decode_raw(z), mean, logvar

