"""Schedules: closed forms, diffusers' tables and timestep grids, the posterior."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from trilemma.errors import TrilemmaError
from trilemma.schedules import (
    VPSDE,
    Cosine,
    LinearBeta,
    LinearGamma,
    ScheduleConfig,
    alpha_sigma,
    build_schedule,
    posterior,
    time_grid,
)

ALL = [LinearBeta(), Cosine(), VPSDE(), LinearGamma()]


def test_linear_beta_equals_diffusers_table():
    ab = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear").alphas_cumprod.double()
    s = LinearBeta(1000)
    t = (torch.arange(1000, dtype=torch.float64) + 1) / 1000  # diffusers' k is our t = (k + 1) / T
    a, _ = alpha_sigma(s, t)
    np.testing.assert_allclose(a.square().numpy(), ab.numpy(), rtol=1e-12)
    # and the closed form prod(1 - beta_j) in float64 agrees to float32 precision
    betas = np.linspace(1e-4, 0.02, 1000)
    np.testing.assert_allclose(a.square().numpy(), np.cumprod(1 - betas), rtol=1e-5)


@pytest.mark.parametrize("s", ALL, ids=lambda s: type(s).__name__)
def test_gamma_increasing_and_variance_preserving(s):
    t = torch.linspace(1e-3, 1, 2001, dtype=torch.float64)
    g = s(t)
    assert (g[1:] - g[:-1] >= 0).all() and g[-1] > g[0]
    a, sig = alpha_sigma(s, t)
    np.testing.assert_allclose((a**2 + sig**2).numpy(), 1.0, atol=1e-12)


def test_closed_forms():
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    # VP-SDE: alphabar = exp(-t^2 (b_max - b_min) / 2 - t b_min)
    ab = torch.exp(-(t**2) * (20 - 0.1) / 2 - t * 0.1)
    np.testing.assert_allclose(alpha_sigma(VPSDE(), t)[0].square().numpy(), ab.numpy(), rtol=1e-12)
    # cosine: alphabar = f(t) / f(0), f = cos^2((t + s) / (1 + s) pi / 2)
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    want = [f(u) / f(0) for u in t.tolist()]
    np.testing.assert_allclose(alpha_sigma(Cosine(), t)[0].square().numpy(), want, rtol=1e-10)
    # linear gamma
    np.testing.assert_allclose(LinearGamma()(t).numpy(), (-13.3 + 18.3 * t).numpy(), rtol=1e-12)


def test_posterior_matches_ddpm_formulas():
    """q(x_{t-1} | x_t, x_0) coefficients of Ho et al. eq. 7, computed from alphabar directly."""
    s = LinearBeta(1000)
    ab = torch.exp(s.log_alphabar)  # index i <-> t = i / T
    for i in [1, 2, 10, 500, 1000]:
        c_z, c_x, var = posterior(s, i / 1000, (i - 1) / 1000)
        beta = 1 - ab[i] / ab[i - 1]
        assert math.isclose(c_x, ab[i - 1].sqrt() * beta / (1 - ab[i]), rel_tol=1e-9, abs_tol=1e-15)
        assert math.isclose(c_z, (1 - beta).sqrt() * (1 - ab[i - 1]) / (1 - ab[i]), rel_tol=1e-9)
        assert math.isclose(var, (1 - ab[i - 1]) / (1 - ab[i]) * beta, rel_tol=1e-9, abs_tol=1e-20)
    # to s = 0 the posterior is a point mass on x0
    c_z, c_x, var = posterior(s, 0.3, 0.0)
    assert c_z == 0 and abs(c_x - 1) < 1e-12 and var == 0


@pytest.mark.parametrize("steps", [1, 7, 20, 50, 1000])
def test_grids_match_diffusers_spacings(steps):
    s = LinearBeta(1000)
    for spacing in ["leading", "trailing"]:
        sched = DDIMScheduler(num_train_timesteps=1000, timestep_spacing=spacing)
        sched.set_timesteps(steps)
        want = torch.cat([(sched.timesteps.double() + 1) / 1000, torch.zeros(1, dtype=torch.float64)])
        got = time_grid(s, steps, spacing)
        assert torch.equal(got, want), f"{spacing} grid with {steps} steps differs from diffusers"
    # our linspace is DPM-Solver's (steps + 1 points, the last dropped), not DDIMScheduler's
    dpm = DPMSolverMultistepScheduler(num_train_timesteps=1000)
    dpm.set_timesteps(steps)
    # (diffusers keeps a repeated timestep when rounding collides, at 1000 steps; we drop it: h = 0)
    want = torch.unique_consecutive((dpm.timesteps.double() + 1) / 1000)
    assert torch.equal(time_grid(s, steps, "linspace")[:-1], want)


def test_continuous_grids():
    for s in [Cosine(), VPSDE(), LinearGamma()]:
        g = time_grid(s, 10, "leading")
        assert len(g) == 11 and g[0] == 1 and g[-1] == 0 and (g[:-1] > g[1:]).all()
        q = time_grid(s, 10, "quadratic")
        np.testing.assert_allclose(q[:-1].numpy(), (torch.linspace(1, 0, 11, dtype=torch.float64)[:-1] ** 2).numpy())
        lg = time_grid(s, 8, "logsnr")
        gam = s(lg[:-1]).numpy()
        np.testing.assert_allclose(np.diff(gam), np.diff(gam)[0], rtol=1e-6)  # uniform in log SNR


def test_schedule_errors():
    with pytest.raises(TrilemmaError, match="unknown schedule"):
        build_schedule(ScheduleConfig(name="sigmoid"))
    with pytest.raises(TrilemmaError, match="exceeds"):
        time_grid(LinearBeta(100), 101)
    with pytest.raises(TrilemmaError, match="spacing"):
        time_grid(LinearBeta(), 10, "karras")


def test_sample_t_on_grid():
    s = LinearBeta(1000)
    u = torch.tensor([0.0, 0.0005, 0.9999999])
    assert torch.allclose(s.sample_t(u), torch.tensor([0.001, 0.001, 1.0]))
    assert torch.allclose(LinearGamma().sample_t(torch.tensor([0.0, 0.25])), torch.tensor([1.0, 0.75]))
