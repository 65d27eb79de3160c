"""The training loop: exact resume, data-parallel equivalence, divergence, checkpoints."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from helpers import TOY, TOY_GAN, TOY_VDM, assert_one_line_error, write_config
from helpers import run as run_cli
from trilemma.checkpoint import load_checkpoint
from trilemma.config import load_config
from trilemma.errors import TrilemmaError
from trilemma.training import EMA, _lr_factor, _Run, train


def _weights(run: Path) -> dict:
    ck = run / "checkpoint"
    return {**load_file(str(ck / "model.safetensors")), **load_file(str(ck / "train.safetensors"))}


@pytest.mark.parametrize("base", [TOY, TOY_GAN, TOY_VDM], ids=["ddpm", "ddgan", "vdm"])
def test_resume_equals_uninterrupted_run(tmp_path, base):
    """Stopped after 3 steps and resumed to 7 = 7 steps straight: every tensor identical (weights,
    EMA, optimizer moments of every phase, RNG states)."""
    cfg_path = write_config(tmp_path / "toy.yaml", base, train={"steps": 7})
    train(load_config(cfg_path), tmp_path / "straight", progress=False)
    train(load_config(cfg_path, ["train.steps=3"]), tmp_path / "resumed", progress=False)
    first = _weights(tmp_path / "resumed")
    train(load_config(cfg_path), tmp_path / "resumed", resume=True, progress=False)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    assert any(not torch.equal(first[k], b[k]) for k in first if k.startswith("modules.")), "resume trained"
    assert load_checkpoint(tmp_path / "resumed").meta["step"] == 7


@pytest.mark.parametrize("decay", ["linear", "cosine"])
def test_lr_decay_closed_form_and_exact_resume(tmp_path, monkeypatch, decay):
    """train.lr_decay: warm-up 2 of 10 steps, then the peak falls to 0 at step 10 (linearly or on a half cosine);
    the factor depends on the step alone, so a run stopped at 4 and resumed equals the straight run exactly."""
    cfg_path = write_config(tmp_path / "toy.yaml", TOY, train={"steps": 10, "warmup": 2, "lr_decay": decay})
    cfg = load_config(cfg_path)
    got = [_lr_factor(cfg, k) for k in range(10)]
    done = [(k - 2) / 8 for k in range(2, 10)]
    tail = [1 - d for d in done] if decay == "linear" else [0.5 * (1 + np.cos(np.pi * d)) for d in done]
    np.testing.assert_allclose(got, [0.5, 1.0, *tail], rtol=0, atol=1e-12)
    assert got[2] == 1.0 and all(a > b for a, b in zip(got[2:], got[3:]))  # peak right after warm-up, then falls
    # a round [4, 10) of a family that trains rounds: its own warm-up from step 4, its own decay to step 10
    assert [_lr_factor(cfg, k, 4, 10) for k in (4, 5)] == [0.5, 1.0]
    assert _lr_factor(cfg, 9, 4, 10) == pytest.approx(0.25 if decay == "linear" else 0.5 * (1 + np.cos(0.75 * np.pi)))
    train(cfg, tmp_path / "straight", progress=False)
    save = _Run.save

    def save_then_stop(run, x, round_index=None):  # a run killed right after its step-4 checkpoint (train.steps stays 10)
        save(run, x, round_index)
        if run.step == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(_Run, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(load_config(cfg_path, ["train.save_every=4"]), tmp_path / "resumed", progress=False)
    assert load_checkpoint(tmp_path / "resumed").meta["step"] == 4
    monkeypatch.setattr(_Run, "save", save)
    train(load_config(cfg_path, ["train.save_every=4"]), tmp_path / "resumed", resume=True, progress=False)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run differs from the straight one"


def test_existing_checkpoint_is_not_overwritten(tmp_path):
    cfg = load_config(write_config(tmp_path / "toy.yaml", TOY, train={"steps": 2}))
    train(cfg, tmp_path / "run", progress=False)
    digest = hashlib.sha256((tmp_path / "run/checkpoint/model.safetensors").read_bytes()).hexdigest()
    with pytest.raises(TrilemmaError, match="already exists"):
        train(cfg, tmp_path / "run", progress=False)
    assert hashlib.sha256((tmp_path / "run/checkpoint/model.safetensors").read_bytes()).hexdigest() == digest


def test_divergence_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    """Four good steps, then the same run continued at lr = 1e30: the first update gives finite but huge
    weights (finite loss at that step), so only the check of the state to be saved catches it; the kept
    checkpoint is step 4, its weights are finite and it samples finite points."""
    good = load_config(write_config(tmp_path / "toy.yaml", TOY, train={"steps": 4, "save_every": 2}))
    train(good, tmp_path / "run", progress=False)
    bad = load_config(write_config(tmp_path / "bad.yaml", TOY, train={"steps": 50, "lr": 1e30, "warmup": 1,
                                                                       "save_every": 1, "grad_clip": 0.0}))
    with pytest.raises(TrilemmaError, match=r"diverged by step 5: the weights it would save") as info:
        train(bad, tmp_path / "run", resume=True, progress=False)
    assert "last good checkpoint (step 4)" in str(info.value)
    ck = load_checkpoint(tmp_path / "run")
    assert ck.meta["step"] == 4, "the checkpoint is the last good step"
    assert all(torch.isfinite(v).all() for v in ck.weights.values())
    res = run_cli("sample", tmp_path / "run", "--sampler", "ddim", "--steps", "5", "-n", "16", "--out",
                  tmp_path / "s.npz")
    assert res.exit_code == 0, res.output
    assert np.isfinite(np.load(tmp_path / "s.npz")["samples"]).all()


def test_divergence_from_the_first_step_keeps_nothing_and_says_so(tmp_path):
    res = run_cli("train", write_config(tmp_path / "toy.yaml", TOY), "--set", "train.lr=1e30", "--set",
                  "train.save_every=1", "--out", tmp_path / "run", "--quiet")
    assert_one_line_error(res, "diverged by step 1", "no checkpoint was written")
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_ddgan_divergence_names_the_phase_and_step(tmp_path, monkeypatch):
    """A GAN whose generator loss turns to NaN at step 6 stops there; the step-4 checkpoint stays."""
    from trilemma.families.ddgan import DDGAN

    real_loss = DDGAN.loss

    def loss(self, phase, modules, x, rng, step):
        out = real_loss(self, phase, modules, x, rng, step)
        return out * float("nan") if (phase, step) == ("gen", 5) else out

    monkeypatch.setattr(DDGAN, "loss", loss)
    cfg = load_config(write_config(tmp_path / "gan.yaml", TOY_GAN, train={"steps": 20, "save_every": 2}))
    with pytest.raises(TrilemmaError, match=r"diverged at step 6: gen loss is nan; the last good checkpoint \(step 4\)"):
        train(cfg, tmp_path / "run", progress=False)
    ck = load_checkpoint(tmp_path / "run")
    assert ck.meta["step"] == 4 and all(torch.isfinite(v).all() for v in ck.weights.values())


def test_divergence_before_any_checkpoint_says_so(tmp_path):
    cfg = load_config(write_config(tmp_path / "toy.yaml", TOY, train={"steps": 50, "lr": 1e30, "warmup": 1,
                                                                       "save_every": 0, "grad_clip": 0.0}))
    with pytest.raises(TrilemmaError, match="no checkpoint was written"):
        train(cfg, tmp_path / "run", progress=False)


def test_ema_update_closed_form():
    m = torch.nn.Linear(3, 1)
    ema = EMA(m, decay=0.9)
    with torch.no_grad():
        before = ema.module.weight.clone()
        m.weight.add_(1.0)
    ema.update(m, step=1000)  # ramp min((1 + 1000) / (10 + 1000), 0.9) = 0.9
    assert torch.allclose(ema.module.weight, 0.9 * before + 0.1 * m.weight)


@pytest.mark.parametrize("base", [TOY, TOY_GAN, TOY_VDM], ids=["ddpm", "ddgan", "vdm"])
def test_two_processes_equal_one_process_on_the_doubled_batch(tmp_path, base):
    """Two processes (gloo DDP on the CPU) with batch b each give the weights of one process with
    batch 2b, to float tolerance (only the reduction order differs). On a machine without GPUs,
    `accelerate launch --multi_gpu` starts the processes through torchrun and trilemma's Accelerator
    runs them on gloo (`--cpu --num_processes N` starts one process unless mpirun is set up). For
    DDGAN this covers two optimizer phases, two D calls per backward and R1's double backward."""
    cfg_path = write_config(tmp_path / "toy.yaml", base, train={"steps": 5, "batch_size": 32})
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "trilemma", "train", str(cfg_path),
           "--out", str(tmp_path / "ddp"), "--quiet"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert load_checkpoint(tmp_path / "ddp").train_state()[1]["num_processes"] == 2, "ran data-parallel"
    train(load_config(cfg_path, ["train.batch_size=64"]), tmp_path / "single", progress=False)
    a, b = _weights(tmp_path / "ddp"), _weights(tmp_path / "single")
    for k in a:
        if k.startswith(("modules.", "net.", "gen.", "schedule.")):
            assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), f"{k}: max diff {(a[k] - b[k]).abs().max():.2e}"


