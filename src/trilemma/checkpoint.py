"""Checkpoints: safetensors weights + JSON, written atomically; never pickles.

A checkpoint is a directory:
    config.json        {"format": "trilemma-checkpoint", "family", "step", "sample_shape", "data_shape", "config",
                        plus the family's own fields: an autoencoder's latent_scale, a latent model's autoencoder}
    model.safetensors  EMA weights of every module ("net.<param>"), what sampling and export use
    train.safetensors  raw weights, optimizer tensors and torch RNG states (for --resume)
    train.json         step, optimizer hyper-parameters, data-loader position, other RNG states
It is written into a temporary sibling directory `.NAME.tmp-PID`, fsynced, and swapped in with two renames
(NAME -> `.NAME.old-PID`, tmp -> NAME), so a crash at any point leaves a complete checkpoint somewhere:
`recover_checkpoint` (run before a checkpoint is loaded, and by a training before it starts) verifies every
candidate by reading it, puts the newest complete one at NAME and removes the rest, under the run
directory's lock, so never while a training that might be writing holds it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from .config import Config, config_from_json, to_dict
from .errors import TrilemmaError
from .paths import CHECKPOINT_FORMAT as FORMAT
from .paths import LOCK_NAME, fsync_dir, fsync_file, read_safetensors, temp_sibling, try_lock, unlock

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


def _fault(point: str, path: Path) -> None:
    """Fault injection for the tests: `_FAULT_HOOK(point, path)` is called at each point of a checkpoint write
    ("wrote <file>", "before renames", "between renames", "after renames"); it may raise to simulate a crash."""
    if _FAULT_HOOK is not None:
        _FAULT_HOOK(point, path)


_FAULT_HOOK = None


def _write_dir(path: Path, files: dict[str, callable]) -> None:
    """Write `files` (name -> writer(path)) into a temp dir, fsync, then swap it in for `path`. A directory
    cannot be renamed over a non-empty one, so this is two renames rather than `paths.atomic_write`'s one;
    `recover_checkpoint` completes a swap that a crash interrupted."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = temp_sibling(path, "tmp"), temp_sibling(path, "old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, writer in files.items():
        writer(tmp / name)
        fsync_file(tmp / name)
        _fault(f"wrote {name}", tmp / name)
    fsync_dir(tmp)
    _fault("before renames", path)
    if path.exists():
        os.rename(path, old)
    _fault("between renames", path)
    os.rename(tmp, path)
    fsync_dir(path.parent)
    _fault("after renames", path)
    shutil.rmtree(old, ignore_errors=True)


def checkpoint_step(path: Path) -> int | None:
    """The step of the complete checkpoint in directory `path`, verified by reading every file it lists, or
    None if it is missing, partial or corrupt."""
    try:
        meta = json.loads((path / "config.json").read_text())
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("step"), int):
            return None
        read_safetensors(path / "model.safetensors")
        t, j = path / "train.safetensors", path / "train.json"
        if t.exists() or j.exists():  # written together: both whole or the checkpoint is not
            read_safetensors(t)
            if json.loads(j.read_text()).get("step") != meta["step"]:
                return None
        return meta["step"]
    except Exception:  # any unreadable part (OSError, JSON, safetensors' own errors) means incomplete
        return None


def write_leftovers(path: Path) -> list[Path]:
    """The `.NAME.tmp-PID` / `.NAME.old-PID` directories of writes to checkpoint directory `path`."""
    out = []
    for p in path.parent.glob(f".{path.name}.*-*"):
        kind, _, pid = p.name[len(path.name) + 2 :].partition("-")
        if kind in ("tmp", "old") and pid.isdigit() and p.is_dir():
            out.append(p)
    return out


def recover_checkpoint(path: str | Path, locked: bool = False, wait: float = 3.0) -> str | None:
    """Resolve what an interrupted write left beside checkpoint directory `path`: of `path` itself and the
    `.NAME.tmp-PID` / `.NAME.old-PID` directories, the newest complete checkpoint (verified by reading it) is put
    at `path` and the others are removed. This changes files only under the exclusive lock of the directory
    that holds `path` (its run directory's `.lock`, which a training holds for its lifetime): a caller that
    holds it says `locked`; otherwise the lock is taken, waiting up to `wait` seconds for another recovery,
    and nothing is done while a training holds it (its write in progress is not a leftover). Returns a
    one-line description of what was done, or None."""
    path = Path(path)
    if not path.parent.is_dir() or not write_leftovers(path):
        return None
    if locked:
        return _recover(path)
    try:
        f = open(path.parent / LOCK_NAME, "a+")
    except OSError:
        return None  # a directory we cannot write to: nothing could be renamed anyway
    with f:
        deadline = time.monotonic() + wait
        while not try_lock(f):
            if time.monotonic() > deadline:
                return None  # a training owns the directory
            time.sleep(0.05)
        try:
            return _recover(path)
        finally:
            unlock(f)


