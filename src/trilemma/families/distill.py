"""Few-step students distilled from a trained diffusion model (family distill).

The student is its teacher's model (architecture, schedule; pixel or latent) started from the teacher's EMA
weights. Its network predicts what the teacher's does, or v or x0 (`distill.prediction`): a few-step student is
stable with those, while an eps-student's x0 = (z - sigma eps) / alpha amplifies its errors by 1 / alpha. The teacher is pinned like a latent model's autoencoder: the checkpoint records its path
and a SHA-256 of its weights and config, and loading, sampling and --resume refuse a teacher that has changed.

progressive (Salimans & Ho, ICLR 2022): one round teaches the student to take in one DDIM step what the teacher
takes in two, on the trailing grid of `student_steps` steps (the teacher's grid has twice as many; the two nest).
The target is `distillation.progressive_target`, the loss its x-space error weighted by max(SNR, 1). A round's
checkpoint is the teacher of the next round (64 -> 32 -> ... -> 1): name it as distill.teacher.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..denoiser import append_dims
from ..distillation import progressive_target, truncated_snr_weight
from ..errors import TrilemmaError
from ..schedules import alpha_sigma, time_grid
from .base import Family
from .latent import LatentFamily, same_images

TEACHER_FAMILIES = ("ddpm", "vdm", "distill")
FROM_TEACHER = ("schedule", "model", "gan", "vdm", "autoencoder", "latent")  # config sections the student inherits


class Distillation(Family):
    """A student of `cfg.distill.teacher` trained by `cfg.distill.method`; `meta` is the config.json of a student
    checkpoint being loaded or resumed (its recorded teacher must be the one found at the path)."""

    phases = {"model": ("net",)}  # the network only: the schedule (learned or not) stays the teacher's

    def __init__(self, cfg, data_shape: tuple[int, ...], meta: dict | None = None, where: str = "config"):
        from ..checkpoint import load_checkpoint
        from ..loading import check_recorded_sha256, checkpoint_sha256
        from . import build_family

        super().__init__(cfg, data_shape)
        d = cfg.distill
        if not d.teacher:
            raise TrilemmaError("distill.teacher: name the run or checkpoint directory of the model to distill")
        _check_inherited_sections(cfg)
        ck = load_checkpoint(d.teacher)
        if ck.cfg.family not in TEACHER_FAMILIES:
            raise TrilemmaError(f"distill.teacher: {ck.path} is a {ck.cfg.family} checkpoint; a teacher is a ddpm "
                                "or vdm model, or an earlier distill round")
        self.teacher_sha256 = checkpoint_sha256(ck)
        check_recorded_sha256(meta, "teacher", self.teacher_sha256, where, ck.path, "teacher",
                              "point distill.teacher at the model this student was distilled from")
        # the same data: toy points exactly (n, seed and scale are the data), images up to where they are stored
        if not (ck.cfg.data == cfg.data or (cfg.data.name != "toy2d" and same_images(ck.cfg.data, cfg.data))):
            raise TrilemmaError(f"data: the teacher {ck.path} was trained on other data ({ck.cfg.data.name}); a "
                                "student learns on its teacher's data (copy the teacher's data section)")
        self.teacher_ck, self._teacher = ck, None
        model_cfg = _student_model_config(_model_config(ck), d.prediction)
        self.student = build_family(model_cfg, data_shape, meta, where)  # the teacher's model
        self.modules, self.sample_shape = self.student.modules, self.student.sample_shape
        self.data_shape = tuple(data_shape)  # what `decode` gives (a latent student's images)
        if meta is None:  # a new student starts from its teacher's weights (a saved one has its own)
            self.modules.load_state_dict(self.teacher.modules.state_dict())
        self.ts, self.tt = _nested_grids(self.student.denoiser(self.modules).schedule, d.student_steps)

    @property
    def teacher(self) -> Family:
        """The teacher with its EMA weights, frozen; read when training first needs it (sampling a student does
        not, so a late round loads one checkpoint, not its whole chain)."""
        if self._teacher is None:
            from ..loading import loaded_family

            with torch.random.fork_rng(devices=[]):  # building it draws initial weights: not from the run's RNG
                self._teacher = loaded_family(self.teacher_ck)
            self._teacher.modules.requires_grad_(False)
            self._teacher_den = self._teacher.denoiser(self._teacher.modules)
        return self._teacher

    def ema_names(self) -> list[str]:
        return self.student.ema_names()

    def denoiser(self, modules: nn.ModuleDict):
        return self.student.denoiser(modules)

    def training_data(self, data, device, progress: bool = False):
        return self.student.training_data(data, device, progress)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return self.student.decode(x)

    def checkpoint_meta(self, ema: nn.ModuleDict) -> dict:
        from ..config import to_dict

        teacher = {"path": self.cfg.distill.teacher, "sha256": self.teacher_sha256,
                   "family": self.teacher_ck.cfg.family, "steps": 2 * self.cfg.distill.student_steps}
        # the model the student runs, so a later round (or a sampler) needs only this checkpoint, not its chain
        return {**self.student.checkpoint_meta(ema), "teacher": teacher, "model_config": to_dict(self.student.cfg)}

    def loss(self, phase: str, modules: nn.ModuleDict, x: torch.Tensor, rng, step: int) -> torch.Tensor:
        """Per-sample progressive distillation loss: max(SNR_t, 1) ||x~ - x0_hat_student(z_t, t)||^2 (mean over
        dimensions) at a student grid time t drawn uniformly, z_t = alpha_t x + sigma_t eps."""
        if isinstance(self.student, LatentFamily):
            x = self.student.latents(x)
        n = self.cfg.distill.student_steps
        j = (rng.rand(x.shape[0]) * n).floor().long().clamp(max=n - 1)  # (B,) student step index
        ts, tt = self.ts.to(x.device), self.tt.to(x.device)
        t, t_mid, s = ts[j], tt[2 * j + 1], ts[j + 1]
        student = self.student.denoiser(modules)
        a, sg = (append_dims(v, x) for v in alpha_sigma(student.schedule, t))
        z = a * x + sg * rng.randn(x.shape)
        self.teacher.modules.to(x.device)
        target = progressive_target(self._teacher_den, student.schedule, z, t, t_mid, s)
        w = truncated_snr_weight(student.schedule, t, x)
        return w * (student(z, t) - target).square().flatten(1).mean(1)


def _check_inherited_sections(cfg) -> None:
    """A student's model is its teacher's: a config that sets one of those sections would be silently ignored."""
    from ..config import Config, to_dict

    mine, default = to_dict(cfg), to_dict(Config())
    for sec in FROM_TEACHER:
        if mine[sec] != default[sec]:
            raise TrilemmaError(f"{sec}: a distill student takes its teacher's {sec}; remove the {sec} section")


def _model_config(ck):
    """The config of the model a teacher checkpoint runs: its own, or the one a distill round records."""
    from ..config import Config, from_dict, validate

    if ck.cfg.family != "distill":
        return ck.cfg
    where = f"{ck.path / 'config.json'}: model_config"
    if not isinstance(ck.meta.get("model_config"), dict):
        raise TrilemmaError(f"{where} is missing; this distill checkpoint cannot teach (retrain the round)")
    return validate(from_dict(Config, ck.meta["model_config"], where), where)


def _student_model_config(teacher_cfg, prediction: str):
    """The teacher's model config, its network's output read as `prediction` (v or x0) when one is given: the
    same architecture and weights, a different parameterisation, which training then adapts to."""
    if not prediction or prediction == teacher_cfg.model.prediction:
        return teacher_cfg
    if teacher_cfg.family != "ddpm":
        raise TrilemmaError(f"distill.prediction: a {teacher_cfg.family} network predicts eps; only a ddpm teacher's "
                            "student can predict v or x0")
    return dataclasses.replace(teacher_cfg, model=dataclasses.replace(teacher_cfg.model, prediction=prediction))


def _nested_grids(schedule, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's trailing grid of `steps` steps and the teacher's of 2 * steps, whose even entries are the
    student's (each student step t -> s spans the teacher's t -> t_mid -> s)."""
    try:
        ts, tt = time_grid(schedule, steps, "trailing"), time_grid(schedule, 2 * steps, "trailing")
    except TrilemmaError as e:
        raise TrilemmaError(f"distill.student_steps: {e}") from None
    if len(tt) != 2 * steps + 1 or not torch.equal(tt[::2], ts):
        raise TrilemmaError(f"distill.student_steps: the trailing grids of {steps} and {2 * steps} steps do not nest "
                            "on this schedule")
    return ts, tt


__all__ = ["Distillation", "TEACHER_FAMILIES", "FROM_TEACHER"]
