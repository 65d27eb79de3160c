"""A table of bad inputs: each is one line `trilemma: error: ...` and exit code 2, never a traceback, and every
file that existed before the command is byte-identical after it (no file appears either).

One workspace is built once for the module (a 6-step toy run, a small digits checkpoint, an untrained DDGAN toy
checkpoint, a toy config and a bench grid); each case prepares its bad input in its own directory of that
workspace and returns the command line.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import yaml

from helpers import DIGITS, TOY, TOY_GAN, run, write_config
from trilemma.checkpoint import save_checkpoint
from trilemma.config import load_config
from trilemma.families import build_family


@dataclass
class Workspace:
    root: Path
    run: Path  # a trained toy run directory (run/checkpoint)
    toy: Path  # its config (a valid toy YAML)
    digits: Path  # an untrained digits checkpoint directory (image model: export works on it)
    gan: Path  # an untrained toy DDGAN checkpoint directory
    grid: dict  # a valid bench grid (as a dict) on the toy run

    @property
    def ckpt(self) -> Path:
        return self.run / "checkpoint"


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    root = tmp_path_factory.mktemp("bad-inputs")
    setup = root / "setup"
    setup.mkdir()
    toy = write_config(setup / "toy.yaml", TOY)
    res = run("train", toy, "--out", root / "run", "--quiet")
    assert res.exit_code == 0, res.output

    cfg = load_config(write_config(setup / "digits.yaml", DIGITS))
    torch.manual_seed(0)
    fam = build_family(cfg, (1, 8, 8))
    digits = save_checkpoint(root / "digits", cfg=cfg, sample_shape=(1, 8, 8), step=0,
                             ema_state=fam.modules.state_dict())

    gcfg = load_config(write_config(setup / "gan.yaml", TOY_GAN))
    torch.manual_seed(0)
    gfam = build_family(gcfg, (2,))
    ema = {f"{n}.{k}": v for n in gfam.ema_names() for k, v in gfam.modules[n].state_dict().items()}
    gan = save_checkpoint(root / "gan", cfg=gcfg, sample_shape=(2,), step=0, ema_state=ema)

    grid = {"name": "bad-inputs", "num_samples": 16, "batch_size": 16, "seeds": [0], "bpd": False,
            "rows": [{"checkpoint": str(root / "run"), "sampler": "ddim", "steps": 2}]}
    (root / "cases").mkdir()
    return Workspace(root, root / "run", toy, digits, gan, grid)


# --- helpers for the cases ------------------------------------------------------------------------------------


def _text(d: Path, name: str, text: str) -> Path:
    (d / name).write_text(text)
    return d / name


def _grid(w: Workspace, d: Path, **changes) -> Path:
    """The workspace grid with top-level `changes` (None removes a key) written as d/grid.yaml."""
    g = json.loads(json.dumps(w.grid))
    for k, v in changes.items():
        if v is None:
            g.pop(k, None)
        else:
            g[k] = v
    return _text(d, "grid.yaml", yaml.safe_dump(g))


def _row(w: Workspace, **changes) -> list:
    return [{**w.grid["rows"][0], **changes}]


def _copy_ckpt(w: Workspace, d: Path, src: Path | None = None) -> Path:
    dst = d / "ck"
    shutil.copytree(src or w.ckpt, dst)
    return dst


def _edit_meta(ck: Path, **changes) -> Path:
    meta = json.loads((ck / "config.json").read_text())
    meta.update(changes)
    (ck / "config.json").write_text(json.dumps(meta, indent=2))
    return ck


def _nan_weights(w: Workspace, d: Path) -> Path:
    from safetensors.torch import load_file, save_file

    ck = _copy_ckpt(w, d)
    tensors = load_file(str(ck / "model.safetensors"))
    name = sorted(k for k, v in tensors.items() if v.is_floating_point())[0]
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, str(ck / "model.safetensors"), metadata={"format": "trilemma-checkpoint"})
    return ck


def _truncated_weights(w: Workspace, d: Path) -> Path:
    ck = _copy_ckpt(w, d)
    data = (ck / "model.safetensors").read_bytes()
    (ck / "model.safetensors").write_bytes(data[: len(data) // 2])
    return ck


def _noise(d: Path, arr, name="noise.npy") -> Path:
    np.save(d / name, arr)
    return d / name


def _copy_run(w: Workspace, d: Path) -> Path:
    dst = d / "run"
    shutil.copytree(w.run, dst)
    return dst


def _damaged_run(w: Workspace, d: Path, damage: Callable[[Path], object]) -> Path:
    """A copy of the workspace run with `damage(its checkpoint directory)` done to it."""
    r = _copy_run(w, d)
    damage(r / "checkpoint")
    return r


def _train(w: Workspace, d: Path, *args, config: Path | None = None) -> list:
    """`train` of the workspace's toy config into a fresh d/out, plus `args` (a later --out wins)."""
    return ["train", config or w.toy, "--out", d / "out", "--quiet", *args]


