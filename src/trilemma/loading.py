"""From a checkpoint to ready-to-use modules: the EMA denoiser and decoder for sampling, an autoencoder, a
variational bound. Loading is apart from the family registry (`families.FAMILIES`): it builds the family a
checkpoint's config names and loads its EMA weights into it.
"""

from __future__ import annotations

import json

from torch import nn

from .errors import TrilemmaError
from .families import FAMILIES, build_family

__all__ = ["sampling_spacing", "checkpoint_sha256", "check_recorded_sha256", "data_shape_of", "loaded_family", "denoiser_from_checkpoint", "autoencoder_from_checkpoint", "decoder_of",
           "sampler_from_checkpoint", "no_bound_reason", "bound_from_checkpoint"]


def sampling_spacing(checkpoint, sampler: str) -> str:
    """The time grid a checkpoint samples on when none is given: a distilled student's trailing grid (the one it
    was trained on: an adversarial student's T steps, a progressive round's), else the sampler's own
    (`samplers.default_spacing`). `checkpoint` is a path, read for its family only, or a loaded checkpoint; an
    unreadable path gets the sampler's grid (loading it later says what is wrong)."""
    from .samplers import default_spacing

    family = getattr(getattr(checkpoint, "cfg", None), "family", None)
    if family is None:
        from .checkpoint import resolve_checkpoint

        try:
            family = json.loads((resolve_checkpoint(checkpoint) / "config.json").read_text())["config"]["family"]
        except (TrilemmaError, OSError, ValueError, KeyError, TypeError):
            family = None
    return "trailing" if family == "distill" else default_spacing(sampler)


def data_shape_of(ck) -> tuple[int, ...]:
    """The data's per-sample shape of a checkpoint (its sample shape, unless it is a latent model's)."""
    return tuple(ck.meta.get("data_shape", ck.sample_shape))


def loaded_family(ck, device=None):
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
    return loaded_family(ck, device).modules["ae"]


def decoder_of(family):
    """samples -> data space: `family.decode` (kept for code written before `families.base.Family`)."""
    return family.decode


def sampler_from_checkpoint(ck, device=None, runtime=None):
    """(EMA denoiser in eval mode, decode) of a loaded checkpoint: sample with the denoiser in
    `ck.sample_shape`, then `decode` the result into data space; its networks run under `runtime`
    (`runtime.Runtime`: precision, compile, layout; None: fp32 eager)."""
    family = loaded_family(ck, device)
    if family.no_sampler_reason:
        raise TrilemmaError(f"{ck.path}: {family.no_sampler_reason}")
    if runtime is not None:
        family.accelerate(runtime)
    return family.denoiser(family.modules), family.decode


def no_bound_reason(ck) -> str | None:
    """Why a checkpoint has no variational bound on the images' -log p(x) (ddgan, autoencoder, any latent
    model), or None when it has one."""
    if ck.cfg.latent.autoencoder:
        return ("a latent model's bound is on its latents' density, not on the images' likelihood; bits/dim is "
                "defined for pixel-space vdm and ddpm models")
    if not FAMILIES[ck.cfg.family].has_bound:
        return f"{ck.cfg.family} models have no likelihood bound (bits/dim needs vdm or ddpm)"
    return None


def bound_from_checkpoint(ck, device=None, runtime=None):
    """(terms_fn, to_bpd, name) of a checkpoint's variational bound on -log p(x), for
    `metrics.likelihood.evaluate_bound`, its network under `runtime` (None: fp32 eager); a TrilemmaError where
    `no_bound_reason` gives one."""
    reason = no_bound_reason(ck)
    if reason:
        raise TrilemmaError(f"{ck.path}: {reason}")
    family = loaded_family(ck, device)
    if runtime is not None:
        family.accelerate(runtime)
    return (lambda x, u, eps, eps_0: family.terms(family.modules, x, u, eps, eps_0)), family.to_bpd, family.bound_name()


def checkpoint_sha256(ck, sections: tuple[str, ...] | None = None) -> str:
    """What a model built on another checkpoint depends on (a latent model's autoencoder, a student's teacher):
    SHA-256 over the checkpoint's weights file and its config. By default every section but `train` and `sample`
    (which do not change what the weights compute) as the checkpoint's config.json stores them, so a config key
    added to the library later (with its default) leaves the hash alone. Named `sections` are hashed from the
    loaded config, one section as itself, as latent checkpoints have always recorded their autoencoder's."""
    from .config import to_dict
    from .paths import sha256_file

    stored = ck.meta.get("config")
    cfg = stored if sections is None and isinstance(stored, dict) else to_dict(ck.cfg)
    keep = sections or tuple(k for k in cfg if k not in ("train", "sample"))
    h = sha256_file(ck.path / "model.safetensors")
    h.update(json.dumps(cfg[keep[0]] if len(keep) == 1 else {k: cfg[k] for k in keep}, sort_keys=True).encode())
    return h.hexdigest()


def check_recorded_sha256(meta: dict | None, key: str, sha: str, where: str, path, what: str, fix: str) -> None:
    """A checkpoint built on another records its SHA-256 under meta[key]["sha256"]; refuse (one line) when the
    checkpoint found at `path` now has another (retrained or replaced). Nothing to check for a new run (meta None)."""
    if meta is None:
        return
    recorded = meta.get(key)
    recorded = recorded.get("sha256") if isinstance(recorded, dict) else None
    if recorded != sha:
        raise TrilemmaError(f"{where}: trained on the {what} with SHA-256 {str(recorded)[:16]}..., but {path} has "
                            f"{sha[:16]}... (retrained or replaced); {fix}")
