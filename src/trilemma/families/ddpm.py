"""DDPM family: one eps / v / x0 network trained with L_simple (Ho et al. 2020, eq. 14)."""

from __future__ import annotations

import torch
from torch import nn

from ..denoiser import PredictionDenoiser, _bcast, target_for
from ..schedules import alpha_sigma, build_schedule
from ..networks import build_backbone


def ddpm_loss(denoiser: PredictionDenoiser, x: torch.Tensor, u: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """L_simple per sample: ||target - net(z_t, t)||^2 averaged over dimensions (Ho et al. eq. 14),
    target eps, v or x0. `u` (B,) uniform in [0, 1) picks t; `eps` is the forward noise."""
    t = denoiser.schedule.sample_t(u)
    a, s = (_bcast(v, x) for v in alpha_sigma(denoiser.schedule, t))
    z = a * x + s * eps  # z_t = alpha_t x + sigma_t eps (DDPM eq. 4)
    out = denoiser.predict(z, t)
    return (out - target_for(denoiser.prediction, x, eps, a, s)).square().flatten(1).mean(1)


class DDPM:
    """The DDPM family: a backbone under `PredictionDenoiser`, one optimizer phase."""

    phases = {"model": ("net",)}  # optimizer phase -> the modules it trains, stepped in this order

    def __init__(self, cfg, sample_shape: tuple[int, ...]):
        self.cfg = cfg
        self.schedule = build_schedule(cfg.schedule)
        self.modules = nn.ModuleDict({"net": build_backbone(cfg.model, sample_shape)})

    def ema_names(self) -> list[str]:
        return ["net"]

    def optimizer_options(self, phase: str) -> dict:
        """AdamW at the config's peak learning rate (warm-up is the training loop's)."""
        return {"lr": self.cfg.train.lr, "weight_decay": self.cfg.train.weight_decay}

    def denoiser(self, modules: nn.ModuleDict) -> PredictionDenoiser:
        return PredictionDenoiser(modules["net"], self.schedule, self.cfg.model.prediction)

    def loss(self, phase: str, modules: nn.ModuleDict, x: torch.Tensor, rng, step: int) -> torch.Tensor:
        """Per-sample loss for one phase; the training loop reduces, backpropagates and logs."""
        return ddpm_loss(self.denoiser(modules), x, rng.rand(x.shape[0]), rng.randn(x.shape))
