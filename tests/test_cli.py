"""The command line: bad input is one line and exit code 2; sample and export work end to end."""

import gzip
import hashlib
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import DIGITS, TOY, assert_one_line_error, run, write_config
from trilemma.checkpoint import save_checkpoint
from trilemma.config import load_config
from trilemma.families import build_family
from trilemma.samplers import initial_noise




def test_unknown_and_mistyped_config_keys(tmp_path):
    bad = write_config(tmp_path / "bad.yaml", TOY, train={"lrr": 0.1})
    assert_one_line_error(run("train", bad, "--out", tmp_path / "o"), "bad.yaml", "train.lrr", "did you mean 'train.lr'")
    typo = write_config(tmp_path / "typo.yaml", TOY, train={"steps": "ten"})
    assert_one_line_error(run("train", typo, "--out", tmp_path / "o"), "typo.yaml", "train.steps", "int")
    assert_one_line_error(run("train", TOY_PATH(tmp_path), "--set", "model.widht=3"), "model.widht")
    assert_one_line_error(run("train", tmp_path / "missing.yaml"), "missing.yaml", "not found")
    assert not (tmp_path / "o").exists()


def TOY_PATH(tmp_path):
    return write_config(tmp_path / "toy.yaml", TOY)


def test_dry_run_prints_resolved_config(tmp_path):
    res = run("train", TOY_PATH(tmp_path), "--set", "train.lr=3e-4", "--steps", "9", "--dry-run")
    assert res.exit_code == 0 and '"lr": 0.0003' in res.output and '"steps": 9' in res.output


def _write_idx(root: Path, images: bytes, magic=2051, n=3, rows=28, cols=28, gz=True):
    root.mkdir(parents=True, exist_ok=True)
    for split, count in [("train", n), ("t10k", n)]:
        img = struct.pack(">IIII", magic, count, rows, cols) + images
        lab = struct.pack(">II", 2049, count) + bytes(count)
        for name, payload in [(f"{split}-images-idx3-ubyte", img), (f"{split}-labels-idx1-ubyte", lab)]:
            (root / (name + ".gz")).write_bytes(gzip.compress(payload) if gz else payload)


@pytest.mark.parametrize(
    "case, fragments",
    [
        ("missing", ["nope"]),
        ("magic", ["train-images-idx3-ubyte", "magic"]),
        ("truncated", ["train-images-idx3-ubyte", "truncated"]),
        ("notgzip", ["train-images-idx3-ubyte"]),
    ],
)
def test_bad_fashion_mnist_data(tmp_path, case, fragments):
    root = tmp_path / "fm"
    if case == "magic":
        _write_idx(root, bytes(3 * 784), magic=1234)
    elif case == "truncated":
        _write_idx(root, bytes(3 * 784 - 100))
    elif case == "notgzip":
        _write_idx(root, bytes(3 * 784), gz=False)
    data_root = root if case != "missing" else tmp_path / "nope"
    cfg = write_config(tmp_path / "fm.yaml", DIGITS, data={"name": "fashion-mnist", "root": str(data_root)})
    assert_one_line_error(run("train", cfg, "--out", tmp_path / "out"), *fragments)
    assert not (tmp_path / "out" / "checkpoint").exists()


def test_sample_on_things_that_are_not_checkpoints(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert_one_line_error(run("sample", text, "--out", tmp_path / "s.png"), "notes.txt", "not a trilemma checkpoint")
    assert_one_line_error(run("sample", tmp_path / "absent"), "absent", "no such file")
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "config.json").write_text('{"format": "something-else"}')
    (fake / "model.safetensors").write_bytes(b"\x00" * 10)
    assert_one_line_error(run("sample", fake), "config.json", "not a trilemma checkpoint")
    assert not (tmp_path / "s.png").exists()


def _digits_checkpoint(tmp_path, prediction="v") -> Path:
    """A small random digits UNet saved as a checkpoint (output layer scaled so samples stay in range)."""
    cfg = load_config(write_config(tmp_path / "d.yaml", DIGITS, model={**DIGITS["model"], "prediction": prediction}))
    torch.manual_seed(0)
    fam = build_family(cfg, (1, 8, 8))
    with torch.no_grad():
        fam.modules["net"].unet.conv_out.weight.mul_(0.2)
    return save_checkpoint(tmp_path / "ck", cfg=cfg, sample_shape=(1, 8, 8), step=0,
                           ema_state=fam.modules.state_dict())


def test_corrupt_weights_file(tmp_path):
    ck = _digits_checkpoint(tmp_path)
    (ck / "model.safetensors").write_bytes(b"garbage" * 10)
    assert_one_line_error(run("sample", ck), "model.safetensors", "safetensors")


