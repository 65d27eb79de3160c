"""Few-step students distilled from a trained diffusion model (family distill).

The student is its teacher's model (architecture, schedule; pixel or latent) started from the teacher's EMA
weights. Its network predicts what the teacher's does, or v or x0 (`distill.prediction`): a few-step student is
stable with those, while an eps-student's x0 = (z - sigma eps) / alpha amplifies its errors by 1 / alpha. The teacher is pinned like a latent model's autoencoder: the checkpoint records its path
and a SHA-256 of its weights and config, and loading, sampling and --resume refuse a teacher that has changed.

Methods (`distill.method`):

progressive (Salimans & Ho, ICLR 2022): one round teaches the student to take in one DDIM step what the teacher
takes in two, on the trailing grid of `student_steps` steps (the teacher's grid has twice as many; the two nest).
The target is `distillation.progressive_target`, the loss its x-space error weighted by max(SNR, 1). A round's
checkpoint is the teacher of the next round (64 -> 32 -> ... -> 1): name it as distill.teacher. Or one run trains
`rounds` rounds (the paper's Algorithm 2), from student_steps * 2^(rounds - 1) steps down to student_steps, in
equal shares of train.steps: at each new round the student's EMA weights become its teacher (module "teacher")
and its starting point, with fresh optimizer moments and learning-rate schedule (`Family.round_starts`); each
round's student is saved as it ends, in the run directory's rounds/<index>/, under the config of the run that
would have stopped there (`round_config`).

consistency (Song et al., ICML 2023, Alg. 2): the student f(z_t, t) (`distillation.ConsistencyDenoiser`, the
identity at t_min) learns to give at z_t what a target network gives one teacher step (DDIM or Heun, `solver`)
down the probability-flow ODE, on a log-SNR grid of `grid_steps` steps; the target network (module "target") is
an EMA of the student with decay `target_ema`; the distance is pseudo-Huber or L2. Sampled with the consistency
sampler.

adversarial (a DDGAN started from the teacher, as UFOGen): the generator is the teacher's network with a latent
path into its time embedding that starts at zero (`networks.latent_generator`), so at step 0 G(x_t, z, t) is the
teacher's x0_hat for every z (on 2-D data `gan.g_fourier` also gives it Fourier bands of x_t, on input weights
that start at zero); then DDGAN's discriminator and losses (`ddgan.gan_loss`, the `gan` section) on the
trailing grid of `student_steps` <= 8 steps, plus `teacher_weight` ||G - teacher x0_hat||^2. Sampled with the
ddpm (ancestral) sampler on that grid.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import torch
from torch import nn

from ..denoiser import append_dims, schedule_state
from ..distillation import (AdversarialDenoiser, ConsistencyDenoiser, consistency_grid, consistency_target,
                            progressive_target, pseudo_huber, pseudo_huber_c, truncated_snr_weight)
from ..errors import TrilemmaError
from ..schedules import alpha_sigma, hi_precision, time_grid
from .base import Family
from .ddgan import gan_loss, gan_optimizer_options, grid_step_pairs
from .latent import LatentFamily, same_images

TEACHER_FAMILIES = ("ddpm", "vdm", "distill")
FROM_TEACHER = ("schedule", "model", "gan", "vdm", "autoencoder", "latent")  # config sections the student inherits
MAX_GAN_STEPS = 8  # adversarial: DDGAN's T <= 8 large denoising steps
# the distill keys each method reads (beside teacher, method and prediction): another method's key set away from
# its default is refused, so nothing in a config is silently ignored
METHOD_KEYS = {
    "progressive": ("student_steps", "rounds"),
    "consistency": ("grid_steps", "solver", "target_ema", "distance", "sigma_data", "timestep_scaling"),
    "adversarial": ("student_steps", "teacher_weight"),
}


class Distillation(Family):
    """A student of `cfg.distill.teacher` trained by `cfg.distill.method`; `meta` is the config.json of a student
    checkpoint being loaded or resumed (its recorded teacher must be the one found at the path)."""

    phases = {"model": ("net",)}  # the network only: the schedule (learned or not) stays the teacher's

    @classmethod
    def config_draws_x0(cls, cfg) -> bool:
        return cfg.distill.method == "adversarial"  # a generator draws x0; the other students estimate it

    def __init__(self, cfg, data_shape: tuple[int, ...], meta: dict | None = None, where: str = "config"):
        from . import build_family

        super().__init__(cfg, data_shape)
        d = cfg.distill
        self.teacher_ck, self.teacher_sha256 = _teacher_checkpoint(cfg, meta, where)
        self._teacher = None
        self.student = build_family(_student_model_config(_model_config(self.teacher_ck), d.prediction), data_shape,
                                    meta, where)  # the teacher's model
        self.sample_shape, self.method = self.student.sample_shape, d.method
        self.data_shape = tuple(data_shape)  # what `decode` gives (a latent student's images)
        schedule = self.student.denoiser(self.student.modules).schedule
        self.modules = self.student.modules
        if meta is None:  # a new student starts from its teacher's weights (a saved one has its own)
            own = set(self.teacher.ema_names())  # the modules a checkpoint keeps (not a round's teacher copy)
            _load_teacher_weights(self.student.modules, {k: v for k, v in self.teacher.modules.state_dict().items()
                                                         if k.split(".", 1)[0] in own})
        if self.method == "adversarial":  # after the weights: its new parts start from them (zero latent path)
            self._make_generator(schedule)
        self._grid_cache = (None, None)
        if self.method == "consistency":  # the target network starts as the student (Song et al., Alg. 2)
            try:
                self._consistency_grid(schedule)
            except TrilemmaError as e:
                raise TrilemmaError(f"distill.grid_steps: {e}") from None
            self.modules = nn.ModuleDict({**self.student.modules,
                                          "target": copy.deepcopy(self.student.modules).requires_grad_(False)})
        if self.method == "progressive":  # round r learns 2 of its teacher's steps in 1 on a grid of steps[r]
            self.round_steps = [d.student_steps * 2 ** (d.rounds - 1 - r) for r in range(d.rounds)]
            self.grids = [_nested_grids(schedule, n) for n in self.round_steps]
            if d.rounds > 1:
                if cfg.train.steps % d.rounds:
                    raise TrilemmaError(f"distill.rounds: {d.rounds} rounds share train.steps equally; "
                                        f"{cfg.train.steps} steps is not a multiple of {d.rounds}")
                # the teacher of rounds 1, 2, ...: the student's EMA weights where the round before ended
                self.modules = nn.ModuleDict({**self.student.modules,
                                              "teacher": copy.deepcopy(self.student.modules).requires_grad_(False)})

    def _make_generator(self, schedule) -> None:
        """adversarial: the student's network becomes a generator with a zero-started latent path, beside a
        discriminator; the grid is the trailing one of student_steps = T steps, ascending."""
        from ..networks import build_discriminator, latent_generator

        T, g = self.cfg.distill.student_steps, self.cfg.gan
        if T > MAX_GAN_STEPS:
            raise TrilemmaError(f"distill.student_steps: an adversarial student takes T <= {MAX_GAN_STEPS} steps, "
                                f"got {T}")
        try:
            self.grid = time_grid(schedule, T, "trailing").flip(0)  # 0 = t_0 < ... < t_T
        except TrilemmaError as e:
            raise TrilemmaError(f"distill.student_steps: {e}") from None
        nets = self.student.modules
        nets["net"] = latent_generator(nets["net"], g.latent_dim, g.mapping_layers, g.g_fourier, g.g_fourier_period)
        self.modules = nn.ModuleDict({**nets, "disc": build_discriminator(g, self.sample_shape)})
        self.phases, self.draws_x0 = {"disc": ("disc",), "gen": ("net",)}, True

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

    def optimizer_options(self, phase: str) -> dict:
        if self.method != "adversarial":
            return super().optimizer_options(phase)
        return gan_optimizer_options(self.cfg.gan, phase)

    def denoiser(self, modules: nn.ModuleDict):
        inner = self.student.denoiser(modules)
        if self.method == "consistency":
            return self._consistency_fn(inner)
        if self.method == "adversarial":
            return AdversarialDenoiser(inner, self.cfg.gan.latent_dim)
        return inner

    def _consistency_fn(self, inner) -> ConsistencyDenoiser:
        d = self.cfg.distill
        return ConsistencyDenoiser(inner, self._consistency_grid(inner.schedule)[0].item(), d.sigma_data,
                                   d.timestep_scaling)

    def _consistency_grid(self, schedule) -> torch.Tensor:
        """`distillation.consistency_grid` of the schedule, computed again only when a learned schedule's values
        change (their version counters), as `PredictionDenoiser` caches its levels."""
        key = schedule_state(schedule)
        if self._grid_cache[0] != key:
            self._grid_cache = (key, consistency_grid(schedule, self.cfg.distill.grid_steps))
        return self._grid_cache[1]

    def round_starts(self) -> tuple[int, ...]:
        """progressive with rounds R > 1: round r starts at step floor(r * train.steps / R)."""
        if self.method != "progressive":
            return ()
        R, n = self.cfg.distill.rounds, self.cfg.train.steps
        return tuple(r * n // R for r in range(1, R))

    def round_config(self, index: int):
        """The run of rounds 0..index: the same config with index + 1 rounds of the same length, ending on the
        grid of round `index` (its checkpoint is the one this run's loop saves as that round ends)."""
        c, n = self.cfg, self.round_steps[index]
        return dataclasses.replace(
            c, distill=dataclasses.replace(c.distill, student_steps=n, rounds=index + 1),
            train=dataclasses.replace(c.train, steps=(index + 1) * c.train.steps // c.distill.rounds),
            sample=dataclasses.replace(c.sample, steps=n))

    def start_round(self, modules: nn.ModuleDict, index: int) -> None:
        """The student as it ends a round (its EMA weights, now in `modules`) teaches the next."""
        with torch.no_grad():
            for name, m in modules["teacher"].items():
                m.load_state_dict(modules[name].state_dict())

    def after_step(self, modules: nn.ModuleDict, step: int) -> None:
        """consistency: theta^- <- mu theta^- + (1 - mu) theta (stop-gradient; Song et al. eq. 8)."""
        if self.method != "consistency":
            return
        from ..training import lerp_weights_

        for name, target in modules["target"].items():
            lerp_weights_(target, modules[name], 1.0 - self.cfg.distill.target_ema)

    def training_data(self, data, device, progress: bool = False):
        return self.student.training_data(data, device, progress)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return self.student.decode(x)

    def checkpoint_meta(self, ema: nn.ModuleDict) -> dict:
        from ..config import to_dict

        teacher = {"path": self.cfg.distill.teacher, "sha256": self.teacher_sha256,
                   "family": self.teacher_ck.cfg.family, "method": self.method}
        if self.method == "progressive":  # the teacher's DDIM steps this run's (first) round replaces
            teacher["steps"] = 2 * self.round_steps[0]
        # the model the student runs, so a later round (or a sampler) needs only this checkpoint, not its chain
        return {**self.student.checkpoint_meta(ema), "teacher": teacher, "model_config": to_dict(self.student.cfg)}

    def loss(self, phase: str, modules: nn.ModuleDict, x: torch.Tensor, rng, step: int) -> torch.Tensor:
        """Per-sample loss of the method (below) on a batch of data (latents for a latent student)."""
        if isinstance(self.student, LatentFamily):
            x = self.student.latents(x)
        self.teacher.modules.to(x.device)
        if self.method == "consistency":
            return self._consistency_loss(modules, x, rng)
        if self.method == "adversarial":
            return self._adversarial_loss(phase, modules, x, rng, step)
        return self._progressive_loss(modules, x, rng, step)

    def _progressive_loss(self, modules, x, rng, step) -> torch.Tensor:
        """max(SNR_t, 1) ||x~ - x0_hat_student(z_t, t)||^2 (mean over dimensions) at a student grid time t drawn
        uniformly, z_t = alpha_t x + sigma_t eps; the round's grid and teacher (the first round's is
        distill.teacher, a later round's the student as the round before ended)."""
        r = self.round_at(step)
        n = self.round_steps[r]
        j = (rng.rand(x.shape[0]) * n).floor().long().clamp(max=n - 1)  # (B,) student step index
        ts, tt = (g.to(x.device) for g in self.grids[r])
        t, t_mid, s = ts[j], tt[2 * j + 1], ts[j + 1]
        student = self.student.denoiser(modules)
        a, sg = (append_dims(v, x) for v in alpha_sigma(student.schedule, t))
        z = a * x + sg * rng.randn(x.shape)
        teacher = self._teacher_den if r == 0 else self.student.denoiser(modules["teacher"])
        target = progressive_target(teacher, student.schedule, z, t, t_mid, s)
        w = truncated_snr_weight(student.schedule, t, x)
        return w * (student(z, t) - target).square().flatten(1).mean(1)

    def _consistency_loss(self, modules, x, rng) -> torch.Tensor:
        """d(f_theta(z_t, t), f_theta^-(z_s, s)) for adjacent grid times s < t (n uniform), z_t = alpha_t x +
        sigma_t eps and z_s one teacher ODE step down from z_t (`distillation.consistency_target`); d is
        pseudo-Huber (c = 0.00054 sqrt(dims), on the sum over dimensions) or the mean squared error."""
        d = self.cfg.distill
        student = self.denoiser(modules)
        grid = hi_precision(self._consistency_grid(student.schedule), x.device)  # ascending, t_min first
        n = (rng.rand(x.shape[0]) * d.grid_steps).floor().long().clamp(max=d.grid_steps - 1)
        t, s = grid[n + 1], grid[n]
        a, sg = (append_dims(v, x) for v in alpha_sigma(student.schedule, t))
        z = a * x + sg * rng.randn(x.shape)
        target = self._consistency_fn(self.student.denoiser(modules["target"]))
        y = consistency_target(self._teacher_den, target, student.schedule, z, t, s, d.solver)
        if d.distance == "l2":
            return (student(z, t) - y).square().flatten(1).mean(1)
        return pseudo_huber(student(z, t), y, pseudo_huber_c(math.prod(x.shape[1:])))

    def _adversarial_loss(self, phase, modules, x, rng, step) -> torch.Tensor:
        """DDGAN's loss (`ddgan.gan_loss`) on real pairs of the student's grid, the generator read through the
        teacher's prediction; the generator's also has teacher_weight ||x0' - teacher x0_hat(x_t, t)||^2."""
        gen = self.denoiser(modules)
        pairs = grid_step_pairs(gen.schedule, self.grid, x, rng.rand(x.shape[0]), rng.randn(x.shape), rng.randn(x.shape))
        w = self.cfg.distill.teacher_weight

        def toward_teacher(x_t, t, x0):
            with torch.no_grad():
                ref = self._teacher_den(x_t, t)
            return w * (x0 - ref).square().flatten(1).mean(1)

        return gan_loss(phase, self.cfg.gan, gen.schedule, lambda x_t, t, net_t, latent: gen(x_t, t, latent),
                        modules["disc"], pairs, rng, step, toward_teacher if w > 0 else None)


def _teacher_checkpoint(cfg, meta: dict | None, where: str):
    """(the teacher's checkpoint, its SHA-256), checked: a kind that can teach, the SHA-256 a saved student
    recorded (`meta`), the student's data."""
    from ..checkpoint import load_checkpoint
    from ..loading import check_recorded_sha256, checkpoint_sha256

    d = cfg.distill
    if not d.teacher:
        raise TrilemmaError("distill.teacher: name the run or checkpoint directory of the model to distill")
    _check_inherited_sections(cfg)
    _check_method_keys(d)
    ck = load_checkpoint(d.teacher)  # a path, or trilemma:NAME
    kind = ck.cfg.family if ck.cfg.family != "distill" else f"{ck.cfg.distill.method} student"
    if ck.cfg.family not in TEACHER_FAMILIES or kind in ("consistency student", "adversarial student"):
        raise TrilemmaError(f"distill.teacher: {ck.path} is a {kind} checkpoint; a teacher is a ddpm or vdm model, "
                            "or a progressive round")
    sha = checkpoint_sha256(ck)
    check_recorded_sha256(meta, "teacher", sha, where, ck.path, "teacher",
                          "point distill.teacher at the model this student was distilled from")
    # the same data: toy points exactly (n, seed and scale are the data), images up to where they are stored
    if not (ck.cfg.data == cfg.data or (cfg.data.name != "toy2d" and same_images(ck.cfg.data, cfg.data))):
        raise TrilemmaError(f"data: the teacher {ck.path} was trained on other data ({ck.cfg.data.name}); a "
                            "student learns on its teacher's data (copy the teacher's data section)")
    return ck, sha


def _check_method_keys(d) -> None:
    from ..config import DistillConfig

    default, mine = DistillConfig(), set(METHOD_KEYS.get(d.method, ()))
    for key in sorted({k for keys in METHOD_KEYS.values() for k in keys} - mine):
        if getattr(d, key) != getattr(default, key):
            raise TrilemmaError(f"distill.{key}: the {d.method} method does not use it; remove it (it belongs to "
                                f"{' and '.join(m for m, keys in METHOD_KEYS.items() if key in keys)})")


def _check_inherited_sections(cfg) -> None:
    """A student's model is its teacher's: a config that sets one of those sections would be silently ignored
    (an adversarial student's `gan` section is its own: the discriminator, latent and learning rates)."""
    from ..config import Config, to_dict

    mine, default = to_dict(cfg), to_dict(Config())
    for sec in FROM_TEACHER:
        if sec == "gan" and cfg.distill.method == "adversarial":
            continue
        if mine[sec] != default[sec]:
            if sec == "gan":
                raise TrilemmaError("gan: only an adversarial student (distill.method: adversarial) has a gan "
                                    "section; remove it")
            raise TrilemmaError(f"{sec}: a distill student takes its teacher's {sec}; remove the {sec} section")


def _load_teacher_weights(modules: nn.ModuleDict, teacher_state: dict) -> None:
    """The teacher's weights into the student's modules, which are the teacher's network (an adversarial student's
    generator is made from them afterwards)."""
    missing, unexpected = modules.load_state_dict(teacher_state, strict=False)
    if missing or unexpected:
        raise TrilemmaError(f"distill.teacher: its weights do not fit the student ({(missing or unexpected)[0]})")


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


__all__ = ["Distillation", "TEACHER_FAMILIES", "FROM_TEACHER", "MAX_GAN_STEPS"]
