"""Nothing a user has is lost: crash recovery of the checkpoint writer, one writer per run directory, and noise
that depends only on (seed, sample index)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import trilemma.checkpoint as checkpoint
from helpers import DIGITS, TOY, TOY_GAN, assert_one_line_error, run, write_config
from trilemma.checkpoint import load_checkpoint
from trilemma.config import load_config
from trilemma.training import train

# every point of a checkpoint write where a crash can happen; "mid model.safetensors" leaves half a file
POINTS = ["mid model.safetensors", "wrote model.safetensors", "mid train.safetensors", "wrote train.safetensors",
          "wrote train.json", "mid config.json", "wrote config.json", "before renames", "between renames",
          "after renames"]


class Crash(Exception):
    """Stands for the process dying at that point (nothing after it runs)."""


def _tensors(run_dir: Path) -> dict:
    ck = run_dir / "checkpoint"
    return {**load_file(str(ck / "model.safetensors")), **load_file(str(ck / "train.safetensors"))}


def _leftovers(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.glob(".checkpoint.*"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference: 6 steps with checkpoints at steps 2 and 4 and the final one."""
    out = tmp_path_factory.mktemp("ref") / "run"
    cfg = load_config(write_config(out.parent / "toy.yaml", TOY, train={"steps": 6, "save_every": 2}))
    train(cfg, out, progress=False)
    return cfg, _tensors(out)


@pytest.mark.parametrize("point", POINTS)
def test_a_crash_at_any_point_of_a_checkpoint_write_resumes_from_the_newest_complete_one(
        tmp_path, monkeypatch, uninterrupted, point):
    cfg, want = uninterrupted
    hits = []

    def hook(at, path):
        name = point.replace("mid ", "wrote ")
        if at == name:
            hits.append(at)
            if len(hits) == 2:  # the write of step 4 (the first is step 2's)
                if point.startswith("mid "):
                    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
                raise Crash(point)

    monkeypatch.setattr(checkpoint, "_FAULT_HOOK", hook)
    out = tmp_path / "run"
    with pytest.raises(Crash):
        train(cfg, out, progress=False)
    monkeypatch.setattr(checkpoint, "_FAULT_HOOK", None)
    # the temp directory is complete once its last file is written: from then on step 4 is the newest complete
    newest = 2 if point in POINTS[:6] else 4
    assert _leftovers(out), "the crash left the write's directories behind"
    assert checkpoint.recover_checkpoint(out / "checkpoint") is not None
    assert load_checkpoint(out).meta["step"] == newest, point
    assert not _leftovers(out), _leftovers(out)
    train(cfg, out, resume=True, progress=False)
    got = _tensors(out)
    assert got.keys() == want.keys()
    for k in want:  # resume is exact: the same computation as the uninterrupted run, step for step
        assert torch.equal(got[k], want[k]), k


def test_resume_finds_a_checkpoint_left_between_the_renames(tmp_path, monkeypatch):
    """The CLI path: --resume recovers the checkpoint (no 'nothing to resume'), and a plain re-run is refused
    instead of silently starting again from step 0."""
    cfg = write_config(tmp_path / "toy.yaml", TOY, train={"steps": 4, "save_every": 2})

    def hook(at, path):
        if at == "between renames":
            raise Crash(at)

    monkeypatch.setattr(checkpoint, "_FAULT_HOOK", hook)
    with pytest.raises(Crash):
        run("train", cfg, "--out", tmp_path / "run", "--quiet")
    monkeypatch.setattr(checkpoint, "_FAULT_HOOK", None)
    assert not (tmp_path / "run" / "checkpoint").exists() and _leftovers(tmp_path / "run")
    res = run("train", cfg, "--out", tmp_path / "run", "--quiet")
    assert res.exit_code == 2
    note, error = res.output.splitlines()  # the recovery says what it did, then the refusal
    assert note.startswith("trilemma: ") and "restored the checkpoint of step 2" in note
    assert error.startswith("trilemma: error: ") and "already exists" in error and "--resume" in error
    res = run("train", cfg, "--out", tmp_path / "run", "--resume", "--quiet")
    assert res.exit_code == 0, res.output
    assert load_checkpoint(tmp_path / "run").meta["step"] == 4
    assert not _leftovers(tmp_path / "run")


