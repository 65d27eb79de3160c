"""Checkpoints: safetensors weights + JSON, written atomically; never pickles.

A checkpoint is a directory:
    config.json        {"format": "trilemma-checkpoint", "family", "step", "sample_shape", "data_shape", "config",
                        plus the family's own fields: an autoencoder's latent_scale, a latent model's autoencoder}
    model.safetensors  EMA weights of every module ("net.<param>"), what sampling and export use
    train.safetensors  raw weights, optimizer tensors and torch RNG states (for --resume)
    train.json         step, optimizer hyper-parameters, data-loader position, other RNG states
It is written into a temporary sibling directory and renamed into place, so a crash mid-write
leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import Config, config_from_json, to_dict
from .errors import TrilemmaError

FORMAT = "trilemma-checkpoint"
VERSION = 1


def optimizer_to_flat(name: str, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Split an optimizer state_dict into tensors (for safetensors) and JSON-able scalars."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{name}.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(name: str, opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    """Inverse of `optimizer_to_flat`: load the saved state into `opt`."""
    state: dict = {}
    prefix = f"optim.{name}."
    for key, v in tensors.items():
        if key.startswith(prefix):
            pid, k = key[len(prefix):].split(".", 1)
            state.setdefault(int(pid), {})[k] = v
    for key, v in meta["scalars"].items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _write_dir(path: Path, files: dict[str, callable]) -> None:
    """Write `files` (name -> writer(path)) into a temp dir, fsync, then swap it in for `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    old = path.parent / f".{path.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, writer in files.items():
        writer(tmp / name)
        with open(tmp / name, "rb") as f:
            os.fsync(f.fileno())
    if path.exists():
        os.rename(path, old)
    os.rename(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def _write_json(obj) -> callable:
    return lambda p: p.write_text(json.dumps(obj, indent=2))


def save_checkpoint(
    path: str | Path,
    *,
    cfg: Config,
    sample_shape: tuple[int, ...],
    step: int,
    ema_state: dict[str, torch.Tensor],
    train_tensors: dict[str, torch.Tensor] | None = None,
    train_meta: dict | None = None,
    data_shape: tuple[int, ...] | None = None,
    extra_meta: dict | None = None,
) -> Path:
    """Write a checkpoint directory atomically (see module docstring). `sample_shape` is the space the
    sampler works in, `data_shape` the data's (they differ for a latent model)."""
    path = Path(path)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "family": cfg.family,
        "step": step,
        "sample_shape": list(sample_shape),
        "data_shape": list(data_shape or sample_shape),
        "config": to_dict(cfg),
    }
    clash = set(extra_meta or ()) & set(meta)
    if clash:
        raise ValueError(f"checkpoint fields {sorted(clash)} would overwrite the standard ones")
    meta.update(extra_meta or {})
    cpu = lambda d: {k: v.detach().cpu().contiguous() for k, v in d.items()}  # noqa: E731
    files = {
        "config.json": _write_json(meta),
        "model.safetensors": lambda p: save_file(cpu(ema_state), str(p), metadata={"format": FORMAT}),
    }
    if train_tensors is not None:
        files["train.safetensors"] = lambda p: save_file(cpu(train_tensors), str(p))
        files["train.json"] = _write_json({"step": step, **(train_meta or {})})
    _write_dir(path, files)
    return path


@dataclass
class Checkpoint:
    path: Path  # the checkpoint directory
    cfg: Config
    meta: dict
    weights: dict[str, torch.Tensor]  # EMA weights

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.meta["sample_shape"])

    def train_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """The tensors and JSON that --resume needs."""
        t, j = self.path / "train.safetensors", self.path / "train.json"
        if not (t.is_file() and j.is_file()):
            raise TrilemmaError(f"{self.path}: checkpoint has no training state (train.safetensors/train.json)")
        return _load_safetensors(t), json.loads(j.read_text())


def _load_safetensors(p: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(p))
    except Exception as e:  # safetensors raises its own (version-dependent) error type for a bad file
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TrilemmaError(f"{p}: not a readable safetensors file ({first})") from None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from: the directory itself, a run directory holding `checkpoint/`,
    or a file inside the checkpoint directory."""
    p = Path(path)
    if not p.exists():
        raise TrilemmaError(f"{p}: no such file or directory")
    if p.is_file():
        p = p.parent
    if (p / "checkpoint" / "config.json").is_file():
        p = p / "checkpoint"
    if not ((p / "config.json").is_file() and (p / "model.safetensors").is_file()):
        raise TrilemmaError(f"{path}: not a trilemma checkpoint (expected a directory with config.json and model.safetensors)")
    return p


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint's config and EMA weights; anything that is not one is a one-line error."""
    p = resolve_checkpoint(path)
    where = str(p / "config.json")
    try:
        meta = json.loads((p / "config.json").read_text())
    except (ValueError, UnicodeDecodeError):
        raise TrilemmaError(f"{where}: not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise TrilemmaError(f"{where}: not a trilemma checkpoint (format field missing or wrong)")
    cfg = config_from_json(json.dumps(meta), where)
    return Checkpoint(p, cfg, meta, _load_safetensors(p / "model.safetensors"))
