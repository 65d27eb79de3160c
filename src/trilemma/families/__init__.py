"""Model families on the shared core: each is a schedule, modules, phases and a loss."""

from __future__ import annotations

from torch import nn

from ..errors import TrilemmaError
from .ddgan import DDGAN, GANDenoiser
from .ddpm import DDPM, ddpm_loss
from .vdm import VDM, VDMDenoiser

FAMILIES = {"ddpm": DDPM, "ddgan": DDGAN, "vdm": VDM}


def build_family(cfg, sample_shape: tuple[int, ...]):
    """The family object a config names (a fixed table, never a lookup by arbitrary string)."""
    if cfg.family not in FAMILIES:
        raise TrilemmaError(f"family {cfg.family!r} is not one of {', '.join(FAMILIES)}")
    return FAMILIES[cfg.family](cfg, sample_shape)


__all__ = ["DDPM", "DDGAN", "VDM", "VDMDenoiser", "GANDenoiser", "FAMILIES", "build_family", "ddpm_loss", "denoiser_from_checkpoint", "bound_from_checkpoint"]


def _loaded_family(ck, device=None):
    """The family of a loaded checkpoint with its EMA weights, in eval mode."""
    family = build_family(ck.cfg, ck.sample_shape)
    try:  # the checkpoint's weights are the EMA modules (all of DDPM and VDM; DDGAN's generator only)
        nn.ModuleDict({name: family.modules[name] for name in family.ema_names()}).load_state_dict(ck.weights)
    except RuntimeError as e:
        raise TrilemmaError(f"{ck.path}: weights do not match the config ({str(e).splitlines()[0]})") from None
    family.modules.to(device).eval()
    return family


def denoiser_from_checkpoint(ck, device=None):
    """The EMA denoiser of a loaded checkpoint (`checkpoint.load_checkpoint`), in eval mode."""
    family = _loaded_family(ck, device)
    return family.denoiser(family.modules)


def bound_from_checkpoint(ck, device=None):
    """(terms_fn, to_bpd, name) of a checkpoint's variational bound on -log p(x), for
    `metrics.likelihood.evaluate_bound`; a TrilemmaError for a family without one (DDGAN)."""
    if not hasattr(FAMILIES[ck.cfg.family], "terms"):
        raise TrilemmaError(f"{ck.path}: a {ck.cfg.family} model has no likelihood bound (bits/dim needs vdm or ddpm)")
    family = _loaded_family(ck, device)
    return (lambda x, u, eps, eps_0: family.terms(family.modules, x, u, eps, eps_0)), family.to_bpd, family.bound_name()