def _background_training(tmp_path: Path, save_every: int):
    """(config, run directory, process) of a long toy training started in another process."""
    cfg = write_config(tmp_path / "toy.yaml", TOY, train={"steps": 100_000, "save_every": save_every, "log_every": 1000})
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "trilemma", "train", str(cfg), "--out", str(out), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cfg, out, proc


def test_a_killed_training_resumes(tmp_path):
    """A real kill -9 while training writes a checkpoint every step, then --resume finishes the run."""
    cfg, out, proc = _background_training(tmp_path, save_every=1)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "checkpoint" / "config.json").exists():
            time.sleep(0.1)
        time.sleep(0.5)  # somewhere inside the write loop
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    step = load_checkpoint(out).meta["step"]  # recovers whatever the kill left
    assert step >= 1 and not _leftovers(out)
    res = run("train", cfg, "--out", out, "--resume", "--steps", str(step + 3), "--quiet")
    assert res.exit_code == 0, res.output
    assert load_checkpoint(out).meta["step"] == step + 3


def _wait_for_lock(out: Path, pid: int, proc) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        if (out / ".lock").is_file() and (out / ".lock").read_text().strip() == str(pid):
            return
        assert proc.poll() is None, "the first training ended early"
        time.sleep(0.1)
    raise AssertionError("the first training never took the lock")


def _wait_until_training(out: Path, proc) -> None:
    """Until the running training has written what it writes before its first step (its marker and
    config.json, each through a temporary file), so a snapshot of its files is not taken mid-write."""
    deadline = time.time() + 120
    while time.time() < deadline:
        names = [p.name for p in out.iterdir()]
        if "config.json" in names and not any(".tmp-" in n for n in names):
            return
        assert proc.poll() is None, "the first training ended early"
        time.sleep(0.1)
    raise AssertionError("the first training never wrote its config.json")


def test_two_trainings_on_one_out_the_second_is_refused_and_a_dead_ones_lock_is_taken_over(tmp_path):
    cfg, out, proc = _background_training(tmp_path, save_every=0)
    try:
        _wait_for_lock(out, proc.pid, proc)
        _wait_until_training(out, proc)
        before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
        for extra in ([], ["--resume"]):
            res = run("train", cfg, "--out", out, "--steps", "3", "--quiet", *extra)
            assert_one_line_error(res, str(out), "another trilemma process", f"pid {proc.pid}")
        after = {p: p.read_bytes() for p in before}
        assert after == before, "the refused run changed the running one's files"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # the killed process left its pid in the lock file: the next run takes it over and says so
    res = run("train", cfg, "--out", out, "--steps", "3", "--quiet")
    assert res.exit_code == 0, res.output
    assert f"took over the lock of process {proc.pid}, which is no longer running" in res.output
    assert (out / ".lock").read_text() == "", "released at the end"


def test_sample_gives_the_same_samples_at_any_batch_size(tmp_path):
    """Ancestral sampling draws noise at every step: with per-sample noise the batch size changes only the
    network's float rounding (batched matmuls), not which noise a sample gets."""
    res = run("train", write_config(tmp_path / "d.yaml", DIGITS), "--out", tmp_path / "run", "--quiet")
    assert res.exit_code == 0, res.output
    outs = []
    for bs in ("7", "3", "1"):
        res = run("sample", tmp_path / "run", "--sampler", "ddpm", "--steps", "10", "-n", "7", "--seed", "5",
                  "--batch-size", bs, "--out", tmp_path / f"b{bs}.npz", "--quiet")
        assert res.exit_code == 0, res.output
        outs.append(np.load(tmp_path / f"b{bs}.npz")["samples"])
    assert outs[0].std() > 0.1
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], atol=1e-4, rtol=0)  # float32 UNet, 10 steps
    # and a different seed is different noise
    run("sample", tmp_path / "run", "--sampler", "ddpm", "--steps", "10", "-n", "7", "--seed", "6",
        "--out", tmp_path / "s6.npz", "--quiet")
    assert np.abs(np.load(tmp_path / "s6.npz")["samples"] - outs[0]).max() > 0.1


