"""distill.method consistency and adversarial: the consistency function and its target against closed forms on
Gaussian data, a generator that starts as its teacher, exact resume, the pinned teacher, the target network's EMA,
NFE through `trilemma sample`, one-line refusals of bad configs, and where each loss's gradient goes."""

import copy

import numpy as np

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from helpers import TOY, TOY_GAN, assert_one_line_error, run, write_config
from test_distill import TEACHER, _files, assert_resume_is_exact, student_config, teacher  # noqa: F401 (a fixture)
from test_distillation import GaussianDenoiser
from trilemma.checkpoint import load_checkpoint
from trilemma.config import ModelConfig, load_config
from trilemma.data import load_dataset
from trilemma.denoiser import PredictionDenoiser, append_dims, batch_times
from trilemma.distillation import (ConsistencyDenoiser, consistency_grid, consistency_scalings, consistency_target,
                                   ode_step, pseudo_huber, pseudo_huber_c)
from trilemma.errors import TrilemmaError
from trilemma.families import build_family
from trilemma.loading import denoiser_from_checkpoint
from trilemma.networks import MLP, build_backbone, latent_generator
from trilemma.schedules import Cosine, LinearBeta, alpha_sigma
from trilemma.training import ShardedRNG, frozen, train

GAN = dict(TOY_GAN["gan"])  # a small 2-D discriminator and latent: the adversarial student's own gan section


def method_config(teacher, method: str, student_steps: int = 2, distill: dict | None = None, **train_cfg) -> dict:
    """`student_config` for a consistency or adversarial student: a short consistency grid and the consistency
    sampler, or the gan section and the ddpm sampler on the student's T steps."""
    cfg = student_config(teacher, student_steps, **train_cfg)
    cfg["distill"] = {**cfg["distill"], "method": method, **(distill or {})}
    if method == "consistency":  # it reads no student_steps (a set one is refused)
        cfg["distill"].pop("student_steps")
        cfg["distill"].setdefault("grid_steps", 8)
        cfg["sample"] = {"sampler": "consistency", "steps": 2, "n": 64}
    elif method == "adversarial":
        cfg["gan"] = dict(GAN)
        cfg["sample"] = {"sampler": "ddpm", "steps": student_steps, "spacing": "trailing", "n": 64}
    return cfg


def build(tmp_path, cfg: dict, name: str = "s.yaml"):
    return build_family(load_config(write_config(tmp_path / name, cfg)), (2,))


@pytest.fixture(scope="module")
def eps_teacher(tmp_path_factory):
    d = tmp_path_factory.mktemp("eps-teacher")
    train(load_config(write_config(d / "t.yaml", TOY)), d / "run", progress=False)
    return d / "run"


@pytest.fixture(scope="module")
def students(teacher, tmp_path_factory):
    """A consistency student and an adversarial one of T = 4 steps, each trained for 2 steps."""
    d, out = tmp_path_factory.mktemp("students"), {}
    for method, steps in (("consistency", 2), ("adversarial", 4)):
        cfg = write_config(d / f"{method}.yaml", method_config(teacher, method, steps, steps=2))
        train(load_config(cfg), d / method, progress=False)
        out[method] = d / method
    return out


# --- the consistency function and its target ------------------------------------------------------------------


def _random_consistency(schedule, segments: int = 10, prediction: str = "eps", seed: int = 0):
    torch.manual_seed(seed)
    inner = PredictionDenoiser(MLP(2, 16, 2), schedule, prediction).eval()
    grid = consistency_grid(schedule, segments)
    return ConsistencyDenoiser(inner, grid[0].item(), sigma_data=0.5, scaling=10.0), inner, grid