PRESETS = Path(__file__).parent.parent / "configs"


@pytest.fixture(scope="module")
def fmnist_ae(tmp_path_factory) -> Path:
    """An untrained checkpoint of the fmnist-ae preset, for the latent presets to build on."""
    from trilemma.checkpoint import save_checkpoint
    from trilemma.families import build_family

    cfg = load_config(PRESETS / "fmnist-ae.yaml")
    fam = build_family(cfg, (1, 28, 28))
    path = tmp_path_factory.mktemp("ae") / "checkpoint"
    state = {f"ae.{k}": v for k, v in fam.modules["ae"].state_dict().items()}
    return save_checkpoint(path, cfg=cfg, sample_shape=(1, 28, 28), step=0, ema_state=state)


@pytest.mark.parametrize("preset", sorted(PRESETS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_preset_loads_and_builds(preset, fmnist_ae, tmp_path):
    """The shipped presets stay valid as the config schema grows: they load and their family builds
    (a latent preset on an untrained checkpoint of the fmnist-ae preset)."""
    from trilemma.families import build_family

    cfg = load_config(preset)
    if cfg.latent.autoencoder:
        cfg = load_config(preset, [f"latent.autoencoder={fmnist_ae}"])
    if cfg.family == "distill" and not cfg.distill.teacher.startswith("trilemma:"):
        # a student of a run its preset trains (distill.teacher runs/NAME <- configs/NAME.yaml): an untrained one
        cfg = load_config(preset, [f"distill.teacher={_untrained_teacher(cfg.distill.teacher, fmnist_ae, tmp_path)}"])
    shape = {"toy2d": (2,), "digits": (1, 8, 8)}.get(cfg.data.name, (1, 32, 32) if cfg.data.pad32 else (1, 28, 28))
    fam = build_family(cfg, shape)
    if cfg.latent.autoencoder or (cfg.family == "distill" and fam.sample_shape != shape):
        assert fam.sample_shape == (4, 8, 8)
    assert sum(p.numel() for p in fam.modules.parameters()) > 0


def _untrained_teacher(ref: str, fmnist_ae: Path, tmp_path: Path) -> Path:
    """An untrained checkpoint of the preset a distill preset's teacher run is trained from."""
    from trilemma.checkpoint import save_checkpoint
    from trilemma.families import build_family

    name = Path(ref).name
    cfg = load_config(PRESETS / f"{name}.yaml")
    if cfg.latent.autoencoder:
        cfg = load_config(PRESETS / f"{name}.yaml", [f"latent.autoencoder={fmnist_ae}"])
    shape = {"toy2d": (2,), "digits": (1, 8, 8)}.get(cfg.data.name, (1, 28, 28))
    fam = build_family(cfg, shape)
    ema = {f"{n}.{k}": v for n in fam.ema_names() for k, v in fam.modules[n].state_dict().items()}
    return save_checkpoint(tmp_path / name / "checkpoint", cfg=cfg, sample_shape=fam.sample_shape, step=0,
                           ema_state=ema, data_shape=shape, extra_meta=fam.checkpoint_meta(fam.modules))
