"""Latent diffusion (Rombach et al. 2022): any family trained and sampled on an autoencoder's scaled latents.

A latent model is a ddpm, vdm or ddgan config with `latent.autoencoder` naming a trained `autoencoder` run.
`LatentFamily` wraps the inner family: the inner family is built on the latent shape (c, h, w) and sees
latents z = latent_scale * E[z | x] (encoded once at the start with `latent.cache`, else every batch);
its samples go through the decoder g. The autoencoder is frozen and not part of the latent checkpoint: the
checkpoint names it by path and by the SHA-256 of its weights, and refuses an autoencoder whose weights differ.
"""

from __future__ import annotations

import torch
from torch import nn

from ..checkpoint import load_checkpoint
from ..data import Dataset
from ..errors import TrilemmaError
from .autoencoder import encode_all


def load_autoencoder(path: str, device=None):
    """(the frozen EMA autoencoder module in eval mode, its checkpoint, the SHA-256 of its weights file)."""
    from ..features import file_sha256
    from . import _loaded_family

    ck = load_checkpoint(path)
    if ck.cfg.family != "autoencoder":
        raise TrilemmaError(f"latent.autoencoder: {ck.path} is a {ck.cfg.family} checkpoint, not an autoencoder")
    ae = _loaded_family(ck, device).modules["ae"].requires_grad_(False)
    return ae, ck, file_sha256(ck.path / "model.safetensors")


class LatentFamily:
    """`inner_cls` (DDPM, VDM or DDGAN) on the latents of the autoencoder at `cfg.latent.autoencoder`.

    `meta` is the config.json of a latent checkpoint being loaded (or resumed): its recorded autoencoder
    hash must match the autoencoder found at the path.
    """

    def __init__(self, inner_cls, cfg, data_shape: tuple[int, ...], meta: dict | None = None, where: str = "config"):
        self.cfg = cfg
        self.ae, ae_ck, self.autoencoder_sha256 = load_autoencoder(cfg.latent.autoencoder)
        if meta is not None:
            recorded = (meta.get("autoencoder") or {}).get("sha256")
            if recorded != self.autoencoder_sha256:
                raise TrilemmaError(
                    f"{where}: trained on the autoencoder with weights SHA-256 {str(recorded)[:16]}..., but "
                    f"{ae_ck.path} has {self.autoencoder_sha256[:16]}... (retrained or replaced); point "
                    "latent.autoencoder at the autoencoder this model was trained on")
        ae_data = ae_ck.cfg.data
        if ae_data.name != cfg.data.name or tuple(self.ae.data_shape) != tuple(data_shape):
            raise TrilemmaError(f"latent.autoencoder: {ae_ck.path} was trained on {ae_data.name} images of shape "
                                f"{tuple(self.ae.data_shape)}, not on this config's {cfg.data.name} {tuple(data_shape)}")
        if cfg.family == "vdm" and cfg.vdm.fourier:
            raise TrilemmaError("vdm.fourier: Fourier features sin/cos(2^n pi z) resolve 8-bit pixel levels; latents are "
                                "continuous, so a latent vdm needs vdm.fourier: false")
        if cfg.family == "ddgan" and cfg.gan.tanh:
            raise TrilemmaError("gan.tanh: a tanh generator bounds x0' to [-1, 1], but latents scaled to unit std are "
                                "not bounded; a latent ddgan needs gan.tanh: false")
        self.sample_shape = self.ae.latent_shape
        self.data_shape = tuple(data_shape)
        self.inner = inner_cls(cfg, self.sample_shape)
        if hasattr(self.inner, "levels"):
            self.inner.levels = None  # a bound on latents uses a continuous (Gaussian) decoder
        self.modules, self.phases = self.inner.modules, self.inner.phases

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

    def loss(self, phase: str, modules: nn.ModuleDict, x: torch.Tensor, rng, step: int) -> torch.Tensor:
        """The inner family's per-sample loss on the batch's latents."""
        if not self.cfg.latent.cache:
            with torch.no_grad():
                x = self.ae.to(x.device).encode(x)
        return self.inner.loss(phase, modules, x, rng, step)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images g(z / latent_scale) from sampled latents."""
        return self.ae.to(z.device).decode(z)

    def checkpoint_meta(self, ema: nn.ModuleDict) -> dict:
        return {"autoencoder": {"path": self.cfg.latent.autoencoder, "sha256": self.autoencoder_sha256,
                                "latent_scale": self.ae.latent_scale.item()}}
