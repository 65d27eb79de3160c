"""Samplers: a shared contract over every sampler, and closed-form Gaussian oracles.

For data x ~ N(m, s^2 I) the exact denoiser is linear, E[x | z_t] = m + a s^2 / (a^2 s^2 + sigma^2)
(z_t - a m), and the probability-flow ODE maps z_T to m + s (z_T - a_T m) / sqrt(a_T^2 s^2 + sigma_T^2)
exactly: so sampler errors and convergence orders can be measured against closed forms.
"""

import math

import numpy as np
import pytest
import torch
from torch import nn

from trilemma.denoiser import CountNFE, PredictionDenoiser
from trilemma.networks import MLP
from trilemma.samplers import (
    generate,
    sample_ancestral,
    sample_ddim,
    sample_ddim_inverse,
    sample_dpmpp_2m,
    sample_langevin,
    slerp,
)
from trilemma.schedules import Cosine, LinearBeta, Schedule, alpha_sigma, time_grid

M, S = 0.5, 0.3


class GaussianDenoiser(nn.Module):
    """The exact E[x | z_t] for x ~ N(M, S^2 I)."""

    def __init__(self, schedule):
        super().__init__()
        self.schedule = schedule

    def forward(self, z, t):
        a, s = alpha_sigma(self.schedule, torch.as_tensor(t, dtype=torch.float64))
        return (M + a * S**2 / (a**2 * S**2 + s**2) * (z.double() - a * M)).to(z.dtype)


def exact_ode_endpoint(schedule, z_T, t_max=1.0):
    a, s = alpha_sigma(schedule, torch.tensor(t_max, dtype=torch.float64))
    return M + S * (z_T.double() - a * M) / torch.sqrt(a**2 * S**2 + s**2)


# name -> sampler(denoiser, x_T, ts, generator, callback); the ids of test_sampler_contract
SAMPLERS = {
    "ancestral": lambda d, x, ts, g, cb=None: sample_ancestral(d, d.schedule, x, ts, generator=g, callback=cb),
    "ddim0": lambda d, x, ts, g, cb=None: sample_ddim(d, d.schedule, x, ts, eta=0.0, generator=g, callback=cb),
    "ddim1": lambda d, x, ts, g, cb=None: sample_ddim(d, d.schedule, x, ts, eta=1.0, generator=g, callback=cb),
    "dpmpp": lambda d, x, ts, g, cb=None: sample_dpmpp_2m(d, d.schedule, x, ts, generator=g, callback=cb),
    "langevin": lambda d, x, ts, g, cb=None: sample_langevin(d, d.schedule, x, ts, denoise=False, generator=g,
                                                             callback=cb),
    "langevin_denoise": lambda d, x, ts, g, cb=None: sample_langevin(d, d.schedule, x, ts, generator=g, callback=cb),
}
EXTRA_NFE = {"langevin_denoise": 1}  # network evaluations beyond one per step: Langevin's final denoising step
# samplers that draw noise on a grid of `steps` steps: ancestral and DDIM(eta = 1) only on the steps to s > 0
# (a one-step grid goes straight to t = 0), Langevin on every update
STOCHASTIC = {"ancestral": lambda steps: steps > 1, "ddim1": lambda steps: steps > 1,
              "langevin": lambda steps: True, "langevin_denoise": lambda steps: True}


@pytest.fixture
def mlp_denoiser():
    torch.manual_seed(0)
    return PredictionDenoiser(MLP(2, 32, 2), LinearBeta(1000), "eps").eval()