def test_sample_writes_plot_and_npz_and_honours_noise(tmp_path):
    ck = _digits_checkpoint(tmp_path)
    res = run("sample", ck, "--sampler", "dpmpp", "--steps", "4", "-n", "6", "--seed", "1", "--out", tmp_path / "a.png")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "a.png").stat().st_size > 0
    a = np.load(tmp_path / "a.npz")
    assert a["samples"].shape == (6, 1, 8, 8) and int(a["nfe"]) == 4
    noise = initial_noise(6, (1, 8, 8), seed=1).numpy()  # the x_T that --seed 1 draws
    np.save(tmp_path / "noise.npy", noise)
    run("sample", ck, "--sampler", "dpmpp", "--steps", "4", "--noise", tmp_path / "noise.npy", "--out", tmp_path / "b.npz")
    np.testing.assert_array_equal(np.load(tmp_path / "b.npz")["samples"], a["samples"])
    np.save(tmp_path / "wrong.npy", noise[:, :, :4])
    assert_one_line_error(run("sample", ck, "--noise", tmp_path / "wrong.npy"), "wrong.npy", "shape")


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_export_loads_in_diffusers_and_matches_our_ddim(tmp_path, prediction):
    from diffusers import DDIMPipeline

    ck = _digits_checkpoint(tmp_path, prediction)
    res = run("export", ck, tmp_path / "exp", "--format", "diffusers")
    assert res.exit_code == 0, res.output
    pipe = DDIMPipeline.from_pretrained(str(tmp_path / "exp"))
    ref = pipe(batch_size=5, generator=torch.Generator().manual_seed(3), num_inference_steps=10, eta=0.0,
               output_type="np").images  # (N, H, W, C) in [0, 1]
    # the pipeline's x_T: torch.randn of the whole batch under its generator; DDIM at eta 0 draws nothing else
    np.save(tmp_path / "x_T.npy", torch.randn((5, 1, 8, 8), generator=torch.Generator().manual_seed(3)).numpy())
    run("sample", ck, "--sampler", "ddim", "--steps", "10", "--noise", tmp_path / "x_T.npy", "--out", tmp_path / "o.npz")
    ours = np.load(tmp_path / "o.npz")["samples"]
    ours01 = np.clip(ours / 2 + 0.5, 0, 1).transpose(0, 2, 3, 1)
    assert 0.02 < ref.std(), "the comparison is not between constant images"
    assert np.abs(ours01 - ref).max() < 1e-4
    # exporting again into a non-empty folder is refused, the export is left as it was
    before = hashlib.sha256((tmp_path / "exp" / "model_index.json").read_bytes()).hexdigest()
    assert_one_line_error(run("export", ck, tmp_path / "exp"), "exp", "not empty")
    assert hashlib.sha256((tmp_path / "exp" / "model_index.json").read_bytes()).hexdigest() == before


def test_console_entry_point_prints_one_line_and_exits_2(tmp_path):
    """Through the real `python -m trilemma` process: no traceback reaches the user."""
    bad = write_config(tmp_path / "bad.yaml", TOY, data={"name": "toy2d", "toy": "spiral"})
    res = subprocess.run([sys.executable, "-m", "trilemma", "train", str(bad)], capture_output=True, text=True,
                         env={**os.environ, "TQDM_DISABLE": "1"}, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "spiral" in res.stderr and "Traceback" not in res.stderr


def test_a_sampler_option_reaches_the_command_line_from_its_declaration(tmp_path):
    """Every declared sampler option is a flag of `trilemma sample`; DDIM's --clip-x0 (declared only in
    sample_ddim's signature) clips x0_hat to [-1, 1], so at eta 0 the last step lands inside [-1, 1]."""
    from trilemma.demo import shipped_checkpoint
    from trilemma.samplers import all_sampler_options

    usage = run("sample", "--help").output
    assert all(o.flag in usage for o in all_sampler_options().values())
    ck = shipped_checkpoint("toy2d-ddpm")
    args = ["--sampler", "ddim", "--steps", "5", "-n", "64", "--quiet"]
    assert run("sample", ck, *args, "--clip-x0", "--out", tmp_path / "c.npz").exit_code == 0
    assert run("sample", ck, *args, "--out", tmp_path / "p.npz").exit_code == 0
    clipped, plain = (np.load(tmp_path / f"{k}.npz") for k in "cp")
    assert bool(clipped["clip_x0"]) and not bool(plain["clip_x0"])
    assert np.abs(clipped["samples"]).max() <= 1.0 + 1e-6 < np.abs(plain["samples"]).max()
    assert_one_line_error(run("sample", ck, "--sampler", "dpmpp", "--clip-x0", "--out", tmp_path / "d.npz"),
                          "--clip-x0", "not an option of sampler dpmpp")
