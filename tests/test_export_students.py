"""Distilled students exported to diffusers sample as they do here: a consistency student through LCMScheduler
(inside a DDPMPipeline folder), a progressive one through DDIMScheduler on the trailing grid, each against our
sampler on the same network, initial noise and per-step noise."""

from pathlib import Path

import pytest
import torch

from helpers import DIGITS, assert_one_line_error, run, write_config
from trilemma.checkpoint import load_checkpoint
from trilemma.loading import denoiser_from_checkpoint
from trilemma.samplers import sample_consistency, sample_ddim
from trilemma.schedules import time_grid

TOL = 1e-4  # float32 UNet, a few steps


def _times_from(timesteps, T=1000):
    """diffusers' integer timestep k is our t = (k + 1) / T; the loop ends at t = 0."""
    t = (timesteps.to(torch.float64) + 1) / T
    return torch.cat([t, t.new_zeros(1)])


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("digits-teacher")
    assert run("train", write_config(d / "t.yaml", DIGITS, train={"steps": 3}), "--out", d / "run",
               "--quiet").exit_code == 0
    return d / "run"


def _student(teacher: Path, tmp: Path, **distill) -> Path:
    cfg = {"family": "distill", "data": DIGITS["data"], "distill": {"teacher": str(teacher), **distill},
           "train": {"steps": 2, "batch_size": 8, "lr": 1e-4, "warmup": 0, "save_every": 0},
           "sample": {"sampler": "consistency" if distill.get("method") == "consistency" else "ddim", "steps": 2,
                      "spacing": "trailing", "n": 4}}
    if distill.get("method") == "adversarial":
        cfg["gan"] = {"latent_dim": 8, "d_channels": [16, 32]}
        cfg["sample"]["sampler"] = "ddpm"
    res = run("train", write_config(tmp / "s.yaml", cfg), "--out", tmp / "student", "--quiet")
    assert res.exit_code == 0, res.output
    return tmp / "student"


def _diffusers_loop(unet, scheduler, x, generator):
    for k in scheduler.timesteps:
        with torch.no_grad():
            out = unet(x, k).sample
        x = scheduler.step(out, k, x, generator=generator).prev_sample
    return x


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_a_consistency_student_exports_as_lcm_and_samples_alike(teacher, tmp_path, steps):
    from diffusers import DDPMPipeline, LCMScheduler

    student = _student(teacher, tmp_path, method="consistency", grid_steps=8)
    assert run("export", student, tmp_path / "exp").exit_code == 0
    pipe = DDPMPipeline.from_pretrained(tmp_path / "exp")
    assert isinstance(pipe.scheduler, LCMScheduler) and pipe.scheduler.config.timestep_scaling == 10.0
    pipe.scheduler.set_timesteps(steps)
    den = denoiser_from_checkpoint(load_checkpoint(student))
    ts = time_grid(den.schedule, steps, "trailing")
    assert torch.equal(_times_from(pipe.scheduler.timesteps), ts), "LCM's grid of N steps is our trailing grid"
    x_T = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    theirs = _diffusers_loop(pipe.unet, pipe.scheduler, x_T.clone(), torch.Generator().manual_seed(2))
    ours = sample_consistency(den, den.schedule, x_T.clone(), ts, generator=torch.Generator().manual_seed(2))
    assert ours.abs().max() < 50, "samples of a sane scale, so the tolerance means something"
    torch.testing.assert_close(ours, theirs, rtol=TOL, atol=TOL)


def test_a_progressive_student_exports_as_trailing_ddim_and_samples_alike(teacher, tmp_path):
    from diffusers import DDIMPipeline

    student = _student(teacher, tmp_path, method="progressive", student_steps=2)
    assert run("export", student, tmp_path / "exp").exit_code == 0
    pipe = DDIMPipeline.from_pretrained(tmp_path / "exp")
    cfg = pipe.scheduler.config
    assert cfg.timestep_spacing == "trailing" and cfg.prediction_type == "v_prediction"
    pipe.scheduler.set_timesteps(2)
    den = denoiser_from_checkpoint(load_checkpoint(student))
    ts = time_grid(den.schedule, 2, "trailing")
    assert torch.equal(_times_from(pipe.scheduler.timesteps), ts)
    x_T = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    theirs = _diffusers_loop(pipe.unet, pipe.scheduler, x_T.clone(), None)
    ours = sample_ddim(den, den.schedule, x_T.clone(), ts)
    torch.testing.assert_close(ours, theirs, rtol=TOL, atol=TOL)


def test_an_adversarial_student_is_refused_in_one_line(teacher, tmp_path):
    student = _student(teacher, tmp_path, method="adversarial", student_steps=2)
    assert_one_line_error(run("export", student, tmp_path / "exp"), "adversarial student", "no pipeline")
    assert not (tmp_path / "exp").exists()
