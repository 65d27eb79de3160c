"""Progressive distillation's target (Salimans & Ho 2022, Alg. 2) against closed forms on Gaussian data."""

import pytest
import torch
from torch import nn

from trilemma.denoiser import append_dims, batch_times
from trilemma.distillation import ddim_step, progressive_target, truncated_snr_weight
from trilemma.samplers import sample_ddim
from trilemma.schedules import Cosine, LinearBeta, alpha_sigma

M, S = 0.7, 1.3  # data x ~ N(M, S^2 I)


class GaussianDenoiser(nn.Module):
    """The exact E[x | z_t] for x ~ N(M, S^2 I), at a scalar or per-sample time."""

    def __init__(self, schedule, mean=M, std=S):
        super().__init__()
        self.schedule, self.mean, self.std = schedule, mean, std

    def forward(self, z, t):
        a, s = (append_dims(v, z.double()) for v in alpha_sigma(self.schedule, batch_times(t, z)))
        v = self.std**2
        return (self.mean + a * v / (a**2 * v + s**2) * (z.double() - a * self.mean)).to(z.dtype)


@pytest.mark.parametrize("schedule", [LinearBeta(1000), Cosine()], ids=["linear-beta", "cosine"])
@pytest.mark.parametrize("t, t_mid, s", [(1.0, 0.75, 0.5), (0.5, 0.25, 0.0), (0.3, 0.2, 0.1), (0.04, 0.02, 0.0)])
def test_one_student_step_lands_where_two_teacher_steps_land(schedule, t, t_mid, s):
    teacher = GaussianDenoiser(schedule)
    z_t = torch.randn(64, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 1.5
    two = sample_ddim(teacher, schedule, z_t, torch.tensor([t, t_mid, s], dtype=torch.float64))
    x_tilde = progressive_target(teacher, schedule, z_t, t, t_mid, s)
    (a_t, s_t), (a_s, s_s) = (alpha_sigma(schedule, torch.tensor(u, dtype=torch.float64)) for u in (t, s))
    one = ddim_step(z_t, x_tilde, a_t, s_t, a_s, s_s)
    err = (one - two).abs().max().item()
    assert err < 1e-6, f"one student step misses the teacher's two by {err:.2e}"
    # the same student step through the library's sampler, given x~ as its denoiser's answer
    via_sampler = sample_ddim(lambda z, u: x_tilde, schedule, z_t, torch.tensor([t, s], dtype=torch.float64))
    assert (via_sampler - two).abs().max().item() < 1e-6


def test_per_sample_times_equal_scalar_times():
    schedule = Cosine()
    teacher = GaussianDenoiser(schedule)
    z = torch.randn(6, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.tensor([1.0, 0.8, 0.6, 0.4, 0.2, 0.1], dtype=torch.float64)
    batched = progressive_target(teacher, schedule, z, t, t - 0.05, t - 0.1)
    one_by_one = torch.cat([progressive_target(teacher, schedule, z[i : i + 1], float(t[i]), float(t[i]) - 0.05,
                                               float(t[i]) - 0.1) for i in range(6)])
    assert torch.allclose(batched, one_by_one, rtol=1e-10, atol=1e-12)


def test_a_point_mass_teacher_gives_the_point_as_target():
    """For data = one point x*, E[x | z_t] = x* at every z and t: the teacher's steps are exact and the target is x*
    (an independent closed form, not the step algebra the target is solved from)."""
    schedule = LinearBeta(1000)
    x_star = torch.tensor([[0.3, -1.2]], dtype=torch.float64)
    teacher = lambda z, t: x_star.expand_as(z)  # noqa: E731
    z = torch.randn(32, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    target = progressive_target(teacher, schedule, z, 0.9, 0.6, 0.3)
    assert torch.allclose(target, x_star.expand_as(z), atol=1e-9)


def test_truncated_snr_weight_is_snr_floored_at_one():
    schedule = Cosine()
    t = torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64)
    like = torch.zeros(3, 2)
    a, s = alpha_sigma(schedule, t)
    snr = (a**2 / s**2).float()
    w = truncated_snr_weight(schedule, t, like)
    assert w.dtype == torch.float32 and torch.allclose(w, snr.clamp(min=1.0), rtol=1e-6)
    assert w[0] > 1 and w[2] == 1.0, "low noise: the SNR itself; high noise: the floor"


MU = torch.tensor([0.5, -0.3], dtype=torch.float64)
SIGMA = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=torch.float64)


class ExactConsistency(nn.Module):
    """The exact consistency function of x ~ N(MU, SIGMA): the probability-flow ODE's end from (z_t, t),
    x = MU + SIGMA^1/2 (a^2 SIGMA + s^2 I)^-1/2 (z_t - a MU) (SIGMA's eigenvectors diagonalise both factors)."""

    def __init__(self, schedule):
        super().__init__()
        self.schedule = schedule
        self.lam, self.vec = torch.linalg.eigh(SIGMA)

    def forward(self, z, t):
        a, s = alpha_sigma(self.schedule, torch.as_tensor(float(t), dtype=torch.float64))
        gain = self.lam.sqrt() / (a**2 * self.lam + s**2).sqrt()  # per eigen-direction
        return MU + ((z - a * MU) @ self.vec * gain) @ self.vec.T


@pytest.mark.parametrize("schedule", [LinearBeta(1000), Cosine()], ids=["linear-beta", "cosine"])
@pytest.mark.parametrize("steps", [1, 2])
def test_consistency_sampling_with_the_exact_function_draws_the_data_distribution(schedule, steps):
    """Multistep consistency sampling (Song et al. 2023, Alg. 1) from N(0, I) with the exact consistency function
    of a 2-D Gaussian: the samples' mean and covariance are the data's within 4 standard errors, at 1 and 2 steps."""
    from trilemma.samplers import SAMPLER_INFO, default_spacing, sample_consistency
    from trilemma.schedules import time_grid

    n = 20000
    ts = time_grid(schedule, steps, default_spacing("consistency"))
    assert len(ts) == steps + 1 and ts[0] == 1.0 and SAMPLER_INFO["consistency"].nfe(steps, {}) == steps
    x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(steps), dtype=torch.float64)
    x = sample_consistency(ExactConsistency(schedule), schedule, x_T, ts, generator=torch.Generator().manual_seed(9))
    se_mean = SIGMA.diagonal().sqrt() / n**0.5
    assert ((x.mean(0) - MU).abs() < 4 * se_mean).all(), (x.mean(0), MU)
    cov = torch.cov(x.T)
    se_cov = ((SIGMA.diagonal()[:, None] * SIGMA.diagonal()[None, :] + SIGMA**2) / n).sqrt()
    assert ((cov - SIGMA).abs() < 4 * se_cov).all(), (cov, SIGMA)