@pytest.mark.parametrize("schedule", [LinearBeta(1000), Cosine()], ids=["linear-beta", "cosine"])
def test_consistency_grid_runs_from_t_min_to_one(schedule):
    grid = consistency_grid(schedule, 10)
    assert grid.dtype == torch.float64 and len(grid) == 11 and grid[-1] == 1.0
    assert grid[0] > 0 and (grid.diff() > 0).all(), grid
    gamma = schedule(grid).double()  # uniform in log SNR, up to the training grid's rounding
    steps = gamma.diff()
    assert (steps > 0).all() and steps.max() < 2 * steps.min() + 0.1, steps


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("schedule", [LinearBeta(1000), Cosine()], ids=["linear-beta", "cosine"])
def test_the_consistency_function_is_the_identity_at_t_min_and_its_network_far_from_it(schedule, prediction):
    """f(z, t_min) = z exactly (the boundary condition, by construction: an untrained network cannot break it);
    c_skip is exactly 1 at tau = 0 and falls with tau while c_out rises (c_out^2 + c_skip = 1); and at large t,
    f is its x0 network within c_skip |z| + (1 - c_out) |x0_hat|."""
    f, inner, grid = _random_consistency(schedule, prediction=prediction)
    z = 3 * torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for t in (grid[0].item(), grid[:1].expand(64)):  # a float time and a (B,) tensor of them
            out = f(z, t)
            assert out.dtype == z.dtype and torch.equal(out, z), (out - z).abs().max()
        assert torch.equal(f(z, torch.full((64,), grid[0].item() / 2, dtype=torch.float64)), z), "below t_min too"

    tau = torch.linspace(0, 50, 101, dtype=torch.float64)
    c_skip, c_out = consistency_scalings(tau, 0.5, 10.0)
    assert c_skip[0] == 1.0 and c_out[0] == 0.0
    assert (c_skip.diff() < 0).all() and (c_out.diff() > 0).all()
    torch.testing.assert_close(c_out.square() + c_skip, torch.ones_like(tau), rtol=0, atol=1e-12)

    with torch.no_grad():
        for t in (grid[-2].item(), 1.0):
            tt = batch_times(t, z)
            tau_t = (inner.net_time(tt) - inner.net_time(batch_times(grid[0].item(), z))).double()
            c_skip, c_out = (append_dims(c, z) for c in consistency_scalings(tau_t, 0.5, 10.0))
            x0 = inner(z, t)
            assert (c_skip < 1e-4).all() and (1 - c_out < 1e-4).all(), (t, c_skip.max(), c_out.min())
            bound = c_skip * z.abs() + (1 - c_out) * x0.abs() + 1e-5
            err = (f(z, t) - x0).abs()
            assert (err <= bound).all(), f"t = {t}: |f - x0_hat| {err.max():.2e} over its bound {bound.max():.2e}"


class GaussianConsistency(nn.Module):
    """The exact consistency function of x ~ N(mean, diag(std^2)): along the probability-flow ODE the
    standardized value (z_t - alpha_t mean) / sqrt(alpha_t^2 v + sigma_t^2) is constant, so the trajectory's point
    at t_min is alpha_m mean + sqrt(alpha_m^2 v + sigma_m^2) times it."""

    def __init__(self, schedule, t_min: float, mean, std):
        super().__init__()
        self.schedule, self.t_min, self.mean, self.var = schedule, t_min, mean, std**2

    def forward(self, z, t):
        z = z.double()
        a, s = (append_dims(v, z) for v in alpha_sigma(self.schedule, batch_times(t, z)))
        a_m, s_m = alpha_sigma(self.schedule, torch.tensor(self.t_min, dtype=torch.float64))
        u = (z - a * self.mean) / (a**2 * self.var + s**2).sqrt()
        return a_m * self.mean + (a_m**2 * self.var + s_m**2).sqrt() * u


