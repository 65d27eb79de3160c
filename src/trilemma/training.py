"""The one training loop, on HuggingFace Accelerate (CPU, one GPU, many GPUs, mixed precision).

A family supplies modules, optimizer phases and an unreduced per-sample loss; this loop reduces,
backpropagates, clips, steps, keeps an EMA, logs, draws sample grids and writes checkpoints.
Every random draw of a step (data order, t, noise) is made for the *global* batch and sliced
per process, so N processes with batch b train exactly like one process with batch N*b, and a
resumed run continues bit for bit.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import (load_checkpoint, nonfinite, optimizer_from_flat, optimizer_to_flat, recover_checkpoint,
                         save_checkpoint)
from .config import Config, to_dict
from .data import InfiniteLoader, load_dataset
from .errors import TrilemmaError
from .families import build_family
from .paths import RunLock, atomic_write_text, check_run_dir


class ShardedRNG:
    """Random draws for one process's slice of a global batch, from one seeded CPU generator that
    every process advances identically (EDM's per-sample reproducibility, across processes)."""

    def __init__(self, seed: int, rank: int = 0, world_size: int = 1, device=None):
        self.gen = torch.Generator().manual_seed(seed)
        self.rank, self.world_size, self.device = rank, world_size, device

    def _slice(self, full: torch.Tensor, n: int) -> torch.Tensor:
        return full[self.rank * n : (self.rank + 1) * n].to(self.device)

    def randn(self, shape) -> torch.Tensor:
        n = shape[0]
        return self._slice(torch.randn((n * self.world_size, *shape[1:]), generator=self.gen), n)

    def rand(self, n: int) -> torch.Tensor:
        return self._slice(torch.rand(n * self.world_size, generator=self.gen), n)

    def stratified(self, n: int) -> torch.Tensor:
        """n of the global batch's low-discrepancy uniforms (u + i / N) mod 1, i < N = n * world_size, from one
        shared draw u (`families.vdm.stratified`): float64 (float32 on MPS)."""
        from .families.vdm import stratified
        from .schedules import hi_dtype

        u = stratified(torch.rand(1, generator=self.gen, dtype=torch.float64), n * self.world_size)
        return self._slice(u.to(hi_dtype(self.device or "cpu")), n)


class EMA:
    """Exponential moving average of module weights; the decay ramps up as min(decay,
    (1 + step) / (10 + step)) so short runs are not dominated by the initial weights."""

    def __init__(self, module: nn.Module, decay: float):
        self.module = copy.deepcopy(module).eval().requires_grad_(False)
        self.decay = decay

    def update(self, module: nn.Module, step: int) -> None:
        lerp_weights_(self.module, module, 1.0 - min(self.decay, (1 + step) / (10 + step)))


@torch.no_grad()
def lerp_weights_(dst: nn.Module, src: nn.Module, weight: float) -> None:
    """dst's parameters moved `weight` of the way to src's (one EMA step of decay 1 - weight), its buffers copied."""
    params = list(dst.parameters())
    if params:  # a fixed schedule module has none
        torch._foreach_lerp_(params, [p.detach() for p in src.parameters()], weight)
    for b_dst, b in zip(dst.buffers(), src.buffers()):
        b_dst.copy_(b)


def _rng_meta() -> dict:
    np_state = np.random.get_state()
    return {
        "python_random": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
        "numpy_random": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }


def _set_rng_meta(meta: dict) -> None:
    v, state, gauss = meta["python_random"]
    random.setstate((v, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy_random"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def _ema_state(emas: dict[str, EMA]) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": v for name, e in emas.items() for k, v in e.module.state_dict().items()}


def _lr_factor(cfg: Config, step: int, start: int = 0, end: int | None = None) -> float:
    """The learning rate of optimizer step `step` (0-based) over each phase's peak, in the round of steps
    [start, end) (the whole run, [0, train.steps), unless the family trains rounds): a linear warm-up over
    train.warmup steps, then constant (lr_decay none) or falling to 0 at the round's end, linearly or on a half
    cosine. A function of the step alone, so a resumed run takes the same rates."""
    tc = cfg.train
    k, n = step - start, (tc.steps if end is None else end) - start
    if k < tc.warmup:
        return (k + 1) / tc.warmup
    if tc.lr_decay == "none":
        return 1.0
    done = min(1.0, (k - tc.warmup) / max(1, n - tc.warmup))  # 0 at the end of warm-up, 1 at the round's end
    return 1.0 - done if tc.lr_decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * done))