def test_per_sample_noise_is_exactly_independent_of_the_split():
    """Row k of every draw is sample first + k's own stream: the same numbers however samples are batched
    (the same calls on the same generators, so exact by construction), also for draws of several sizes."""
    from trilemma.samplers import SampleNoise

    whole = SampleNoise(11, 0, 9)
    parts = [SampleNoise(11, 0, 4), SampleNoise(11, 4, 5)]
    for step in range(300):  # crosses the 2-D stream's block boundary (128 draws) twice
        for shape in ((2,), (100,), (1, 8, 8)):
            w = whole.randn((9, *shape))
            p = torch.cat([parts[0].randn((4, *shape)), parts[1].randn((5, *shape))])
            assert torch.equal(w, p), (step, shape)
    # a given x_T is passed over: the step noise that follows is the same as when x_T was drawn
    a, b = SampleNoise(3, 0, 5), SampleNoise(3, 0, 5)
    a.randn((5, 2))
    b.skip((5, 2))
    assert torch.equal(a.randn((5, 2)), b.randn((5, 2)))
    z = torch.cat([SampleNoise(s, 0, 2000).randn((2000, 8)) for s in range(3)])
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02


def test_ddgan_latents_and_step_noise_do_not_depend_on_the_batch(tmp_path):
    from trilemma.loading import denoiser_from_checkpoint
    from trilemma.samplers import generate

    res = run("train", write_config(tmp_path / "g.yaml", TOY_GAN), "--out", tmp_path / "gan", "--quiet")
    assert res.exit_code == 0, res.output
    den = denoiser_from_checkpoint(load_checkpoint(tmp_path / "gan"))
    whole = generate(den, 12, (2,), sampler="ddpm", steps=4, seed=2)
    split = torch.cat([generate(den, 5, (2,), sampler="ddpm", steps=4, seed=2),
                       generate(den, 7, (2,), sampler="ddpm", steps=4, seed=2, first_index=5)])
    torch.testing.assert_close(split, whole, atol=1e-5, rtol=1e-5)
    assert whole.std() > 0.05


def test_a_reader_leaves_a_running_trainings_write_alone(tmp_path):
    """Loading (sample, bench) while a training holds the run directory's lock changes nothing there, even when
    it finds a write in progress; once the lock is free, the leftover is resolved."""
    from trilemma.paths import RunLock

    cfg = write_config(tmp_path / "toy.yaml", TOY)
    assert run("train", cfg, "--out", tmp_path / "run", "--quiet").exit_code == 0
    ck = tmp_path / "run" / "checkpoint"
    live = tmp_path / "run" / ".checkpoint.tmp-999999"  # a write in progress: partial
    live.mkdir()
    (live / "model.safetensors").write_bytes(b"x")
    lock = RunLock(tmp_path / "run")
    lock.acquire()  # the training (a second open of the lock file, as another process's would be)
    try:
        assert checkpoint.recover_checkpoint(ck, wait=0.2) is None
        assert load_checkpoint(ck).meta["step"] == 6
        assert live.is_dir(), "a running training's temp directory was removed"
        os.rename(ck, tmp_path / "run" / ".checkpoint.old-999999")  # between its two renames
        assert_one_line_error(run("sample", tmp_path / "run", "--out", tmp_path / "s.npz", "--quiet"),
                              "a training is writing this checkpoint now")
        os.rename(tmp_path / "run" / ".checkpoint.old-999999", ck)
    finally:
        lock.release()
    assert load_checkpoint(ck).meta["step"] == 6 and not live.exists(), "resolved once the lock is free"


def test_noise_seeds_use_all_their_bits():
    """torch's CPU generator keeps 32 bits of a seed; the per-sample streams are seeded at full width, so samples
    whose 32-bit seeds would collide (found for seed 0 among 50k samples) and seeds 2^40 apart differ."""
    from trilemma.samplers import SampleNoise

    def x_T(seed, index, d=784):
        return SampleNoise(seed, index, 1).randn((1, d))

    assert not torch.equal(x_T(0, 12168), x_T(0, 28275))
    assert not torch.equal(x_T(0, 16349, 2), x_T(0, 27677, 2))
    assert not torch.equal(x_T(5, 0), x_T(5 + 2**40, 0))
    assert torch.equal(x_T(5, 3), x_T(5, 3))