def _recover(path: Path) -> str | None:
    stray = write_leftovers(path)  # again, now under the lock: another process may have recovered meanwhile
    if not stray:
        return None
    steps = {p: checkpoint_step(p) for p in [path, *stray] if p.is_dir()}
    complete = {p: s for p, s in steps.items() if s is not None}
    # the newest complete one; on a tie the checkpoint in place wins, then the newer write (tmp before old)
    best = max(complete, key=lambda p: (complete[p], p == path, ".tmp-" in p.name), default=None)
    done = []
    if best is not None and best != path:
        if path.exists():
            aside = temp_sibling(path, "old")
            shutil.rmtree(aside, ignore_errors=True)
            os.rename(path, aside)
            stray.append(aside)
        os.rename(best, path)
        fsync_dir(path.parent)
        done.append(f"restored the checkpoint of step {complete[best]} from {best.name}")
    removed = [p for p in stray if p != best and p.exists()]
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    if removed:
        done.append(f"removed {len(removed)} leftover director{'y' if len(removed) == 1 else 'ies'} of an "
                    "interrupted write")
    return f"{path}: " + "; ".join(done) if done else None


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
    files = {"model.safetensors": lambda p: save_file(cpu(ema_state), str(p), metadata={"format": FORMAT})}
    if train_tensors is not None:
        files["train.safetensors"] = lambda p: save_file(cpu(train_tensors), str(p))
        files["train.json"] = _write_json({"step": step, **(train_meta or {})})
    files["config.json"] = _write_json(meta)  # last: a directory with config.json was written whole
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
        tensors, _ = read_safetensors(t)
        try:
            meta = json.loads(j.read_text())
        except (ValueError, UnicodeDecodeError):
            raise TrilemmaError(f"{j}: not valid JSON") from None
        for where, have, need in ((j, meta, ("step", "optimizers", "loader", "rng")), (t, tensors, ("rng.sharded", "rng.torch"))):
            missing = [k for k in need if not isinstance(have, dict) or k not in have]
            if missing:
                raise TrilemmaError(f"{where}: not a trilemma training state (missing {', '.join(missing)})")
        if meta["step"] != self.meta["step"]:
            raise TrilemmaError(f"{j}: step {meta['step']} does not match config.json's {self.meta['step']}")
        return tensors, meta


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from: the directory itself, a run directory holding `checkpoint/`,
    or a file inside the checkpoint directory; "trilemma:NAME" is a shipped checkpoint (`paths.shipped_checkpoint`)."""
    from .paths import shipped_checkpoint

    p = shipped_checkpoint(path) or Path(path)
    for cand in (p / "checkpoint", p):  # an interrupted write may have left the checkpoint beside its place
        note = recover_checkpoint(cand)
        if note:
            print(f"trilemma: {note}", file=sys.stderr)
    if not p.exists():
        if write_leftovers(p):
            raise TrilemmaError(f"{p}: a training is writing this checkpoint now; try again in a moment")
        raise TrilemmaError(f"{p}: no such file or directory")
    if p.is_file():
        p = p.parent
    if (p / "checkpoint" / "config.json").is_file():
        p = p / "checkpoint"
    if not ((p / "config.json").is_file() and (p / "model.safetensors").is_file()):
        if write_leftovers(p / "checkpoint"):
            raise TrilemmaError(f"{p / 'checkpoint'}: a training is writing this checkpoint now; try again in a moment")
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
    for key in ("sample_shape", "data_shape"):
        shape = meta.get(key, meta.get("sample_shape"))
        if not (isinstance(shape, list) and shape and all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                                                          for d in shape)):
            raise TrilemmaError(f"{where}: {key} must be a list of positive integers, got {shape!r}")
    if not isinstance(meta.get("step"), int) or meta["step"] < 0:
        raise TrilemmaError(f"{where}: step must be a non-negative integer, got {meta.get('step')!r}")
    cfg = config_from_json(json.dumps(meta), where)
    weights, _ = read_safetensors(p / "model.safetensors")
    check_finite(weights, str(p / "model.safetensors"))
    return Checkpoint(p, cfg, meta, weights)


def nonfinite(tensors: dict[str, torch.Tensor]) -> str | None:
    """'k of n weight tensors hold NaN or infinity (names...)' if any floating-point tensor does, else None."""
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if not bad:
        return None
    return (f"{len(bad)} of {len(tensors)} weight tensors hold NaN or infinity "
            f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})")


def check_finite(tensors: dict[str, torch.Tensor], where: str) -> None:
    """A one-line error if any floating-point tensor holds NaN or infinity (a diverged model samples NaN)."""
    problem = nonfinite(tensors)
    if problem:
        raise TrilemmaError(f"{where}: {problem}; the model diverged")