@pytest.mark.parametrize("schedule", [LinearBeta(1000), Cosine()], ids=["linear-beta", "cosine"])
def test_the_consistency_target_with_exact_models_is_exact_up_to_one_ddim_step(schedule):
    """With the exact denoiser of Gaussian data as teacher and the exact consistency function as target network,
    consistency_target(z_t, t, s) = f*(DDIM(z_t; t -> s), s) differs from f*(z_t, t) only by one DDIM step's
    error: second order in the step (local error ~ h^2 in log SNR), so an 8 times finer grid gives an error over
    25 times smaller (h^2: 64 times), and under 1e-2 on 128 segments for data of scale 1.3. On the first segment (s = t_min) the target is the DDIM step itself."""
    mean, std = torch.tensor([0.7, -0.4], dtype=torch.float64), torch.tensor([1.3, 0.5], dtype=torch.float64)
    teacher = GaussianDenoiser(schedule, mean, std)

    def worst(segments: int, per_segment: int = 64) -> float:
        """The largest error over `per_segment` points z_t ~ q(z_t) at the top of every segment (per-sample times)."""
        grid = consistency_grid(schedule, segments)
        exact = GaussianConsistency(schedule, grid[0].item(), mean, std)
        n = torch.arange(segments).repeat_interleave(per_segment)  # (B,) segment of each sample
        t, s = grid[n + 1], grid[n]
        gen = torch.Generator().manual_seed(segments)
        x, eps = (torch.randn(len(n), 2, generator=gen, dtype=torch.float64) for _ in range(2))
        a, sg = (v[:, None] for v in alpha_sigma(schedule, t))
        z_t = a * (mean + std * x) + sg * eps
        return (consistency_target(teacher, exact, schedule, z_t, t, s) - exact(z_t, t)).abs().max().item()

    coarse, fine = worst(16), worst(128)
    assert fine < coarse / 25 and fine < 1e-2, f"error {coarse:.2e} on 16 segments, {fine:.2e} on 128"

    f, _, grid = _random_consistency(schedule)  # any target network: at t_min it is the identity
    z_t = torch.randn(16, 2, generator=torch.Generator().manual_seed(5))
    t, s = grid[1].item(), grid[0].item()
    (a_t, s_t), (a_s, s_s) = (alpha_sigma(schedule, torch.tensor(u, dtype=torch.float64)) for u in (t, s))
    ddim = (s_s / s_t) * z_t.double() + (a_s - (s_s / s_t) * a_t) * teacher(z_t.double(), t)
    with torch.no_grad():
        y = consistency_target(teacher, f, schedule, z_t, t, s)
    assert y.dtype == z_t.dtype and torch.allclose(y.double(), ddim, atol=1e-6)


@pytest.mark.parametrize("schedule", [LinearBeta(1000), Cosine()], ids=["linear-beta", "cosine"])
def test_the_heun_step_is_a_higher_order_ode_step_than_ddim(schedule):
    """ode_step with the exact Gaussian denoiser against the exact probability-flow map (the standardised
    (z - alpha mu) / sqrt(alpha^2 v + sigma^2) is kept along the ODE): Heun's error is far below DDIM's on the same
    segments and falls faster as the grid is refined (third order locally against second). Measured (linear-beta):
    DDIM 0.117 / 0.0098 on 16 / 64 segments, Heun 0.044 / 0.00059 (cosine: 0.435 / 0.0205, 0.188 / 0.0027)."""
    mean, std = torch.tensor([0.7, -0.4], dtype=torch.float64), torch.tensor([1.3, 0.5], dtype=torch.float64)
    teacher = GaussianDenoiser(schedule, mean, std)

    def worst(segments: int, solver: str) -> float:
        grid = consistency_grid(schedule, segments)
        n = torch.arange(segments).repeat_interleave(32)
        t, s = grid[n + 1], grid[n]
        gen = torch.Generator().manual_seed(segments)
        x, eps = (torch.randn(len(n), 2, generator=gen, dtype=torch.float64) for _ in range(2))
        (a_t, s_t), (a_s, s_s) = ((v[:, None] for v in alpha_sigma(schedule, u)) for u in (t, s))
        z_t = a_t * (mean + std * x) + s_t * eps
        exact = a_s * mean + (z_t - a_t * mean) * ((a_s**2 * std**2 + s_s**2) / (a_t**2 * std**2 + s_t**2)).sqrt()
        return (ode_step(teacher, schedule, z_t, t, s, solver) - exact).abs().max().item()

    ddim, heun = {n: worst(n, "ddim") for n in (16, 64)}, {n: worst(n, "heun") for n in (16, 64)}
    # 4x finer: DDIM's error falls about 16x (h^2), Heun's about 64x (h^3)
    assert heun[16] < ddim[16] / 2 and heun[64] < ddim[64] / 5, (ddim, heun)
    assert heun[64] < heun[16] / 40 and ddim[64] > ddim[16] / 30, (ddim, heun)