def _sample(w: Workspace, d: Path, *args, ckpt: Path | None = None) -> list:
    return ["sample", ckpt or w.run, "--quiet", "-n", "4", "--steps", "2", "--out", d / "s.png", *args]


def _unwritable_dir(d: Path) -> Path:
    locked = d / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    return locked


# --- the table ------------------------------------------------------------------------------------------------


@dataclass
class Case:
    id: str
    prepare: Callable[[Workspace, Path], list]  # (workspace, the case's own empty directory) -> CLI arguments
    fragments: tuple = ()  # each must appear in the one error line
    root_only_skip: bool = False  # meaningless as root (permissions do not stop root)


C = Case
CASES = [
    # --- train: the config file and --set -----------------------------------------------------------------
    C("train-set-invalid-yaml", lambda w, d: _train(w, d, "--set", "train.lr=[1,"), ("--set", "train.lr", "YAML")),
    C("train-config-is-yaml-list", lambda w, d: _train(w, d, config=_text(d, "list.yaml", "- a\n- b\n")),
      ("list.yaml", "mapping")),
    C("train-config-binary", lambda w, d: _train(w, d, config=(d / "bin.yaml", (d / "bin.yaml").write_bytes(
        b"\x89PNG\r\n\x1a\n\x00\xff\xfe" + bytes(range(256))))[0]), ("bin.yaml", "not a text file")),
    C("train-config-empty", lambda w, d: _train(w, d, config=_text(d, "empty.yaml", "")), ("empty.yaml", "empty")),
    C("train-config-duplicate-key", lambda w, d: _train(w, d, config=_text(
        d, "dup.yaml", (w.toy.read_text() + "\nfamily: ddpm\n"))), ("dup.yaml", "duplicate", "family")),
    C("train-config-missing", lambda w, d: _train(w, d, config=d / "nope.yaml"), ("nope.yaml", "not found")),
    C("train-config-is-directory", lambda w, d: _train(w, d, config=d), ("is a directory",)),
    C("train-lr-nan", lambda w, d: _train(w, d, "--set", "train.lr=.nan"), ("train.lr", "finite")),
    C("train-lr-inf", lambda w, d: _train(w, d, "--set", "train.lr=.inf"), ("train.lr", "finite")),
    C("train-lr-zero", lambda w, d: _train(w, d, "--set", "train.lr=0"), ("train.lr",)),
    C("train-log-every-0", lambda w, d: _train(w, d, "--set", "train.log_every=0"), ("train.log_every", ">= 1")),
    C("train-seed-negative", lambda w, d: _train(w, d, "--set", "train.seed=-1"), ("train.seed",)),
    C("train-mixed-precision-fp8", lambda w, d: _train(w, d, "--set", "train.mixed_precision=fp8"),
      ("train.mixed_precision", "fp8")),
    C("train-num-timesteps-0", lambda w, d: _train(w, d, "--set", "schedule.num_timesteps=0"),
      ("schedule.num_timesteps",)),
    C("train-steps-0", lambda w, d: _train(w, d, "--steps", "0"), ("train.steps",)),
    C("train-steps-negative", lambda w, d: _train(w, d, "--steps", "-3"), ("train.steps",)),
    C("train-save-every-negative", lambda w, d: _train(w, d, "--set", "train.save_every=-5"), ("train.save_every",)),
    C("train-ema-decay-1.5", lambda w, d: _train(w, d, "--set", "train.ema_decay=1.5"), ("train.ema_decay",)),
    C("train-batch-size-0", lambda w, d: _train(w, d, "--set", "train.batch_size=0"), ("train.batch_size",)),
    C("train-hidden-0", lambda w, d: _train(w, d, "--set", "model.hidden=0"), ("model.hidden",)),
    C("train-depth-negative", lambda w, d: _train(w, d, "--set", "model.depth=-1"), ("model.depth",)),
    C("train-channels-empty", lambda w, d: _train(w, d, "--set", "model.channels=[]"), ("model.channels",)),
    C("train-prediction-unknown", lambda w, d: _train(w, d, "--set", "model.prediction=score"),
      ("model.prediction", "score")),
    C("train-tracker-wandb", lambda w, d: _train(w, d, "--set", "train.tracker=wandb"), ("train.tracker", "wandb")),
    C("train-unknown-key", lambda w, d: _train(w, d, "--set", "train.lrr=0.1"), ("train.lrr", "did you mean")),
    C("train-unknown-section", lambda w, d: _train(w, d, "--set", "optim.lr=0.1"), ("optim",)),
    C("train-mistyped-value", lambda w, d: _train(w, d, "--set", "train.steps=ten"), ("train.steps", "int")),
    C("train-sample-sampler-foo", lambda w, d: _train(w, d, "--set", "sample.sampler=foo"), ("sample.sampler", "foo")),
    C("train-sample-n-0", lambda w, d: _train(w, d, "--set", "sample.n=0"), ("sample.n",)),
    C("train-sample-steps-0", lambda w, d: _train(w, d, "--set", "sample.steps=0"), ("sample.steps",)),
    C("train-sample-eta-2", lambda w, d: _train(w, d, "--set", "sample.eta=2"), ("sample.eta",)),
    C("train-sample-spacing-unknown", lambda w, d: _train(w, d, "--set", "sample.spacing=cubic"),
      ("sample.spacing", "cubic")),
    C("train-family-gan", lambda w, d: _train(w, d, "--set", "family=gan"), ("family", "gan")),
    C("train-data-unknown-toy", lambda w, d: _train(w, d, "--set", "data.toy=spiral"), ("spiral",)),
    C("train-set-without-equals", lambda w, d: _train(w, d, "--set", "train.lr"), ("--set", "key=value")),
    C("train-set-empty-key", lambda w, d: _train(w, d, "--set", "=3"), ("--set", "empty key")),
    C("train-set-non-section", lambda w, d: _train(w, d, "--set", "train.lr.x=1"), ("train.lr.x", "not a section")),
    C("train-unknown-option", lambda w, d: _train(w, d, "--lr", "0.1"), ("--lr",)),
    # --- train: --out and --resume ------------------------------------------------------------------------
    C("train-out-checkpoint-dir", lambda w, d: _train(w, d, "--out", w.ckpt), ("checkpoint directory",)),
    C("train-out-existing-run-without-resume", lambda w, d: _train(w, d, "--out", _copy_run(w, d)),
      ("already exists", "--resume")),
    C("train-out-regular-file", lambda w, d: _train(w, d, "--out", _text(d, "file", "x")), ("file",)),
    C("train-out-foreign-dir", lambda w, d: _train(w, d, "--out", (_text(d, "notes.txt", "mine").parent)),
      ("notes.txt", "not a trilemma run directory")),
    C("train-out-under-regular-file", lambda w, d: _train(w, d, "--out", _text(d, "somefile", "x") / "run"),
      ("somefile", "cannot write")),
    C("train-out-unwritable-dir", lambda w, d: _train(w, d, "--out", _unwritable_dir(d) / "run"),
      ("locked", "cannot write"), root_only_skip=True),
    C("train-resume-no-checkpoint", lambda w, d: _train(w, d, "--resume"), ("nothing to resume",)),
    C("train-resume-changed-config", lambda w, d: _train(w, d, "--out", _copy_run(w, d), "--resume", "--set",
                                                         "train.lr=0.002"), ("--resume", "train.lr")),
    C("train-resume-beyond-steps", lambda w, d: _train(w, d, "--out", _copy_run(w, d), "--resume", "--steps", "3"),
      ("step 6", "train.steps = 3")),
    # a damaged training state: refused, and the run directory (its config.json too) left as it was
    C("train-resume-train-json-empty", lambda w, d: _train(
        w, d, "--out", _damaged_run(w, d, lambda ck: _text(ck, "train.json", "{}")), "--resume", "--steps", "8"),
      ("train.json",)),
    C("train-resume-train-json-corrupt", lambda w, d: _train(
        w, d, "--out", _damaged_run(w, d, lambda ck: _text(ck, "train.json", '{"step": 6, ')), "--resume", "--steps",
        "8"), ("train.json",)),
    C("train-resume-train-safetensors-missing", lambda w, d: _train(
        w, d, "--out", _damaged_run(w, d, lambda ck: (ck / "train.safetensors").unlink()), "--resume", "--steps", "8"),
      ("train.safetensors",)),
    # --- sample -------------------------------------------------------------------------------------------
    C("sample-device-foo", lambda w, d: _sample(w, d, "--device", "foo"), ("--device", "foo")),
    C("sample-device-cuda-absent", lambda w, d: _sample(w, d, "--device", "cuda"), ("--device", "cuda")),
    C("sample-seed-2**70", lambda w, d: _sample(w, d, "--seed", str(2**70)), ("--seed",)),
    C("sample-seed-negative", lambda w, d: _sample(w, d, "--seed", "-1"), ("--seed",)),
    C("sample-steps-0", lambda w, d: _sample(w, d, "--steps", "0"), ("--steps",)),
    C("sample-n-0", lambda w, d: _sample(w, d, "-n", "0"), ("-n",)),
    C("sample-batch-size-0", lambda w, d: _sample(w, d, "--batch-size", "0"), ("--batch-size",)),
    C("sample-sampler-unknown", lambda w, d: _sample(w, d, "--sampler", "euler"), ("--sampler", "euler")),
    C("sample-eta-with-dpmpp", lambda w, d: _sample(w, d, "--eta", "1", "--sampler", "dpmpp"), ("--eta", "dpmpp")),
    C("sample-eta-1.5-ddim", lambda w, d: _sample(w, d, "--eta", "1.5", "--sampler", "ddim"), ("--eta", "[0, 1]")),
    C("sample-step-size-with-ddim", lambda w, d: _sample(w, d, "--step-size", "0.3", "--sampler", "ddim"),
      ("--step-size", "ddim")),
    C("sample-steps-per-level-0", lambda w, d: _sample(w, d, "--steps-per-level", "0", "--sampler", "langevin"),
      ("--steps-per-level",)),
    C("sample-noise-strings", lambda w, d: _sample(w, d, "--noise", _noise(d, np.array(["a", "b"]))),
      ("noise.npy", "real numbers")),
    C("sample-noise-npz", lambda w, d: _sample(w, d, "--noise", (np.savez(d / "noise.npz", x=np.zeros((4, 2))),
                                                                 d / "noise.npz")[1]), ("noise.npz", ".npz")),
    C("sample-noise-wrong-shape", lambda w, d: _sample(w, d, "--noise", _noise(d, np.zeros((4, 3), np.float32))),
      ("noise.npy", "shape")),
    C("sample-noise-nan", lambda w, d: _sample(w, d, "--noise", _noise(d, np.full((4, 2), np.nan, np.float32))),
      ("noise.npy", "NaN")),
    C("sample-noise-pickle", lambda w, d: _sample(w, d, "--noise", _noise(d, np.array([{"a": 1}], dtype=object))),
      ("noise.npy",)),
    C("sample-noise-missing", lambda w, d: _sample(w, d, "--noise", d / "absent.npy"), ("absent.npy",)),
    C("sample-noise-garbage", lambda w, d: _sample(w, d, "--noise", _text(d, "g.npy", "not numpy")), ("g.npy",)),
    C("sample-checkpoint-missing", lambda w, d: _sample(w, d, ckpt=d / "absent"), ("absent", "no such file")),
    C("sample-not-a-checkpoint-dir", lambda w, d: _sample(w, d, ckpt=_text(d, "notes.txt", "hi").parent),
      ("not a trilemma checkpoint",)),
    C("sample-config-json-corrupt", lambda w, d: _sample(w, d, ckpt=(lambda c: (
        _text(c, "config.json", "{not json"), c)[1])(_copy_ckpt(w, d))), ("config.json",)),
    C("sample-config-json-wrong-format", lambda w, d: _sample(w, d, ckpt=_edit_meta(_copy_ckpt(w, d), format="x")),
      ("config.json", "not a trilemma checkpoint")),
    C("sample-config-json-step-negative", lambda w, d: _sample(w, d, ckpt=_edit_meta(_copy_ckpt(w, d), step=-1)),
      ("config.json", "step")),
    C("sample-config-json-bad-config", lambda w, d: _sample(w, d, ckpt=(lambda c: _edit_meta(c, config={
        **json.loads((c / "config.json").read_text())["config"], "family": "gan"}))(_copy_ckpt(w, d))),
      ("config.json", "family")),
    C("sample-config-json-sample-shape-3", lambda w, d: _sample(w, d, ckpt=_edit_meta(_copy_ckpt(w, d),
                                                                                       sample_shape=[3])),
      ("sample_shape",)),
    C("sample-weights-truncated", lambda w, d: _sample(w, d, ckpt=_truncated_weights(w, d)), ("model.safetensors",)),
    C("sample-weights-garbage", lambda w, d: _sample(w, d, ckpt=(lambda c: (
        (c / "model.safetensors").write_bytes(b"garbage" * 10), c)[1])(_copy_ckpt(w, d))),
      ("model.safetensors", "safetensors")),
    C("sample-weights-nan", lambda w, d: _sample(w, d, ckpt=_nan_weights(w, d)), ("model.safetensors", "NaN")),
    C("sample-weights-of-another-model", lambda w, d: _sample(w, d, ckpt=(lambda c: (
        shutil.copy(w.gan / "model.safetensors", c / "model.safetensors"), c)[1])(_copy_ckpt(w, d))),
      ("do not match",)),
    C("sample-out-txt", lambda w, d: _sample(w, d, "--out", d / "s.txt"), ("--out", ".txt")),
    C("sample-out-existing-dir", lambda w, d: _sample(w, d, "--out", d), ("--out",)),
    C("sample-out-in-checkpoint-dir", lambda w, d: _sample(w, d, "--out", w.ckpt / "s.png"),
      ("--out", "checkpoint directory")),
    C("sample-out-under-regular-file", lambda w, d: _sample(w, d, "--out", _text(d, "somefile", "x") / "s.png"),
      ("--out", "somefile")),
    C("sample-steps-beyond-schedule", lambda w, d: _sample(w, d, "--steps", "5000"), ("5000", "1000")),
    C("sample-langevin-on-ddgan", lambda w, d: _sample(w, d, "--sampler", "langevin", ckpt=w.gan), ("langevin",)),
    # --- eval ---------------------------------------------------------------------------------------------
    C("eval-json-under-regular-file", lambda w, d: ["eval", w.run, "--bpd", "--quiet", "--json",
                                                    _text(d, "somefile", "x") / "out.json"], ("--json", "somefile")),
    C("eval-json-wrong-suffix", lambda w, d: ["eval", w.run, "--bpd", "--quiet", "--json", d / "out.txt"],
      ("--json", ".json")),
    C("eval-bpd-and-recon", lambda w, d: ["eval", w.run, "--bpd", "--recon", "--quiet"], ("--bpd", "--recon")),
    C("eval-neither", lambda w, d: ["eval", w.run, "--quiet"], ("--bpd", "--recon")),
    C("eval-draws-0", lambda w, d: ["eval", w.run, "--bpd", "--draws", "0", "--quiet"], ("--draws",)),
    C("eval-n-0", lambda w, d: ["eval", w.run, "--bpd", "-n", "0", "--quiet"], ("-n",)),
    C("eval-bpd-on-ddgan", lambda w, d: ["eval", w.gan, "--bpd", "--quiet"], ("ddgan", "bound")),
    C("eval-recon-on-ddpm", lambda w, d: ["eval", w.run, "--recon", "--quiet"], ("not an autoencoder",)),
    C("eval-checkpoint-missing", lambda w, d: ["eval", d / "absent", "--bpd", "--quiet"], ("absent",)),
    # --- bench --------------------------------------------------------------------------------------------
    C("bench-name-list", lambda w, d: ["bench", _grid(w, d, name=["a"]), "--out", d / "b", "--quiet"],
      ("grid.yaml", "name")),
    C("bench-missing-rows", lambda w, d: ["bench", _grid(w, d, rows=None), "--out", d / "b", "--quiet"],
      ("grid.yaml", "rows")),
    C("bench-unknown-key", lambda w, d: ["bench", _grid(w, d, samples=3), "--out", d / "b", "--quiet"],
      ("grid.yaml", "samples")),
    C("bench-row-unknown-sampler", lambda w, d: ["bench", _grid(w, d, rows=_row(w, sampler="euler")), "--out",
                                                 d / "b", "--quiet"], ("rows[0]", "euler")),
    C("bench-row-eta-for-dpmpp", lambda w, d: ["bench", _grid(w, d, rows=_row(w, sampler="dpmpp", eta=0.5)),
                                               "--out", d / "b", "--quiet"], ("rows[0]", "eta", "dpmpp")),
    C("bench-row-steps-0", lambda w, d: ["bench", _grid(w, d, rows=_row(w, steps=0)), "--out", d / "b", "--quiet"],
      ("rows[0]", "steps")),
    C("bench-row-missing-checkpoint-key", lambda w, d: ["bench", _grid(w, d, rows=[{"sampler": "ddim", "steps": 2}]),
                                                        "--out", d / "b", "--quiet"], ("rows[0]", "checkpoint")),
    C("bench-row-checkpoint-absent", lambda w, d: ["bench", _grid(w, d, rows=_row(w, checkpoint=str(d / "absent"))),
                                                   "--out", d / "b", "--quiet"], ("absent",)),
    C("bench-seeds-letters", lambda w, d: ["bench", _grid(w, d), "--seeds", "a,b", "--out", d / "b", "--quiet"],
      ("--seeds", "a,b")),
    C("bench-n-1", lambda w, d: ["bench", _grid(w, d), "-n", "1", "--out", d / "b", "--quiet"], ("num_samples",)),
    C("bench-out-regular-file", lambda w, d: ["bench", _grid(w, d), "--out", _text(d, "file", "x"), "--quiet"],
      ("file",)),
    C("bench-out-foreign-dir", lambda w, d: ["bench", _grid(w, d), "--out", _text(d, "notes.txt", "mine").parent,
                                             "--quiet"], ("notes.txt", "not a trilemma bench directory")),
    C("bench-out-checkpoint-dir", lambda w, d: ["bench", _grid(w, d), "--out", w.ckpt, "--quiet"],
      ("checkpoint directory",)),
    C("bench-device-foo", lambda w, d: ["bench", _grid(w, d), "--device", "foo", "--out", d / "b", "--quiet"],
      ("device", "foo")),
    C("bench-grid-yaml-list", lambda w, d: ["bench", _text(d, "grid.yaml", "- a\n- b\n"), "--out", d / "b",
                                            "--quiet"], ("grid.yaml", "mapping")),
    C("bench-grid-invalid-yaml", lambda w, d: ["bench", _text(d, "grid.yaml", "rows: [\n"), "--out", d / "b",
                                               "--quiet"], ("grid.yaml", "YAML")),
    C("bench-grid-missing", lambda w, d: ["bench", d / "grid.yaml", "--out", d / "b", "--quiet"],
      ("grid.yaml", "not found")),
    # --- demo ---------------------------------------------------------------------------------------------
    C("demo-n-1", lambda w, d: ["demo", "-n", "1", "--out", d / "demo", "--quiet"], ("num_samples",)),
    C("demo-device-foo", lambda w, d: ["demo", "--device", "foo", "--out", d / "demo", "--quiet"], ("foo",)),
    C("demo-out-foreign-dir", lambda w, d: ["demo", "--out", _text(d, "notes.txt", "mine").parent, "--quiet"],
      ("notes.txt",)),
    # --- export -------------------------------------------------------------------------------------------
    C("export-checkpoint-missing", lambda w, d: ["export", d / "absent", d / "exp"], ("absent",)),
    C("export-out-not-empty", lambda w, d: ["export", w.digits, _text(d, "notes.txt", "mine").parent],
      ("not empty",)),
    C("export-2d-model", lambda w, d: ["export", w.run, d / "exp"], ("image models",)),
    C("export-ddgan", lambda w, d: ["export", w.gan, d / "exp"], ("ddgan",)),
    C("export-format-unknown", lambda w, d: ["export", w.digits, d / "exp", "--format", "onnx"], ("--format", "onnx")),
    # --- found by an adversarial probe of the CLI ----------------------------------------------------------
    C("train-norm-groups-uneven", lambda w, d: _train(w, d, "--set", "data.name=digits", "--set",
                                                      "model.norm_groups=7"), ("model.norm_groups",)),
    C("train-learned-schedule-ddpm", lambda w, d: _train(w, d, "--set", "schedule.name=learned"), ("learned",)),
    C("train-out-of-memory", lambda w, d: _train(w, d, "--set", "model.hidden=10000000000"), ("out of memory",)),
    C("sample-noise-beyond-float32", lambda w, d: _sample(w, d, "--noise", _noise(d, np.full((4, 2), 1e300))),
      ("noise.npy", "float32")),
    C("bench-row-steps-empty", lambda w, d: ["bench", _grid(w, d, rows=_row(w, steps=[])), "--out", d / "b",
                                             "--quiet"], ("rows[0]", "empty")),
    C("export-inside-checkpoint", lambda w, d: ["export", w.digits, w.digits / "exp"], ("checkpoint directory",)),
    # --- the command line itself --------------------------------------------------------------------------
    C("unknown-command", lambda w, d: ["trian", w.toy], ("trian",)),
]


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under root: relative path -> SHA-256 of its bytes (symlinks and directories by name)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir():
            out[rel + "/"] = "dir"
    return out


def test_table_is_large_and_ids_unique():
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(ws, case, monkeypatch):
    if case.root_only_skip and os.geteuid() == 0:
        pytest.skip("root writes through file permissions")
    monkeypatch.delenv("TRILEMMA_DEBUG", raising=False)
    monkeypatch.chdir(ws.root)  # a default output path (runs/...) would land in the workspace and be seen
    d = ws.root / "cases" / case.id
    d.mkdir()
    try:
        args = case.prepare(ws, d)
        before = _snapshot(ws.root)
        res = run(*args)
        after = _snapshot(ws.root)
    finally:
        for p in [d, *d.rglob("*")]:  # the unwritable directory must be removable afterwards
            if p.is_dir() and not p.is_symlink():
                os.chmod(p, 0o700)
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and "Traceback" not in res.output, (res.exit_code, res.output)
    assert lines[0].startswith("trilemma: error: "), lines[0]
    for f in case.fragments:
        assert f in lines[0], (f, lines[0])
    changed = sorted(k for k in before if after.get(k) != before[k])
    added = sorted(k for k in after if k not in before)
    assert not changed and not added, {"changed or removed": changed, "added": added}
