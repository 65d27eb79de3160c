"""Export to diffusers: a DDPM-family image checkpoint as a DDIMPipeline folder, a progressive-distillation student
as a DDIMPipeline on the trailing grid, a consistency student as a DDPMPipeline whose scheduler is LCMScheduler (its
multistep consistency sampler), an autoencoder as an AutoencoderKL folder."""

from __future__ import annotations

from pathlib import Path

from .checkpoint import Checkpoint
from .errors import TrilemmaError
from .families import build_family
from .networks import UNet

PREDICTION_TYPES = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}


def ddim_scheduler_for(cfg, spacing: str = "leading"):
    """A diffusers DDIMScheduler whose sampling loop is our `sample_ddim` on the same linear-beta
    schedule and time grid (leading, or trailing for a distilled student; also the baseline of
    benchmarks/sampler_overhead.py)."""
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
        timestep_spacing=spacing,
    )


def lcm_scheduler_for(cfg, timestep_scaling: float):
    """A diffusers LCMScheduler whose loop is our `sample_consistency` with a consistency student's scalings
    (`distillation.consistency_scalings`, LCM's) on the same linear-beta schedule: original_inference_steps = T
    makes its grid of N steps our trailing one when N divides T (999, 499 for N = 2 of T = 1000); otherwise some
    of LCM's timesteps are one above ours (N = 3: 999, 666, 333 against our 999, 666, 332)."""
    from diffusers import LCMScheduler

    sc = cfg.schedule
    return LCMScheduler(num_train_timesteps=sc.num_timesteps, beta_start=sc.beta_start, beta_end=sc.beta_end,
                        beta_schedule="linear", original_inference_steps=sc.num_timesteps,
                        prediction_type=PREDICTION_TYPES[cfg.model.prediction], clip_sample=False,
                        timestep_scaling=timestep_scaling)


def export_diffusers(ck: Checkpoint, out: str | Path) -> Path:
    """Write `out/` with unet/, scheduler/ and model_index.json, loadable by
    `diffusers.DDIMPipeline.from_pretrained(out)`; the scheduler config reproduces our schedule."""
    from diffusers import DDIMPipeline

    out = Path(out)
    cfg = ck.cfg
    if cfg.family == "autoencoder":
        return export_autoencoder(ck, out)
    if cfg.family == "distill":
        return _export_student(ck, out)
    if cfg.family != "ddpm":
        raise TrilemmaError(f"{ck.path}: export --format diffusers supports ddpm-family checkpoints, not {cfg.family!r}")
    _check_exportable(ck, cfg, out)
    family = build_family(cfg, ck.sample_shape)
    family.modules.load_state_dict(ck.weights)
    return _save_pipeline(DDIMPipeline, family.modules["net"], ddim_scheduler_for(cfg), out)


def _check_exportable(ck: Checkpoint, model_cfg, out: Path) -> None:
    """What a DDIM/DDPM pipeline folder needs: a pixel-space image model on the linear-beta schedule, and an empty
    or new output folder."""
    if model_cfg.latent.autoencoder:
        raise TrilemmaError(f"{ck.path}: a latent model samples latents; a DDIMPipeline export would not decode them "
                            "(export supports pixel-space ddpm checkpoints)")
    if model_cfg.schedule.name != "linear-beta":
        raise TrilemmaError(f"{ck.path}: diffusers has no exact equivalent of the {model_cfg.schedule.name!r} schedule; "
                            "only linear-beta exports")
    if len(ck.sample_shape) != 3:
        raise TrilemmaError(f"{ck.path}: only image models export to a diffusers pipeline (this one has samples of "
                            f"shape {ck.sample_shape})")
    if out.exists() and any(out.iterdir()):
        raise TrilemmaError(f"{out}: already exists and is not empty; choose another output folder")


def _save_pipeline(pipeline_cls, net, scheduler, out: Path) -> Path:
    assert isinstance(net, UNet)
    # .float(), not .to(torch.float32): diffusers' ModelMixin.to logs "modules that should be kept in float32: []"
    # on any dtype cast (its check tests `[] is not None`); nn.Module.float() casts the same without the warning.
    pipe = pipeline_cls(unet=net.unet.float(), scheduler=scheduler)
    pipe.save_pretrained(str(out), safe_serialization=True)
    return out


def _export_student(ck: Checkpoint, out: Path) -> Path:
    """A distilled student: progressive as a DDIMPipeline on the trailing grid (`num_inference_steps` = its steps),
    consistency as a DDPMPipeline with LCMScheduler; an adversarial generator (a latent input) has no pipeline."""
    from diffusers import DDIMPipeline, DDPMPipeline

    from .loading import loaded_family

    d = ck.cfg.distill
    if d.method == "adversarial":
        raise TrilemmaError(f"{ck.path}: an adversarial student is a generator G(x_t, z, t) with a latent input; "
                            "diffusers has no pipeline for it (sample it with trilemma sample --sampler ddpm)")
    if d.method == "consistency" and d.sigma_data != 0.5:
        raise TrilemmaError(f"{ck.path}: LCMScheduler fixes sigma_data = 0.5; this student has distill.sigma_data = "
                            f"{d.sigma_data:g}, so it has no diffusers scheduler")
    family = loaded_family(ck)  # checks the pinned teacher
    model_cfg = family.student.cfg
    _check_exportable(ck, model_cfg, out)
    if model_cfg.family != "ddpm":
        raise TrilemmaError(f"{ck.path}: a student of a {model_cfg.family} teacher has no diffusers scheduler (export "
                            "supports students of ddpm teachers)")
    net = family.modules["net"]
    if d.method == "consistency":
        return _save_pipeline(DDPMPipeline, net, lcm_scheduler_for(model_cfg, d.timestep_scaling), out)
    return _save_pipeline(DDIMPipeline, net, ddim_scheduler_for(model_cfg, "trailing"), out)


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