def test_pseudo_huber_is_l2_for_large_errors_and_quadratic_for_small_ones():
    a = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    b = torch.zeros_like(a)
    norm = a.norm(dim=1)
    assert torch.allclose(pseudo_huber(a, b, 0.0), norm, rtol=1e-6)
    c = 1e3  # |a - b| << c: sqrt(d^2 + c^2) - c = d^2 / (2c) (1 - O(d^2 / c^2))
    assert torch.allclose(pseudo_huber(a.double(), b.double(), c), norm.double().square() / (2 * c), rtol=1e-4)
    assert pseudo_huber_c(3 * 32 * 32) == pytest.approx(0.00054 * (3 * 32 * 32) ** 0.5)
    assert (pseudo_huber(a, a, 0.01) == 0).all()


# --- the adversarial student starts as its teacher -------------------------------------------------------------


LATENTS = [torch.zeros(16, 4), torch.randn(16, 4, generator=torch.Generator().manual_seed(1)),
           10 * torch.randn(16, 4, generator=torch.Generator().manual_seed(2))]


@pytest.mark.parametrize("which, read_as, fourier", [("teacher", "", 0), ("eps_teacher", "", 0), ("eps_teacher", "v", 0),
                                                     ("eps_teacher", "v", 3)],
                         ids=["v-teacher", "eps-teacher", "eps-teacher-read-as-v", "read-as-v-with-fourier-input"])
def test_the_adversarial_generator_starts_as_its_teacher_for_every_latent(request, tmp_path, which, read_as, fourier):
    """At step 0, G(z_t, t, latent) = the teacher's x0_hat(z_t, t) (to 1e-6) for any latent: the latent path's last
    layer is zero. With distill.prediction v on an eps teacher, its output is the teacher network's read as v,
    alpha z - sigma net(z, t). The path is live: once its last layer is non-zero, the latent changes G. With
    gan.g_fourier the input layer's Fourier columns start at zero (G is still the teacher) and are live too."""
    path = request.getfixturevalue(which)
    cfg = method_config(path, "adversarial", 4, {"prediction": read_as} if read_as else None)
    if fourier:
        cfg["gan"] = {**cfg["gan"], "g_fourier": fourier, "g_fourier_period": 8.0}
    family = build(tmp_path, cfg)
    gen = family.denoiser(family.modules)
    teacher = denoiser_from_checkpoint(load_checkpoint(path))
    z = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    t = torch.linspace(0.05, 1.0, 16, dtype=torch.float64)
    with torch.no_grad():
        if read_as == "v":
            a, s = (v.float()[:, None] for v in alpha_sigma(teacher.schedule, t))
            want = a * z - s * teacher.net(z, teacher.net_time(t))
        else:
            want = teacher(z, t)
        outs = [gen(z, t, latent) for latent in LATENTS]
        for out in outs:
            torch.testing.assert_close(out, want, rtol=0, atol=1e-6)
        assert torch.equal(gen(z, 0.5, LATENTS[1]), gen(z, torch.full((16,), 0.5, dtype=torch.float64), LATENTS[1]))
        assert family.modules["net"].mapping[-1].weight.abs().max() == 0
        if fourier:
            inp = family.modules["net"].inp
            assert inp.in_features == 2 * (1 + 2 * fourier) and inp.weight[:, 2:].abs().max() == 0
            nn.init.normal_(inp.weight[:, 2:], std=0.1)
            assert not torch.allclose(gen(z, t, LATENTS[0]), outs[0], atol=1e-3)
        nn.init.normal_(family.modules["net"].mapping[-1].weight)
        assert not torch.allclose(gen(z, t, LATENTS[1]), gen(z, t, LATENTS[2]), atol=1e-3)


