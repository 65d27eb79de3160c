"""Model families on the shared core: each is a schedule, modules, phases and a loss (`base.Family`, the
protocol). This module is the registry: a config's `family` names one of `FAMILIES` (a fixed table, never a
lookup by arbitrary string). From a checkpoint to ready modules: `trilemma.loading`.
"""

from __future__ import annotations

from ..errors import TrilemmaError
from .autoencoder import AutoencoderFamily
from .base import Family
from .ddgan import DDGAN, GANDenoiser
from .ddpm import DDPM, ddpm_loss
from .distill import Distillation
from .latent import LatentFamily
from .vdm import VDM, VDMDenoiser

FAMILIES: dict[str, type[Family]] = {"ddpm": DDPM, "ddgan": DDGAN, "vdm": VDM, "autoencoder": AutoencoderFamily,
                                     "distill": Distillation}


def build_family(cfg, data_shape: tuple[int, ...], meta: dict | None = None, where: str = "config") -> Family:
    """The family object a config names, for data of `data_shape`; with `latent.autoencoder`, that family on the
    autoencoder's latents (`LatentFamily`, which checks a loaded checkpoint's `meta` against the autoencoder it
    finds)."""
    if cfg.family not in FAMILIES:
        raise TrilemmaError(f"family {cfg.family!r} is not one of {', '.join(FAMILIES)}")
    if cfg.family == "distill":  # a student of the teacher it names (its own latent section stays empty)
        return Distillation(cfg, data_shape, meta, where)
    if cfg.latent.autoencoder and cfg.family != "autoencoder":
        return LatentFamily(FAMILIES[cfg.family], cfg, data_shape, meta, where)
    return FAMILIES[cfg.family](cfg, data_shape)


def __getattr__(name: str):
    """The checkpoint loaders lived here before `trilemma.loading`; `from trilemma.families import
    sampler_from_checkpoint` keeps working."""
    from .. import loading

    if name in loading.__all__:
        return getattr(loading, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DDPM", "DDGAN", "VDM", "VDMDenoiser", "GANDenoiser", "AutoencoderFamily", "Distillation", "Family", "LatentFamily",
           "FAMILIES", "build_family", "ddpm_loss"]