def phase_parameters(modules: nn.ModuleDict, names) -> list[nn.Parameter]:
    return [p for n in names for p in modules[n].parameters()]


def check_compiled_gradients(family, eager: nn.ModuleDict, compiled: nn.ModuleDict, others: list[nn.Module],
                              params: list[nn.Parameter], phase: str, x: torch.Tensor, rng_factory, autocast,
                              tolerance: float = 0.25) -> None:
    """train.compile: one phase's gradients on batch x, compiled modules against eager ones (the same parameters,
    the same random draws from `rng_factory()`), before any step. torch 2.13's inductor gave the fmnist-cpu-ddpm
    UNet2DModel a forward equal to eager's and a backward with zero gradients for most of its layers (BENCHMARKS.md,
    issue 23); a network it miscompiles so is refused in one line, not trained wrong, and so is a loss that needs
    double backward through a compiled network. A parameter fails when its
    gradient (of norm at least 1e-4 of the largest) is off by more than `tolerance`, relative: far above the rounding
    of fused float32 or bf16 arithmetic, far below a missing gradient (1.0)."""
    names = {id(p): n for n, p in eager.named_parameters()}
    params = [p for p in params if p.requires_grad]
    grads = {}
    for kind, mods in (("eager", eager), ("compiled", compiled)):
        try:
            with frozen(others), autocast():
                loss = family.loss(phase, mods, x, rng_factory(), 0).mean()
            grads[kind] = torch.autograd.grad(loss, params, allow_unused=True)
        except RuntimeError as e:
            if kind == "compiled" and "double backward" in str(e):
                raise TrilemmaError(
                    f"train.compile: the {phase} loss takes a gradient of a gradient (a GAN's R1 penalty, VDM's "
                    f"dgamma/dt), which torch {torch.__version__}'s compiled networks cannot give; train without "
                    "train.compile") from None
            raise
    norms = [0.0 if g is None else g.float().norm().item() for g in grads["eager"]]
    floor = 1e-4 * max(norms, default=0.0)
    for p, ge, gc, n in zip(params, grads["eager"], grads["compiled"], norms):
        if n <= floor or n == 0.0:
            continue
        gc = torch.zeros_like(ge) if gc is None else gc
        rel = ((gc.float() - ge.float()).norm() / n).item()
        if rel > tolerance:
            raise TrilemmaError(
                f"train.compile: torch.compile's gradient of {names.get(id(p), 'a parameter')} is off by {rel:.2f} "
                f"(relative) from eager mode's on the first batch; torch {torch.__version__} miscompiles this "
                "network's backward, so train it without train.compile")