class Recording(nn.Module):
    """Logs every evaluation ("eval", t, z_t, x0_hat) of the denoiser it wraps into `log`."""

    def __init__(self, denoiser, log):
        super().__init__()
        self.denoiser, self.log = denoiser, log

    @property
    def schedule(self):
        return self.denoiser.schedule

    def forward(self, z, t):
        out = self.denoiser(z, t)
        self.log.append(("eval", t, z, out))
        return out


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("steps", [1, 5, 12])
def test_sampler_contract(mlp_denoiser, name, steps):
    """Shapes, finiteness, determinism under a seed, one NFE per step (Langevin: per update, plus its final
    denoising), the generator used exactly by the stochastic samplers, and the callback: called once right after
    each network evaluation with i = 0..NFE-1, that evaluation's t and x0_hat, and the current x, whose last value
    is the result."""
    sampler = SAMPLERS[name]
    ts = time_grid(mlp_denoiser.schedule, steps, "linspace")
    x_T = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    log = []
    den = CountNFE(Recording(mlp_denoiser, log))
    out1 = sampler(den, x_T.clone(), ts, torch.Generator().manual_seed(3), lambda info: log.append(("cb", info)))
    out2 = sampler(mlp_denoiser, x_T.clone(), ts, torch.Generator().manual_seed(3))
    assert out1.shape == x_T.shape and torch.isfinite(out1).all()
    assert torch.equal(out1, out2), "same seed, same samples (with or without a callback and an NFE counter)"
    nfe = steps + EXTRA_NFE.get(name, 0)
    assert den.nfe == nfe

    # the log alternates evaluation, callback: one callback per network evaluation, right after it
    assert [e[0] for e in log] == ["eval", "cb"] * nfe, [e[0] for e in log]
    for k, ((_, t, _, x0_hat), (_, info)) in enumerate(zip(log[::2], log[1::2])):
        assert info["i"] == k
        assert info["t"] == t, "the callback's t is the time the network was evaluated at"
        assert torch.equal(info["denoised"], x0_hat), "the callback's denoised is that evaluation's x0_hat"
        assert info["x"].shape == x_T.shape and torch.isfinite(info["x"]).all()
    assert torch.equal(log[-1][1]["x"], out1), "the last callback sees the result"
    assert log[0][1] == float(ts[0]), "the first evaluation is at t_N"

    out3 = sampler(mlp_denoiser, x_T.clone(), ts, torch.Generator().manual_seed(4))
    if STOCHASTIC.get(name, lambda steps: False)(steps):
        assert not torch.equal(out1, out3), "stochastic samplers depend on the generator"
    else:
        assert torch.equal(out1, out3), "deterministic samplers ignore the generator"


@pytest.mark.parametrize("schedule", [LinearBeta(1000), Cosine()], ids=["linear-beta", "cosine"])
def test_ode_samplers_converge_to_the_exact_flow_with_their_order(schedule):
    """DDIM(eta=0) is a first-order ODE solver, DPM-Solver++(2M) a second-order one (Lu et al. 2022):
    doubling the steps halves DDIM's error and cuts DPM-Solver++'s at least ~4x."""
    den = GaussianDenoiser(schedule)
    z_T = torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = exact_ode_endpoint(schedule, z_T)
    err = {}
    for steps in [80, 160]:
        ts = time_grid(schedule, steps, "linspace")
        err["ddim", steps] = (sample_ddim(den, schedule, z_T, ts) - exact).abs().max().item()
        err["dpmpp", steps] = (sample_dpmpp_2m(den, schedule, z_T, ts) - exact).abs().max().item()
    r_ddim = err["ddim", 80] / err["ddim", 160]
    r_dpm = err["dpmpp", 80] / err["dpmpp", 160]
    assert 1.7 < r_ddim < 2.3, f"DDIM error ratio {r_ddim:.2f} for doubled steps (first order: 2)"
    assert r_dpm > 3.2, f"DPM-Solver++ error ratio {r_dpm:.2f} for doubled steps (second order: 4)"
    assert err["dpmpp", 160] < 2e-3 and err["dpmpp", 80] < err["ddim", 80] / 5


@pytest.mark.parametrize("name", ["ancestral", "ddim1"])
def test_stochastic_samplers_hit_gaussian_moments(name):
    """With the exact denoiser and 1000 steps, ancestral sampling and DDIM(eta = 1) give N(M, S^2)."""
    s = LinearBeta(1000)
    den = GaussianDenoiser(s)
    x_T = torch.randn(20000, 2, generator=torch.Generator().manual_seed(1))
    out = SAMPLERS[name](den, x_T, time_grid(s, 1000), torch.Generator().manual_seed(2))
    n = out.numel()
    mean, std = out.mean().item(), out.std().item()
    assert abs(mean - M) < 4 * S / math.sqrt(n), f"mean {mean:.4f} vs {M}"
    assert abs(std - S) < 4 * S / math.sqrt(2 * n) + 2e-3, f"std {std:.4f} vs {S}"