def test_generator_fourier_bands_are_refused_where_they_do_not_apply(eps_teacher, tmp_path):
    """gan.g_fourier is for a distilled 2-D generator: a UNet backbone and a ddgan config (whose generator has
    model.fourier) are refused with one line naming the key."""
    net = build_backbone(ModelConfig(channels=[16, 32], attention=[False, True], norm_groups=8), (1, 16, 16))
    with pytest.raises(TrilemmaError, match=r"^gan\.g_fourier: .*UNet backbone$"):
        latent_generator(net, 8, 2, fourier=3)
    ddgan = {**TOY_GAN, "gan": {**TOY_GAN.get("gan", {}), "g_fourier": 3}}
    with pytest.raises(TrilemmaError, match=r"^gan\.g_fourier .*model\.fourier$"):
        build(tmp_path, ddgan, "ddgan.yaml")


def test_a_unet_latent_generator_is_its_backbone_until_trained():
    """networks.latent_generator on a small image UNet: the same output as the backbone (to 1e-6) for every
    latent at step 0, and a latent that matters once the mapping's last layer is non-zero."""
    cfg = ModelConfig(channels=[16, 32], attention=[False, True], norm_groups=8)
    torch.manual_seed(0)
    net = build_backbone(cfg, (1, 16, 16)).eval()
    original = copy.deepcopy(net)
    gen = latent_generator(net, 8, 2).eval()
    x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    ts = torch.tensor([10.0, 500.0, 999.0])
    latents = [torch.zeros(3, 8), torch.randn(3, 8, generator=torch.Generator().manual_seed(1)),
               5 * torch.randn(3, 8, generator=torch.Generator().manual_seed(2))]
    with torch.no_grad():
        want = original(x, ts)
        for latent in latents:
            torch.testing.assert_close(gen(x, ts, latent), want, rtol=0, atol=1e-6)
        nn.init.normal_(gen.mapping[-1].weight, std=0.1)
        assert not torch.allclose(gen(x, ts, latents[1]), gen(x, ts, latents[2]), atol=1e-4)


# --- training: exact resume, the pinned teacher, the target network -------------------------------------------


@pytest.mark.parametrize("method", ["consistency", "adversarial"])
def test_resume_equals_an_uninterrupted_run(teacher, tmp_path, method):
    """As test_distill's progressive round: 6 steps straight = 3, then --resume to 6, bit for bit, in the weights
    (model.safetensors: the EMA) and the training state (train.safetensors: every module, the consistency target
    network and the discriminator included, the optimizers and the RNGs)."""
    assert_resume_is_exact(write_config(tmp_path / "s.yaml", method_config(teacher, method, 2, steps=6)), tmp_path)
    state = load_file(str(tmp_path / "straight" / "checkpoint" / "train.safetensors"))
    own = "modules.target." if method == "consistency" else "modules.disc."
    assert any(k.startswith(own) for k in state), f"the training state keeps {own}"


@pytest.mark.parametrize("method", ["consistency", "adversarial"])
def test_a_changed_teacher_is_refused_in_one_line_and_nothing_changes(teacher, tmp_path, method):
    """As test_distill's progressive case: a student whose teacher was trained on since is refused by sample,
    train --resume and the loader, in one line, and the refused commands write nothing."""
    import shutil

    mine = tmp_path / "teacher"
    shutil.copytree(teacher, mine)
    student = tmp_path / "student"
    cfg_path = write_config(tmp_path / "s.yaml", method_config(mine, method, 2, steps=2))
    assert run("train", cfg_path, "--out", student, "--quiet").exit_code == 0
    assert run("train", write_config(tmp_path / "t.yaml", TEACHER, train={"steps": 22}), "--out", mine, "--resume",
               "--quiet").exit_code == 0
    before = _files(tmp_path)
    sampler = ["--sampler", "consistency"] if method == "consistency" else ["--sampler", "ddpm", "--spacing", "trailing"]
    for args in (["sample", student, *sampler, "--steps", "2", "--out", tmp_path / "x.npz"],
                 ["train", write_config(tmp_path / "s4.yaml", method_config(mine, method, 2, steps=4)), "--out",
                  student, "--resume"]):
        assert_one_line_error(run(*args, "--quiet"), "teacher", "retrained or replaced")
    with pytest.raises(TrilemmaError, match="retrained or replaced"):
        denoiser_from_checkpoint(load_checkpoint(student))
    after = _files(tmp_path)
    assert after == {**before, tmp_path / "s4.yaml": after[tmp_path / "s4.yaml"]}, "the refused commands wrote nothing"