@contextlib.contextmanager
def frozen(frozen: list[nn.Module]):
    """requires_grad off for the trainable parameters of `frozen`, restored on exit."""
    params = [p for m in frozen for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _ema_modules(emas: dict[str, EMA]) -> nn.ModuleDict:
    return nn.ModuleDict({name: e.module for name, e in emas.items()})


def _state_problem(family, modules: nn.ModuleDict, emas: dict[str, EMA], x: torch.Tensor, seed: int,
                   step: int) -> str | None:
    """What makes the state a checkpoint would hold unusable, or None: a non-finite weight (raw or EMA), or a
    non-finite loss of the raw weights or of the EMA weights (what sampling uses) on the last batch. Huge but
    finite weights pass the first test and fail the second. The probe draws from its own generator and forks
    the global RNG, so the training run (and an exact resume) is not perturbed."""
    ema_modules = _ema_modules(emas)
    for kind, mods in (("weights", modules), ("EMA weights", ema_modules)):
        problem = nonfinite(mods.state_dict())
        if problem:
            return f"its {kind}: {problem}"
    merged = nn.ModuleDict({n: ema_modules[n] if n in ema_modules else m for n, m in modules.items()})
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.enable_grad():
        for kind, mods in (("weights", modules), ("EMA weights", merged)):
            probe = ShardedRNG(seed + 2, device=x.device)
            for phase in family.phases:
                value = family.loss(phase, mods, x, probe, step).mean().item()
                if not math.isfinite(value):
                    return f"the {kind} it would save give a {phase} loss of {value}"
    return None


def _warn_single_cpu_process() -> None:
    """`accelerate launch --cpu --num_processes N` sets MASTER_PORT but starts one process (its simple
    launcher goes multi-process only through mpirun); say so instead of silently training alone."""
    import os

    if os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true" and "MASTER_PORT" in os.environ \
            and "WORLD_SIZE" not in os.environ and "PMI_SIZE" not in os.environ:
        import warnings

        warnings.warn(
            "accelerate launch --cpu started a single process; for data-parallel CPU training use "
            "`accelerate launch --multi_gpu --num_processes N` (gloo on a machine without GPUs) or torchrun",
            stacklevel=3,
        )


def train(cfg: Config, out_dir: str | Path, *, resume: bool = False, progress: bool = True) -> Path:
    """Train `cfg` into `out_dir` (checkpoint/ and samples/); returns the checkpoint directory.

    The run directory is checked and locked before anything is computed (`paths.RunLock`): it must be new,
    empty or a run directory (never a checkpoint directory or someone else's files), and one process at a time
    trains into it. What an interrupted checkpoint write left is resolved first (`recover_checkpoint`)."""
    from accelerate import Accelerator

    out_dir = Path(out_dir)
    check_run_dir(out_dir, probe_lock=False)  # the main process takes the lock below
    on_cpu = not (torch.cuda.is_available() or torch.backends.mps.is_available())
    _warn_single_cpu_process()
    # cpu=True when there is no accelerator: then processes started by torchrun / `accelerate launch
    # --multi_gpu` (WORLD_SIZE > 1) run data-parallel on gloo instead of each training alone
    if on_cpu and cfg.train.mixed_precision == "fp16":
        raise TrilemmaError("train.mixed_precision fp16: not supported on the CPU (use bf16, or fp16 on a GPU)")
    # Accelerate keeps one AcceleratorState per process and refuses an Accelerator with another mixed precision or
    # dynamo backend; a second run in the same process (a notebook, benchmarks/precision.py) starts from a fresh one.
    # PartialState (the process group of a data-parallel run) is kept.
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(
        cpu=on_cpu,
        mixed_precision=cfg.train.mixed_precision,
        dynamo_backend="inductor" if cfg.train.compile else "no",
        log_with="tensorboard" if cfg.train.tracker == "tensorboard" else None,
        project_dir=str(out_dir),
    )
    lock = RunLock(out_dir)
    created = not out_dir.exists()
    if accelerator.is_main_process:  # one owner per run; the other processes of a data-parallel run follow it
        note = lock.acquire()
        if note:
            print(f"trilemma: {note}", file=sys.stderr)
    finished = False
    try:
        if accelerator.is_main_process:
            note = recover_checkpoint(out_dir / "checkpoint", locked=True)
            if note:
                print(f"trilemma: {note}", file=sys.stderr)
        accelerator.wait_for_everyone()
        ckpt = _train(cfg, out_dir, accelerator, resume, progress)
        finished = True
        return ckpt
    finally:
        lock.release()
        if not finished and created and accelerator.is_main_process:
            _remove_if_bare(out_dir)


def _remove_if_bare(out_dir: Path) -> None:
    """A run directory this process created and that holds nothing but its own bookkeeping (the run failed
    before writing a checkpoint or a sample) is removed again, so a refused run leaves nothing behind."""
    from .paths import LOCK_NAME, RUN_MARKER

    try:
        names = {p.name for p in out_dir.iterdir()}
    except OSError:
        return
    if names <= {LOCK_NAME, RUN_MARKER, "config.json"}:
        for name in names:
            (out_dir / name).unlink(missing_ok=True)
        try:
            out_dir.rmdir()
        except OSError:
            pass


def _train(cfg: Config, out_dir: Path, accelerator, resume: bool, progress: bool) -> Path:
    ckpt_dir = out_dir / "checkpoint"
    if ckpt_dir.exists() and not resume:
        raise TrilemmaError(f"{ckpt_dir} already exists; pass --resume to continue it or choose another --out")
    ck = state = None
    if resume:
        if not ckpt_dir.exists():
            raise TrilemmaError(f"{ckpt_dir}: nothing to resume (no checkpoint)")
        ck = load_checkpoint(ckpt_dir)
        state = ck.train_state()  # read (and checked) before anything in the run directory changes
        if ck.meta["step"] > cfg.train.steps:
            raise TrilemmaError(f"{ckpt_dir} is at step {ck.meta['step']}, beyond train.steps = {cfg.train.steps}; "
                                "--resume continues to train.steps")
    run = _Run(cfg, out_dir, accelerator, ck, progress)
    if resume:
        run.restore(ck, state)
    if accelerator.is_main_process:  # the state fits: from here on this run owns the directory's config.json
        atomic_write_text(out_dir / "config.json", json.dumps(to_dict(cfg), indent=2))
    return run.loop(progress)


class _Run:
    """One training run's state: the family's modules, their EMAs and optimizers, the data loader and the
    sharded RNG; `loop` trains to train.steps, `save` writes a checkpoint."""

    def __init__(self, cfg: Config, out_dir: Path, accelerator, ck, progress: bool):
        from accelerate.utils import set_seed

        tc = cfg.train
        self.cfg, self.accelerator, self.ckpt_dir, self.samples_dir = cfg, accelerator, out_dir / "checkpoint", out_dir / "samples"
        set_seed(tc.seed)  # the model's initial weights: the same in every process
        self.data = load_dataset(cfg.data, "train")
        self.family = build_family(cfg, self.data.shape, ck.meta if ck else None, str(self.ckpt_dir))
        self.device = device = accelerator.device
        # what the loader draws from: the data, or a latent model's cached latents
        train_data = self.family.training_data(self.data, device, progress and accelerator.is_main_process)
        self.modules = self.family.modules.to(device)
        self.emas = {name: EMA(self.modules[name], tc.ema_decay) for name in self.family.ema_names()}
        self.optimizers = {
            phase: torch.optim.AdamW(phase_parameters(self.modules, names), **self.family.optimizer_options(phase))
            for phase, names in self.family.phases.items()
        }
        self.peak_lr = {phase: opt.param_groups[0]["lr"] for phase, opt in self.optimizers.items()}
        self.loader = InfiniteLoader(train_data, tc.batch_size, tc.seed, accelerator.process_index,
                                     accelerator.num_processes)
        self.rng = ShardedRNG(tc.seed + 1, accelerator.process_index, accelerator.num_processes, device)
        self.step = self.last_good = 0
        self.bar = None

    def restore(self, ck, state) -> None:
        """Continue exactly where a checkpoint stopped: weights, EMAs, optimizers, data order and every RNG."""
        tensors, meta = state
        try:
            self.modules.load_state_dict({k[len("modules."):]: v for k, v in tensors.items() if k.startswith("modules.")})
            for name, e in self.emas.items():
                e.module.load_state_dict({k[len(name) + 1 :]: v for k, v in ck.weights.items()
                                          if k.startswith(name + ".")})
            for phase, opt in self.optimizers.items():
                optimizer_from_flat(phase, opt, tensors, meta["optimizers"][phase])
            self.loader.load_state_dict(meta["loader"])
            self.rng.gen.set_state(tensors["rng.sharded"])
            torch.set_rng_state(tensors["rng.torch"])
            _set_rng_meta(meta["rng"])
        except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise TrilemmaError(f"{self.ckpt_dir}: its training state does not fit this run ({first})") from None
        self.step = self.last_good = meta["step"]

    def _diverged(self, at: str) -> TrilemmaError:
        kept = (f"the last good checkpoint (step {self.last_good}) is kept in {self.ckpt_dir}" if self.ckpt_dir.exists()
                else f"no checkpoint was written before it (train.save_every = {self.cfg.train.save_every})")
        return TrilemmaError(f"training diverged {at}; {kept}")

    def save(self, x, round_index: int | None = None) -> None:
        """A checkpoint of the current state, checked first (`_state_problem` on the last batch x, unless None); or,
        with `round_index`, the model as that round ends (its EMA weights) as the checkpoint of the run that would
        stop there (`Family.round_config`), in rounds/<index>/ beside checkpoint/: a model of its own."""
        acc, family = self.accelerator, self.family
        acc.wait_for_everyone()
        if x is not None:  # the state about to be saved must itself be good, not only the loss that led to it
            problem = _state_problem(family, self.modules, self.emas, x, self.cfg.train.seed, self.step)
            flags = acc.reduce(torch.tensor([float(problem is not None)], device=self.device), "sum")
            if flags.item() > 0:
                self.bar.close()
                raise self._diverged(f"by step {self.step}: {problem or 'another process found a non-finite state'}")
        # in every process, so their buffers stay identical
        family.finalize(_ema_modules(self.emas), acc.unwrap_model(self.modules), self.data, self.device)
        if acc.is_main_process:
            path, cfg, tensors, meta = self.ckpt_dir, self.cfg, None, None
            if round_index is not None:
                path, cfg = self.ckpt_dir.parent / "rounds" / str(round_index), family.round_config(round_index)
            else:
                tensors = {f"modules.{k}": v for k, v in acc.unwrap_model(self.modules).state_dict().items()}
                opt_meta = {}
                for phase, opt in self.optimizers.items():
                    t, m = optimizer_to_flat(phase, opt)
                    tensors.update(t)
                    opt_meta[phase] = m
                tensors["rng.sharded"] = self.rng.gen.get_state()
                tensors["rng.torch"] = torch.get_rng_state()
                meta = {"optimizers": opt_meta, "loader": self.loader.state_dict(), "rng": _rng_meta(),
                        "num_processes": acc.num_processes}
            save_checkpoint(path, cfg=cfg, sample_shape=family.sample_shape, step=self.step,
                            ema_state=_ema_state(self.emas), train_tensors=tensors, train_meta=meta,
                            data_shape=self.data.shape, extra_meta=family.checkpoint_meta(_ema_modules(self.emas)))
        acc.wait_for_everyone()

    def _phase_views(self) -> dict:
        """Per phase: (its optimizer, Accelerate-prepared; the modules with its own DDP-wrapped and the others bare;
        the others, frozen during its step so neither stray gradients nor DDP hooks reach them (a GAN's D during
        the G step); its parameters, for clipping)."""
        acc, modules = self.accelerator, self.modules
        wrapped = nn.ModuleDict({name: acc.prepare(m) if any(p.requires_grad for p in m.parameters()) else m
                                 for name, m in modules.items()})
        return {phase: (acc.prepare(self.optimizers[phase]),
                        nn.ModuleDict({n: wrapped[n] if n in names else modules[n] for n in modules}),
                        [modules[n] for n in modules if n not in names], phase_parameters(modules, names))
                for phase, names in self.family.phases.items()}

    def _round(self, step: int) -> tuple[int, int, int]:
        """(index, first step, end) of the training round that optimizer step `step` belongs to."""
        starts, index = (0, *self.family.round_starts(), self.cfg.train.steps), self.family.round_at(step)
        return index, starts[index], starts[index + 1]

    def _start_round(self, index: int) -> None:
        """A new round (`Family.round_starts`): the EMA weights into the trained modules, fresh optimizer moments,
        then the family's `start_round`."""
        raw = self.accelerator.unwrap_model(self.modules)
        with torch.no_grad():
            for name, e in self.emas.items():
                raw[name].load_state_dict(e.module.state_dict())
        for opt in self.optimizers.values():
            opt.state.clear()
        self.family.start_round(raw, index)

    def _check_compiled(self, views: dict, x: torch.Tensor) -> None:
        """train.compile: every phase's compiled gradients on the first batch against eager ones
        (`check_compiled_gradients`), from draws of their own, so the run's RNG and data order are untouched. One
        process only: a DDP module's hooks expect a backward, not `autograd.grad`."""
        if self.accelerator.num_processes > 1:
            return
        seed = self.cfg.train.seed + 2
        for phase, (_, compiled, others, params) in views.items():
            check_compiled_gradients(self.family, self.modules, compiled, others, params, phase, x,
                                     lambda: ShardedRNG(seed, 0, 1, self.device), self.accelerator.autocast)

    def _step(self, x: torch.Tensor, views: dict) -> dict:
        """One optimizer step of every phase on batch x, then the EMAs; returns {"loss/<phase>": value}."""
        index, start, end = self._round(self.step)
        if index > 0 and self.step == start:
            self.save(x, round_index=index - 1)
            self._start_round(index)
        tc, warm, logs = self.cfg.train, _lr_factor(self.cfg, self.step, start, end), {}
        for phase, (opt, phase_modules, others, params) in views.items():
            for group in opt.param_groups:
                group["lr"] = self.peak_lr[phase] * warm
            with frozen(others):
                loss = self.family.loss(phase, phase_modules, x, self.rng, self.step).mean()
                value = loss.item()
                if not math.isfinite(value):
                    self.bar.close()
                    raise self._diverged(f"at step {self.step + 1}: {phase} loss is {value}")
                self.accelerator.backward(loss)
            if tc.grad_clip > 0:
                self.accelerator.clip_grad_norm_(params, tc.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            logs[f"loss/{phase}"] = value
        self.family.after_step(self.modules, self.step)
        for name, e in self.emas.items():  # the EMA's warm-up restarts with each round, as a new run's would
            e.update(self.accelerator.unwrap_model(self.modules[name]), self.step - start)
        self.step += 1
        return logs

    def _preview(self) -> None:
        if self.accelerator.is_main_process:
            self.family.preview(_ema_modules(self.emas), self.data, self.samples_dir / f"step_{self.step:07d}.png",
                                self.device)

    def loop(self, progress: bool) -> Path:
        """Train from the current step to train.steps: log, draw previews and save on their intervals."""
        tc, acc = self.cfg.train, self.accelerator
        views = self._phase_views()
        if tc.tracker != "none":
            acc.init_trackers("trilemma", config={k: str(v) for k, v in to_dict(self.cfg)["train"].items()})
        self.bar = tqdm(total=tc.steps, initial=self.step, disable=not (progress and acc.is_main_process),
                        desc=f"train {self.cfg.family}", dynamic_ncols=True)
        smooth: dict[str, float] = {}
        t0, s0, x = time.perf_counter(), self.step, None
        self.modules.train()
        while self.step < tc.steps:
            x = next(self.loader).to(self.device)
            if tc.compile and self.step == s0:
                self._check_compiled(views, x)
            logs = self._step(x, views)
            for k, v in logs.items():
                smooth[k] = v if k not in smooth else 0.98 * smooth[k] + 0.02 * v
            if self.step % tc.log_every == 0 or self.step == tc.steps:
                rate = (self.step - s0) / max(time.perf_counter() - t0, 1e-9)
                self.bar.set_postfix({**{k.split("/")[-1]: f"{v:.4f}" for k, v in smooth.items()}, "steps/s": f"{rate:.1f}"})
                if tc.tracker != "none":
                    warm = _lr_factor(self.cfg, self.step - 1, *self._round(self.step - 1)[1:])
                    acc.log({**logs, **{f"lr/{p}": lr * warm for p, lr in self.peak_lr.items()}}, step=self.step)
            self.bar.update(1)
            if tc.sample_every and self.step % tc.sample_every == 0 and self.step < tc.steps:
                self._preview()
            if tc.save_every and self.step % tc.save_every == 0 and self.step < tc.steps:
                self.save(x)
                self.last_good = self.step
        self.bar.close()
        self.save(x if self.step > s0 else None)  # a resumed run with nothing left to train saves the loaded (checked) state
        self._preview()
        if tc.tracker != "none":
            acc.end_training()
        return self.ckpt_dir