def test_ddim_inversion_is_exact_with_fixed_point_iterations(mlp_denoiser):
    """DDIM inversion then DDIM(eta = 0) sampling on the same grid returns the input: exactly (to
    float tolerance) when each inverse step is solved by fixed-point iteration, and only
    approximately for the usual one-evaluation inversion."""
    s = mlp_denoiser.schedule
    ts = time_grid(s, 50, "leading")
    x0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(5)) * 0.5
    den = CountNFE(mlp_denoiser)
    z = sample_ddim_inverse(den, s, x0, ts, fixed_point_iters=20)
    assert den.nfe == 50 * 21
    back = sample_ddim(mlp_denoiser, s, z, ts)
    err_exact = (back - x0).abs().max().item()
    assert err_exact < 1e-4, f"fixed-point inversion round trip error {err_exact:.2e}"
    naive = sample_ddim(mlp_denoiser, s, sample_ddim_inverse(mlp_denoiser, s, x0, ts), ts)
    err_naive = (naive - x0).abs().max().item()
    assert err_exact < err_naive, "the fixed point improves on the one-evaluation inversion"


def test_inversion_of_gaussian_data_recovers_the_flow_noise():
    """With the exact denoiser, inversion maps x to the z_T the ODE started from, with a first-order
    error: doubling the steps halves it."""
    s = Cosine()
    den = GaussianDenoiser(s)
    z_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x = exact_ode_endpoint(s, z_T)
    err = [(sample_ddim_inverse(den, s, x, time_grid(s, n, "logsnr")) - z_T).abs().max().item() for n in (200, 400)]
    assert err[1] < 0.1 and 1.7 < err[0] / err[1] < 2.3, err


def test_slerp():
    a = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    b = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-5) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-5)
    mid = slerp(a, b, 0.5)
    # equal-norm endpoints keep their norm along the great circle
    an, bn = a / a.flatten(1).norm(dim=1)[:, None, None, None], b / b.flatten(1).norm(dim=1)[:, None, None, None]
    np.testing.assert_allclose(slerp(an, bn, 0.3).flatten(1).norm(dim=1).numpy(), 1.0, rtol=1e-5)
    assert mid.shape == a.shape


def test_generate_is_reproducible_and_takes_given_noise(mlp_denoiser):
    a = generate(mlp_denoiser, 8, (2,), sampler="ddim", steps=10, eta=1.0, seed=3)
    b = generate(mlp_denoiser, 8, (2,), sampler="ddim", steps=10, eta=1.0, seed=3)
    c = generate(mlp_denoiser, 8, (2,), sampler="ddim", steps=10, eta=1.0, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    noise = torch.randn(8, 2, generator=torch.Generator().manual_seed(3))
    d = generate(mlp_denoiser, 8, (2,), sampler="ddim", steps=10, eta=0.0, seed=0, noise=noise)
    e = sample_ddim(mlp_denoiser, mlp_denoiser.schedule, noise, time_grid(mlp_denoiser.schedule, 10))
    assert torch.equal(d, e)


class LearnedGamma(Schedule):
    """A schedule with a trainable parameter, the way VDM's learned gamma has one."""

    def __init__(self):
        super().__init__()
        self.gamma_max = nn.Parameter(torch.tensor(5.0))

    def gamma(self, t):
        return -10.0 + (self.gamma_max.double() + 10.0) * torch.as_tensor(t).double()


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_denoiser_float_time_matches_tensor_time(prediction):
    """Samplers pass a Python float t (levels cached); a (B,) tensor t recomputes everything: the two agree."""
    torch.manual_seed(0)
    den = PredictionDenoiser(MLP(2, 32, 2), LinearBeta(1000), prediction).eval()
    z = torch.randn(8, 2)
    with torch.no_grad():
        for t in (1.0, 0.5, 0.013, 0.5):  # 0.5 twice: the second call reads the cache
            cached = den(z, t)
            fresh = den(z, torch.full((8,), t, dtype=torch.float64))
            torch.testing.assert_close(cached, fresh, rtol=1e-6, atol=1e-6)
    assert den.level_cache_size == 3


def test_denoiser_level_cache_follows_a_learned_schedule():
    """Changing a learned schedule's parameter (an optimizer step) must not leave stale levels behind,
    and with gradients on, alpha and sigma stay differentiable in the schedule's parameters."""
    torch.manual_seed(0)
    den = PredictionDenoiser(MLP(2, 32, 2), LearnedGamma(), "eps").eval()
    z = torch.randn(8, 2)
    with torch.no_grad():
        before = den(z, 0.7)
        den.schedule.gamma_max.add_(2.0)  # in place, as an optimizer step does
        after = den(z, 0.7)
        fresh = den(z, torch.full((8,), 0.7, dtype=torch.float64))
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, fresh, rtol=1e-6, atol=1e-6)
    den(z, 0.7).sum().backward()
    assert den.schedule.gamma_max.grad is not None and den.schedule.gamma_max.grad.abs() > 0
