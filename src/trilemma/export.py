"""Export to diffusers: a DDPM-family image checkpoint as a DDIMPipeline folder, an autoencoder as an
AutoencoderKL folder."""

from __future__ import annotations

from pathlib import Path

from .checkpoint import Checkpoint
from .errors import TrilemmaError
from .families import build_family
from .networks import UNet

PREDICTION_TYPES = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}


def ddim_scheduler_for(cfg):
    """A diffusers DDIMScheduler whose sampling loop is our `sample_ddim` on the same linear-beta
    schedule and leading time grid (also the baseline of benchmarks/sampler_overhead.py)."""
    from diffusers import DDIMScheduler

    sc = cfg.schedule
    if sc.name != "linear-beta":
        raise TrilemmaError(f"diffusers has no exact equivalent of the {sc.name!r} schedule; only linear-beta maps to DDIMScheduler")
    return DDIMScheduler(
        num_train_timesteps=sc.num_timesteps,
        beta_start=sc.beta_start,
        beta_end=sc.beta_end,
        beta_schedule="linear",
        prediction_type=PREDICTION_TYPES[cfg.model.prediction],
        clip_sample=False,  # our samplers never clip x0_hat
        set_alpha_to_one=True,  # the last step lands on t = 0 (alphabar = 1), as ours does
        steps_offset=0,
        timestep_spacing="leading",
    )


def export_diffusers(ck: Checkpoint, out: str | Path) -> Path:
    """Write `out/` with unet/, scheduler/ and model_index.json, loadable by
    `diffusers.DDIMPipeline.from_pretrained(out)`; the scheduler config reproduces our schedule."""
    from diffusers import DDIMPipeline

    out = Path(out)
    cfg = ck.cfg
    if cfg.family == "autoencoder":
        return export_autoencoder(ck, out)
    if cfg.family != "ddpm":
        raise TrilemmaError(f"{ck.path}: export --format diffusers supports ddpm-family checkpoints, not {cfg.family!r}")
    if cfg.latent.autoencoder:
        raise TrilemmaError(f"{ck.path}: a latent model samples latents; a DDIMPipeline export would not decode them "
                            "(export supports pixel-space ddpm checkpoints)")
    if cfg.schedule.name != "linear-beta":
        raise TrilemmaError(f"{ck.path}: diffusers has no exact equivalent of the {cfg.schedule.name!r} schedule; only linear-beta exports")
    if len(ck.sample_shape) != 3:
        raise TrilemmaError(f"{ck.path}: only image models export to a diffusers pipeline (this one has samples of shape {ck.sample_shape})")
    if out.exists() and any(out.iterdir()):
        raise TrilemmaError(f"{out}: already exists and is not empty; choose another output folder")
    family = build_family(cfg, ck.sample_shape)
    family.modules.load_state_dict(ck.weights)
    net = family.modules["net"]
    assert isinstance(net, UNet)
    scheduler = ddim_scheduler_for(cfg)
    # .float(), not .to(torch.float32): diffusers' ModelMixin.to logs "modules that should be kept in float32: []"
    # on any dtype cast (its check tests `[] is not None`); nn.Module.float() casts the same without the warning.
    pipe = DDIMPipeline(unet=net.unet.float(), scheduler=scheduler)
    pipe.save_pretrained(str(out), safe_serialization=True)
    return out


def export_autoencoder(ck: Checkpoint, out: str | Path) -> Path:
    """Write `out/` loadable by `diffusers.AutoencoderKL.from_pretrained(out)`, with `scaling_factor` set to the
    checkpoint's latent scale. diffusers has no padding step: the exported model takes images already padded by
    `autoencoder.pad` pixels of -1 on every side (Fashion-MNIST: 32x32) and returns them padded."""
    from .loading import autoencoder_from_checkpoint

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise TrilemmaError(f"{out}: already exists and is not empty; choose another output folder")
    ae = autoencoder_from_checkpoint(ck)
    ae.vae.register_to_config(scaling_factor=ae.latent_scale.item())
    ae.vae.float().save_pretrained(str(out), safe_serialization=True)  # .float(): see export_diffusers
    return out