@pytest.mark.parametrize("ema", [0.0, 0.5])
def test_the_target_network_follows_the_student_after_each_step(teacher, tmp_path, ema):
    """Family.after_step, called by the training loop after the optimizer step: theta^- <- mu theta^- + (1 - mu)
    theta. After one step from the teacher's weights (where student and target both start), the saved target is
    the student (mu = 0, exactly) or the midpoint of the teacher and the student (mu = 0.5); and called directly,
    it moves every target parameter to the midpoint of its old value and the student's."""
    cfg = method_config(teacher, "consistency", distill={"target_ema": ema}, steps=1)
    train(load_config(write_config(tmp_path / "s.yaml", cfg)), tmp_path / "run", progress=False)
    state = load_file(str(tmp_path / "run" / "checkpoint" / "train.safetensors"))
    start = load_file(str(teacher / "checkpoint" / "model.safetensors"))  # the teacher's EMA weights
    names = [k[len("modules.target."):] for k in state if k.startswith("modules.target.")]
    assert names and set(names) == {k[len("modules."):] for k in state if k.startswith("modules.")
                                    and not k.startswith("modules.target.")}
    for k in names:
        student, target = state[f"modules.{k}"], state[f"modules.target.{k}"]
        assert not torch.equal(student, start[k]) or k.startswith("schedule"), f"{k}: the step moved the student"
        if ema == 0:
            assert torch.equal(target, student), k
        else:
            torch.testing.assert_close(target, (start[k] + student) / 2, rtol=1e-6, atol=1e-7, msg=k)

    family = build(tmp_path, cfg)
    target = family.modules["target"]
    with torch.no_grad():
        for p in family.modules["net"].parameters():
            p.add_(torch.randn_like(p))
    old = [p.clone() for p in target.parameters()]
    family.after_step(family.modules, 0)
    for o, p_t, p in zip(old, target.parameters(), family.modules["net"].parameters()):
        if ema == 0:
            assert torch.equal(p_t, p)
        else:
            torch.testing.assert_close(p_t, (o + p) / 2, rtol=1e-6, atol=1e-7)
        assert not p_t.requires_grad


# --- sampling ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 4])
def test_a_consistency_student_samples_in_k_evaluations(students, tmp_path, k):
    res = run("sample", students["consistency"], "--sampler", "consistency", "--steps", k, "-n", "16", "--quiet",
              "--out", tmp_path / "s.npz")
    assert res.exit_code == 0 and f"{k} NFE per sample" in res.output, res.output


def test_an_adversarial_student_samples_its_t_steps_and_refuses_langevin(students, teacher, tmp_path):
    """ddpm (ancestral) on the trailing grid of T = 4: 4 NFE; langevin needs a score, which a generator's draws
    are not: refused in one line by `sample` and, as sample.sampler, by the config."""
    res = run("sample", students["adversarial"], "--sampler", "ddpm", "--steps", "4", "--spacing", "trailing",
              "-n", "16", "--quiet", "--out", tmp_path / "s.npz")
    assert res.exit_code == 0 and "4 NFE per sample" in res.output, res.output
    res = run("sample", students["adversarial"], "--sampler", "langevin", "--steps", "4", "-n", "16", "--quiet",
              "--out", tmp_path / "l.npz")
    assert_one_line_error(res, "sampler langevin needs the score")
    assert not (tmp_path / "l.npz").exists()
    cfg = method_config(teacher, "adversarial", 4)
    cfg["sample"] = {**cfg["sample"], "sampler": "langevin"}
    res = run("train", write_config(tmp_path / "s.yaml", cfg), "--out", tmp_path / "o", "--quiet")
    assert_one_line_error(res, "sample.sampler langevin needs the score")
    assert not (tmp_path / "o").exists()


# --- bad configs -----------------------------------------------------------------------------------------------


