"""Latent diffusion (Rombach et al. 2022): any family trained and sampled on an autoencoder's scaled latents.

A latent model is a ddpm, vdm or ddgan config with `latent.autoencoder` naming a trained `autoencoder` run.
`LatentFamily` wraps the inner family: the inner family is built on the latent shape (c, h, w) and sees
latents z = latent_scale * E[z | x] (encoded once at the start with `latent.cache`, else every batch);
its samples go through the decoder g. The autoencoder is frozen and not part of the latent checkpoint: the
checkpoint names it by path and by a SHA-256 of its weights and architecture, and refuses an autoencoder
that differs.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..checkpoint import load_checkpoint
from ..data import Dataset
from ..errors import TrilemmaError
from .autoencoder import encode_all
from .base import Family


def autoencoder_sha256(ck) -> str:
    """What a latent model was trained on: SHA-256 over the autoencoder checkpoint's weights file and its
    `autoencoder` config section (settings such as norm_groups change the computation, not the weight shapes)."""
    from ..loading import checkpoint_sha256

    return checkpoint_sha256(ck, ("autoencoder",))


def same_images(a, b) -> bool:
    """Whether two data configs give the same images (the data directory matters only for a folder)."""
    if a.name != "folder":
        a, b = dataclasses.replace(a, root=None), dataclasses.replace(b, root=None)
    toy_only = {"n": 1, "seed": 0, "toy": "grid25", "unit_variance": True}  # keys that do not apply to images
    return dataclasses.replace(a, **toy_only) == dataclasses.replace(b, **toy_only)


def load_autoencoder(path: str, device=None):
    """(the frozen EMA autoencoder module in eval mode, its checkpoint, `autoencoder_sha256` of it)."""
    from ..loading import autoencoder_from_checkpoint

    ck = load_checkpoint(path)
    ae = autoencoder_from_checkpoint(ck, device, "latent.autoencoder: ").requires_grad_(False)
    return ae, ck, autoencoder_sha256(ck)


class LatentFamily(Family):
    """`inner_cls` (DDPM, VDM or DDGAN) on the latents of the autoencoder at `cfg.latent.autoencoder`.

    `meta` is the config.json of a latent checkpoint being loaded (or resumed): its recorded autoencoder
    hash must match the autoencoder found at the path. A bound on latents is one on their density, not on the
    images' likelihood, so a latent model reports none (`has_bound` false).
    """

    def __init__(self, inner_cls, cfg, data_shape: tuple[int, ...], meta: dict | None = None, where: str = "config"):
        from ..loading import check_recorded_sha256

        self.ae, ae_ck, self.autoencoder_sha256 = load_autoencoder(cfg.latent.autoencoder)
        check_recorded_sha256(meta, "autoencoder", self.autoencoder_sha256, where, ae_ck.path, "autoencoder",
                              "point latent.autoencoder at the autoencoder this model was trained on")
        ae_data = ae_ck.cfg.data
        if not same_images(ae_data, cfg.data) or tuple(self.ae.data_shape) != tuple(data_shape):
            raise TrilemmaError(f"latent.autoencoder: {ae_ck.path} was trained on {ae_data.name} images of shape "
                                f"{tuple(self.ae.data_shape)}, not on this config's {cfg.data.name} {tuple(data_shape)}")
        if cfg.family == "vdm" and cfg.vdm.fourier:
            raise TrilemmaError("vdm.fourier: Fourier features sin/cos(2^n pi z) resolve 8-bit pixel levels; latents are "
                                "continuous, so a latent vdm needs vdm.fourier: false")
        if cfg.family == "ddgan" and cfg.gan.tanh:
            raise TrilemmaError("gan.tanh: a tanh generator bounds x0' to [-1, 1], but latents scaled to unit std are "
                                "not bounded; a latent ddgan needs gan.tanh: false")
        super().__init__(cfg, self.ae.latent_shape)
        self.data_shape = tuple(data_shape)
        self.inner = inner_cls(cfg, self.sample_shape)
        self.modules, self.phases, self.draws_x0 = self.inner.modules, self.inner.phases, self.inner.draws_x0
        self._encoded: tuple[torch.Tensor, torch.Tensor] | None = None  # (batch, its latents) without the cache

    def ema_names(self) -> list[str]:
        return self.inner.ema_names()

    def optimizer_options(self, phase: str) -> dict:
        return self.inner.optimizer_options(phase)

    def denoiser(self, modules: nn.ModuleDict):
        """The inner family's denoiser, on latents."""
        return self.inner.denoiser(modules)

    def training_data(self, data: Dataset, device, progress: bool = False) -> Dataset:
        """With `latent.cache`, the training split encoded once (scaled latents on the CPU); else the images."""
        if not self.cfg.latent.cache:
            return data
        z = encode_all(self.ae.to(device), data.x, device=device, progress=progress, desc="encode latents")
        return Dataset(x=z, y=data.y, kind="latents", name=f"{data.name} latents")

    def latents(self, x: torch.Tensor) -> torch.Tensor:
        """A training batch as latents: itself with `latent.cache` (the loader draws cached latents), else the
        batch encoded, once per batch rather than once per phase (ddgan)."""
        if self.cfg.latent.cache:
            return x
        if self._encoded is None or self._encoded[0] is not x:
            with torch.no_grad():
                self._encoded = (x, self.ae.to(x.device).encode(x))
        return self._encoded[1]

    def loss(self, phase: str, modules: nn.ModuleDict, x: torch.Tensor, rng, step: int) -> torch.Tensor:
        """The inner family's per-sample loss on the batch's latents."""
        return self.inner.loss(phase, modules, self.latents(x), rng, step)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images g(z / latent_scale) from sampled latents."""
        from ..runtime import autocast_call

        return autocast_call(self.ae.to(z.device).decode, self.runtime, z.device.type, z)

    def checkpoint_meta(self, ema: nn.ModuleDict) -> dict:
        return {"autoencoder": {"path": self.cfg.latent.autoencoder, "sha256": self.autoencoder_sha256,
                                "latent_scale": self.ae.latent_scale.item()}}
