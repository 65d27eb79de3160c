"""Model families on the shared core: each is a schedule, modules, phases and a loss.

Every family has `modules`, `phases`, `sample_shape` (the space its sampler works in), `ema_names()`,
`optimizer_options(phase)`, `denoiser(modules)` and `loss(phase, modules, x, rng, step)`. Optional hooks the
training loop and the samplers look for: `training_data(data, device, progress)` (what the loader draws from,
e.g. cached latents), `finalize(ema, raw, data, device)` (before each checkpoint), `checkpoint_meta(ema)`
(extra config.json fields), `preview(ema, data, path, device)` (instead of a sample grid) and `decode(x)`
(samples -> data space, a latent model's decoder).
"""

from __future__ import annotations

from torch import nn

from ..errors import TrilemmaError
from .autoencoder import AutoencoderFamily
from .ddgan import DDGAN, GANDenoiser
from .ddpm import DDPM, ddpm_loss
from .latent import LatentFamily
from .vdm import VDM, VDMDenoiser

FAMILIES = {"ddpm": DDPM, "ddgan": DDGAN, "vdm": VDM, "autoencoder": AutoencoderFamily}


def build_family(cfg, data_shape: tuple[int, ...], meta: dict | None = None, where: str = "config"):
    """The family object a config names (a fixed table, never a lookup by arbitrary string), for data of
    `data_shape`; with `latent.autoencoder`, that family on the autoencoder's latents (`LatentFamily`, which
    checks a loaded checkpoint's `meta` against the autoencoder it finds)."""
    if cfg.family not in FAMILIES:
        raise TrilemmaError(f"family {cfg.family!r} is not one of {', '.join(FAMILIES)}")
    if cfg.latent.autoencoder and cfg.family != "autoencoder":
        return LatentFamily(FAMILIES[cfg.family], cfg, data_shape, meta, where)
    return FAMILIES[cfg.family](cfg, data_shape)


__all__ = ["DDPM", "DDGAN", "VDM", "VDMDenoiser", "GANDenoiser", "AutoencoderFamily", "LatentFamily", "FAMILIES",
           "build_family", "ddpm_loss", "denoiser_from_checkpoint", "sampler_from_checkpoint", "decoder_of", "bound_from_checkpoint",
           "no_bound_reason", "autoencoder_from_checkpoint"]


def data_shape_of(ck) -> tuple[int, ...]:
    """The data's per-sample shape of a checkpoint (its sample shape, unless it is a latent model's)."""
    return tuple(ck.meta.get("data_shape", ck.sample_shape))


def _loaded_family(ck, device=None):
    """The family of a loaded checkpoint with its EMA weights, in eval mode."""
    family = build_family(ck.cfg, data_shape_of(ck), ck.meta, str(ck.path))
    try:  # the checkpoint's weights are the EMA modules (all of DDPM and VDM; DDGAN's generator only)
        nn.ModuleDict({name: family.modules[name] for name in family.ema_names()}).load_state_dict(ck.weights)
    except RuntimeError as e:
        raise TrilemmaError(f"{ck.path}: weights do not match the config ({str(e).splitlines()[0]})") from None
    if tuple(family.sample_shape) != ck.sample_shape:
        raise TrilemmaError(f"{ck.path / 'config.json'}: sample_shape {list(ck.sample_shape)} does not match the "
                            f"model's {list(family.sample_shape)}")
    family.modules.to(device).eval()
    return family


def denoiser_from_checkpoint(ck, device=None):
    """The EMA denoiser of a loaded checkpoint (`checkpoint.load_checkpoint`), in eval mode (a latent
    model's works on latents: `sampler_from_checkpoint` also gives its decoder)."""
    return sampler_from_checkpoint(ck, device)[0]


def autoencoder_from_checkpoint(ck, device=None, where: str = ""):
    """The EMA `Autoencoder` module of a loaded autoencoder checkpoint, in eval mode; `where` prefixes the
    error for any other kind of checkpoint."""
    if ck.cfg.family != "autoencoder":
        raise TrilemmaError(f"{where}{ck.path} is a {ck.cfg.family} checkpoint, not an autoencoder")
    return _loaded_family(ck, device).modules["ae"]


def decoder_of(family):
    """samples -> data: a latent model's decoder, the identity for a model in data space."""
    return getattr(family, "decode", lambda x: x)


def sampler_from_checkpoint(ck, device=None):
    """(EMA denoiser in eval mode, decode) of a loaded checkpoint: sample with the denoiser in
    `ck.sample_shape`, then `decode` the result into data space."""
    family = _loaded_family(ck, device)
    return family.denoiser(family.modules), decoder_of(family)


def no_bound_reason(ck) -> str | None:
    """Why a checkpoint has no variational bound on the images' -log p(x) (ddgan, autoencoder, any latent
    model), or None when it has one."""
    if ck.cfg.latent.autoencoder:
        return ("a latent model's bound is on its latents' density, not on the images' likelihood; bits/dim is "
                "defined for pixel-space vdm and ddpm models")
    if not hasattr(FAMILIES[ck.cfg.family], "terms"):
        return f"{ck.cfg.family} models have no likelihood bound (bits/dim needs vdm or ddpm)"
    return None


def bound_from_checkpoint(ck, device=None):
    """(terms_fn, to_bpd, name) of a checkpoint's variational bound on -log p(x), for
    `metrics.likelihood.evaluate_bound`; a TrilemmaError where `no_bound_reason` gives one."""
    reason = no_bound_reason(ck)
    if reason:
        raise TrilemmaError(f"{ck.path}: {reason}")
    family = _loaded_family(ck, device)
    return (lambda x, u, eps, eps_0: family.terms(family.modules, x, u, eps, eps_0)), family.to_bpd, family.bound_name()