def test_an_adversarial_student_takes_at_most_8_steps(teacher, tmp_path):
    res = run("train", write_config(tmp_path / "s.yaml", method_config(teacher, "adversarial", 9)), "--out",
              tmp_path / "o", "--quiet")
    assert_one_line_error(res, "distill.student_steps: an adversarial student takes T <= 8 steps, got 9")
    assert not (tmp_path / "o").exists()
    family = build(tmp_path, method_config(teacher, "adversarial", 8), "s8.yaml")
    assert len(family.grid) == 9 and family.grid[0] == 0 and family.grid[-1] == 1 and (family.grid.diff() > 0).all()


@pytest.mark.parametrize("teacher_method, method", [("consistency", "consistency"), ("consistency", "progressive"),
                                                    ("adversarial", "adversarial"), ("adversarial", "consistency")])
def test_only_a_progressive_round_teaches_among_students(students, tmp_path, teacher_method, method):
    res = run("train", write_config(tmp_path / "s.yaml", method_config(students[teacher_method], method)), "--out",
              tmp_path / "o", "--quiet")
    assert_one_line_error(res, f"is a {teacher_method} student checkpoint; a teacher is a ddpm or vdm model, or a progressive round")
    assert not (tmp_path / "o").exists()


def test_a_progressive_round_teaches_consistency_and_adversarial_students(teacher, tmp_path):
    train(load_config(write_config(tmp_path / "r.yaml", student_config(teacher, 2, steps=1))), tmp_path / "round",
          progress=False)
    for method in ("consistency", "adversarial"):
        family = build(tmp_path, method_config(tmp_path / "round", method), f"{method}.yaml")
        assert family.method == method


@pytest.mark.parametrize("method", ["progressive", "consistency"])
def test_a_gan_section_is_refused_but_for_an_adversarial_student(teacher, tmp_path, method):
    cfg = method_config(teacher, method)
    cfg["gan"] = dict(GAN)
    res = run("train", write_config(tmp_path / "s.yaml", cfg), "--out", tmp_path / "o", "--quiet")
    assert_one_line_error(res, "gan: only an adversarial student (distill.method: adversarial) has a gan section")
    assert not (tmp_path / "o").exists()
    family = build(tmp_path, method_config(teacher, "adversarial"), "a.yaml")  # its own: the discriminator's size
    assert family.modules["disc"].inp.out_features == GAN["d_hidden"] and len(family.modules["disc"].blocks) == 2
    assert family.cfg.gan.latent_dim == family.denoiser(family.modules).latent_dim == GAN["latent_dim"]


# --- where the gradient goes ----------------------------------------------------------------------------------


def _grads(module: nn.Module) -> list:
    return [p.grad for p in module.parameters()]


@pytest.mark.parametrize("method, phase", [("progressive", "model"), ("consistency", "model"),
                                           ("adversarial", "disc"), ("adversarial", "gen")])
def test_each_loss_is_finite_and_trains_the_student_only(teacher, tmp_path, method, phase):
    """One phase's per-sample loss (B,) is finite; backpropagated (the other phases' modules frozen, as the training
    loop does), it reaches every parameter of the phase's modules and none of the teacher's or the target network's.
    The adversarial generator's gradient reaches the last layer of its zero-initialised latent path (so the latent
    starts to matter), and its discriminator phase does not reach the generator."""
    cfg = method_config(teacher, method, distill={"teacher_weight": 0.5} if method == "adversarial" else None)
    family = build(tmp_path, cfg)
    x = load_dataset(family.cfg.data, "train").x[:32]
    mine = family.phases[phase]
    others = [family.modules[n] for n in family.modules if n not in mine]
    with frozen(others):
        loss = family.loss(phase, family.modules, x, ShardedRNG(1), 0)
        assert loss.shape == (32,) and torch.isfinite(loss).all(), loss
        loss.mean().backward()
    for name in mine:
        grads = _grads(family.modules[name])
        assert all(g is not None for g in grads), f"{name}: a parameter without a gradient"
        assert sum(g.abs().sum() for g in grads) > 0
    for name in family.modules:
        if name not in mine:
            assert all(g is None for g in _grads(family.modules[name])), f"{name} got a gradient in phase {phase}"
    assert all(g is None for g in _grads(family.teacher.modules)), "the teacher got a gradient"
    if method == "adversarial" and phase == "gen":
        assert family.modules["net"].mapping[-1].weight.grad.abs().max() > 0


