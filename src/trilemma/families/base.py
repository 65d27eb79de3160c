"""The family protocol, written down once: what the training loop, the samplers and the checkpoint loaders
need from a model family, with every optional hook's default here instead of found by `hasattr`.

A family is a schedule, modules, optimizer phases and an unreduced per-sample loss (EDM's loss callables):

    modules              nn.ModuleDict of everything it trains (and a learned schedule)
    phases               optimizer phase -> the modules it trains, stepped in this order each step
    sample_shape         the space its sampler works in (a latent model's latents)
    ema_names()          the modules kept as an EMA, saved in the checkpoint and used for sampling
    loss(phase, ...)     per-sample loss (B,) of one phase; the loop reduces, backpropagates and logs

Optional hooks, with the defaults below: `optimizer_options`, `training_data`, `after_step`, `round_starts` and
`start_round`, `finalize`, `checkpoint_meta`, `preview`, `decode`; and class flags a config can be checked against before any model is built
(`draws_x0` through `config_draws_x0`, `has_bound`, `no_sampler_reason`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import TrilemmaError
from ..runtime import Runtime, accelerate_modules


class Family:
    """Base of every family; a subclass sets `phases`, builds `modules` and defines `ema_names`, `denoiser`
    (unless it sets `no_sampler_reason`) and `loss`."""

    phases: dict[str, tuple[str, ...]] = {}
    draws_x0 = False  # its denoiser draws x0 at random (a GAN generator) instead of estimating E[x | z_t]
    has_bound = False  # defines `terms`, `to_bpd` and `bound_name`: a variational bound on -log p(x)
    no_sampler_reason: str | None = None  # why it has no denoiser, if it has none (an autoencoder)
    runtime = Runtime()  # how its networks run (`accelerate`): fp32, eager, default layout unless told

    def __init__(self, cfg, sample_shape: tuple[int, ...]):
        self.cfg = cfg
        self.sample_shape = tuple(sample_shape)
        self.modules = nn.ModuleDict()

    @classmethod
    def config_draws_x0(cls, cfg) -> bool:
        """Whether a model of config `cfg` draws x0 at random (`draws_x0`; a family whose answer depends on the
        config, a distill student's method, says so here)."""
        return cls.draws_x0

    # --- required ------------------------------------------------------------------------------------

    def ema_names(self) -> list[str]:
        raise NotImplementedError

    def denoiser(self, modules: nn.ModuleDict) -> nn.Module:
        """denoiser(z_t, t) -> x0_hat on `modules` (the EMA copies, for sampling)."""
        raise TrilemmaError(self.no_sampler_reason or f"{type(self).__name__} defines no denoiser")

    def loss(self, phase: str, modules: nn.ModuleDict, x: torch.Tensor, rng, step: int) -> torch.Tensor:
        raise NotImplementedError

    # --- optional hooks ----------------------------------------------------------------------------

    def optimizer_options(self, phase: str) -> dict:
        """AdamW's options for a phase: the config's peak learning rate (warm-up is the training loop's)."""
        return {"lr": self.cfg.train.lr, "weight_decay": self.cfg.train.weight_decay}

    def training_data(self, data, device, progress: bool = False):
        """What the loader draws batches from (a latent model's cached latents); the data itself by default."""
        return data

    def after_step(self, modules: nn.ModuleDict, step: int) -> None:
        """After each optimizer step, before the EMAs (a consistency student's target network follows here);
        what it changes must live in `modules`, so checkpoints and exact resume keep it."""

    def round_starts(self) -> tuple[int, ...]:
        """The steps (> 0, ascending) at which a new training round starts. At each the loop puts the EMA weights
        into the trained modules, clears the optimizers' moments, restarts the learning rate's warm-up and decay
        for the round and calls `start_round`: a progressive student trains its rounds in one run. None here."""
        return ()

    def round_at(self, step: int) -> int:
        """The round (0-based) that optimizer step `step` trains."""
        return sum(s <= step for s in self.round_starts())

    def start_round(self, modules: nn.ModuleDict, index: int) -> None:
        """At the first step of round `index` >= 1, once `modules` hold the EMA weights; what it changes must
        live in `modules`, so checkpoints and exact resume keep it."""

    def round_config(self, index: int):
        """The config of a run that stops where round `index` ends: the loop saves the model as that round ends
        under this config, in the run directory's rounds/<index>/ (a checkpoint of its own)."""
        raise NotImplementedError

    def finalize(self, ema: nn.ModuleDict, raw: nn.ModuleDict, data, device) -> None:
        """Before each checkpoint, in every process (an autoencoder measures its latent scale here)."""

    def checkpoint_meta(self, ema: nn.ModuleDict) -> dict:
        """Extra fields of config.json (a latent model's autoencoder hash)."""
        return {}

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Samples -> data space: the identity, or a latent model's decoder."""
        return x

    def network_names(self) -> list[str]:
        """The backbones among the EMA modules, what a `runtime.Runtime` runs: all of them but a learned schedule."""
        from ..schedules import Schedule

        return [n for n in self.ema_names() if not isinstance(self.modules[n], Schedule)]

    def accelerate(self, runtime: Runtime) -> None:
        """Run the backbones (`network_names`, and a latent model's decoder) under `runtime`, for sampling: the
        schedule and everything the samplers compute stay in full precision. Once, after the weights are loaded."""
        accelerate_modules(self.modules, self.network_names(), runtime)
        self.runtime = runtime

    @torch.no_grad()
    def preview(self, ema: nn.ModuleDict, data, path: Path, device) -> None:
        """The picture a training run draws: a sample grid (or scatter plot over the data) from the EMA weights
        with the config's sampler, decoded into data space."""
        from ..config import sample_options
        from ..plotting import save_samples
        from ..samplers import generate

        s = self.cfg.sample
        x = generate(self.denoiser(ema), s.n, self.sample_shape, sampler=s.sampler, steps=s.steps, spacing=s.spacing,
                     seed=self.cfg.train.seed, device=device, **sample_options(s, "config"))
        reference = data.x[:2000] if data.kind == "points" else None
        save_samples(self.decode(x), path, reference, title=f"{s.sampler}-{s.steps}")