def test_the_teacher_term_is_zero_at_step_0_and_linear_in_its_weight(teacher, tmp_path):
    """distill.teacher_weight w adds w ||x0' - teacher x0_hat||^2 to the generator's loss: with the same draws, the
    loss with w minus the loss without is 0 while G is its teacher (step 0), and once G has moved it is positive
    and doubles with w."""
    family = build(tmp_path, method_config(teacher, "adversarial"))
    x = load_dataset(family.cfg.data, "train").x[:32]

    def extra(w: float) -> torch.Tensor:
        with torch.no_grad():
            family.cfg.distill.teacher_weight = w
            with_w = family.loss("gen", family.modules, x, ShardedRNG(1), 0)
            family.cfg.distill.teacher_weight = 0.0
            return with_w - family.loss("gen", family.modules, x, ShardedRNG(1), 0)

    assert extra(0.5).abs().max() < 1e-6, "G is its teacher at step 0"
    nn.init.normal_(family.modules["net"].mapping[-1].weight, std=3.0)
    once, twice = extra(0.5), extra(1.0)
    assert (once > 0).all() and torch.allclose(twice, 2 * once, rtol=1e-3, atol=1e-5), (once, twice)


@pytest.mark.parametrize("method, key, value", [("consistency", "student_steps", 4), ("progressive", "grid_steps", 8),
                                                ("adversarial", "solver", "heun"), ("progressive", "teacher_weight", 1.0)])
def test_a_key_the_method_does_not_read_is_refused(teacher, tmp_path, method, key, value):
    cfg = method_config(teacher, method)
    cfg["distill"][key] = value
    res = run("train", write_config(tmp_path / "s.yaml", cfg), "--out", tmp_path / "o", "--quiet")
    assert_one_line_error(res, f"distill.{key}: the {method} method does not use it")
    assert not (tmp_path / "o").exists()


def test_an_unknown_shipped_teacher_lists_the_shipped_ones(teacher, tmp_path):
    cfg = method_config(teacher, "consistency")
    cfg["distill"]["teacher"] = "trilemma:no-such-model"
    res = run("train", write_config(tmp_path / "s.yaml", cfg), "--out", tmp_path / "o", "--quiet")
    assert_one_line_error(res, "trilemma:no-such-model: no such shipped checkpoint", "trilemma:toy2d-ddpm")


def test_a_student_samples_on_its_trailing_grid_by_default(students, tmp_path):
    """Without --spacing a student samples on the trailing grid it was trained on (an adversarial student of T = 4
    on t = 1, 0.75, 0.5, 0.25), not the ddpm sampler's leading grid; the bench's rows default alike."""
    from trilemma.bench import expand_rows
    from trilemma.bench.grid import config_from_dict

    res = run("sample", students["adversarial"], "--sampler", "ddpm", "--steps", "4", "-n", "8", "--quiet",
              "--out", tmp_path / "s.npz")
    assert res.exit_code == 0, res.output
    assert str(np.load(tmp_path / "s.npz")["spacing"]) == "trailing"
    rows = expand_rows(config_from_dict({"rows": [{"checkpoint": str(students["adversarial"]), "sampler": "ddpm",
                                                   "steps": 4}]}, "grid"))
    assert [r.spacing for r in rows] == ["trailing"]


def test_the_teacher_pin_reads_config_json_as_stored(teacher):
    """The teacher's SHA-256 covers its config.json as written, not the config the library builds from it: a key
    added to the library later (with its default) must not make every saved student refuse its teacher."""
    from trilemma.loading import checkpoint_sha256

    ck = load_checkpoint(teacher)
    before = checkpoint_sha256(ck)
    ck.cfg.distill.solver = "heun"  # what a newer library's default could look like in the loaded dataclass
    assert checkpoint_sha256(ck) == before
    ck.meta["config"]["model"]["hidden"] += 1  # the stored config itself: a different teacher
    assert checkpoint_sha256(ck) != before
