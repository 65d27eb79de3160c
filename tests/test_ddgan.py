"""DDGAN: the VP-SDE grid against closed forms computed here, the generator as a denoiser, training."""

import math

import numpy as np
import pytest
import torch

from helpers import DIGITS_GAN, TOY_GAN, write_config
from trilemma.config import load_config
from trilemma.denoiser import CountNFE, seed_latents
from trilemma.families import build_family
from trilemma.loading import denoiser_from_checkpoint
from trilemma.families.ddgan import posterior_sample, step_pairs
from trilemma.checkpoint import load_checkpoint
from trilemma.samplers import generate, sample_ancestral
from trilemma.schedules import VPSDEGrid, alpha_sigma, posterior, time_grid, transition
from trilemma.training import train

T, B_MIN, B_MAX, EPS = 4, 0.1, 20.0, 1e-3


def closed_form_grid():
    """Per-step betas, alphabar, posterior variance and mean coefficients of DDGAN's T-step VP-SDE
    (Xiao et al. 2022, appendix; DDPM eq. 7), in numpy float64 from the definitions."""
    u = EPS + np.arange(T + 1) / T * (1 - EPS)
    ab_sde = np.exp(-(0.5 * (B_MAX - B_MIN) * u**2 + B_MIN * u))  # alphabar(u) of the VP-SDE
    beta = 1 - ab_sde[1:] / ab_sde[:-1]  # beta_1..T
    ab = np.cumprod(1 - beta)  # alphabar_1..T
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    var = (1 - ab_prev) / (1 - ab) * beta  # beta tilde
    c_x = np.sqrt(ab_prev) * beta / (1 - ab)
    c_z = np.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab)
    return beta, ab, var, c_x, c_z


def test_vp_sde_grid_matches_closed_forms():
    s = VPSDEGrid(T, B_MIN, B_MAX, EPS)
    beta, ab, var, c_x, c_z = closed_form_grid()
    np.testing.assert_allclose(s.betas().numpy(), beta, rtol=1e-12)
    t = torch.arange(1, T + 1, dtype=torch.float64) / T
    a, sig = alpha_sigma(s, t)
    np.testing.assert_allclose((a**2).numpy(), ab, rtol=1e-10)
    np.testing.assert_allclose((sig**2).numpy(), 1 - ab, rtol=1e-10)
    pz, px, pv = posterior(s, t, t - 1 / T)
    np.testing.assert_allclose(pv.numpy(), var, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(px.numpy(), c_x, rtol=1e-10)
    np.testing.assert_allclose(pz.numpy(), c_z, rtol=1e-10, atol=1e-15)
    at, st = transition(s, t, t - 1 / T)
    np.testing.assert_allclose((at**2).numpy(), 1 - beta, rtol=1e-10)
    np.testing.assert_allclose((st**2).numpy(), beta, rtol=1e-10)
    # the network sees the step index k - 1, and sampling visits every step once
    assert s.timestep(t).tolist() == [0.0, 1.0, 2.0, 3.0]
    assert time_grid(s, T).tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]


def test_last_step_returns_x0_exactly():
    s = VPSDEGrid(T)
    x_t, x0, noise = torch.randn(3, 8, 2).unbind(0)
    t, zero = torch.full((8,), 1 / T, dtype=torch.float64), torch.zeros(8, dtype=torch.float64)
    c_z, c_x, var = posterior(s, t, zero)
    assert torch.all(c_z == 0) and torch.all(c_x == 1) and torch.all(var == 0)
    assert torch.equal(posterior_sample(s, x_t, x0, t, zero, noise), x0)


def test_training_pairs_have_the_forward_marginals():
    """x_{k-1} ~ q(x_{k-1} | x) and x_k ~ q(x_k | x_{k-1}) give x_k ~ q(x_k | x): for x = 0 the
    empirical std of x_k at every step is sigma_k (200k draws)."""
    s = VPSDEGrid(T)
    gen = torch.Generator().manual_seed(0)
    n = 200_000
    x = torch.zeros(n, 1)
    u = torch.rand(n, generator=gen)
    t, s_, x_s, x_t = step_pairs(s, x, u, torch.randn(n, 1, generator=gen), torch.randn(n, 1, generator=gen))
    assert torch.allclose(t - s_, torch.full_like(t, 1 / T))
    for k in range(1, T + 1):
        sel = (t * T).round() == k
        _, sigma = alpha_sigma(s, torch.tensor(k / T, dtype=torch.float64))
        assert abs(x_t[sel].std().item() - sigma.item()) < 0.01
        _, sigma_prev = alpha_sigma(s, torch.tensor((k - 1) / T, dtype=torch.float64))
        assert abs(x_s[sel].std().item() - sigma_prev.item()) < 0.01


@pytest.mark.parametrize("base,shape", [(TOY_GAN, (2,)), (DIGITS_GAN, (1, 8, 8))], ids=["mlp", "unet"])
def test_generator_depends_on_z_and_is_seeded(tmp_path, base, shape):
    cfg = load_config(write_config(tmp_path / "c.yaml", base))
    torch.manual_seed(0)
    fam = build_family(cfg, shape)
    den = fam.denoiser(fam.modules).eval()
    x_t = torch.randn(4, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = den(x_t, 0.5), den(x_t, 0.5)  # two latents for one x_t
        assert (a - b).abs().flatten(1).amax(1).min() > 1e-4, "two z give different x0' for every x_t"
        seed_latents(den, torch.Generator().manual_seed(7))
        c = den(x_t, 0.5)
        seed_latents(den, torch.Generator().manual_seed(7))
        assert torch.equal(c, den(x_t, 0.5)), "the same latent generator gives the same x0'"
    if len(shape) == 3:
        assert a.abs().max() <= 1.0, "the image generator ends in tanh"


def test_ddgan_samples_with_T_evaluations_and_a_seed(tmp_path):
    cfg = load_config(write_config(tmp_path / "c.yaml", TOY_GAN))
    torch.manual_seed(0)
    fam = build_family(cfg, (2,))
    den = CountNFE(fam.denoiser(fam.modules).eval())
    x1 = generate(den, 16, (2,), sampler="ddpm", steps=T, seed=3)
    assert den.nfe == T and x1.shape == (16, 2) and torch.isfinite(x1).all()
    assert torch.equal(x1, generate(den, 16, (2,), sampler="ddpm", steps=T, seed=3))
    assert not torch.equal(x1, generate(den, 16, (2,), sampler="ddpm", steps=T, seed=4))
    with pytest.raises(Exception, match="exceeds"):
        generate(den, 16, (2,), sampler="ddpm", steps=T + 1)


def test_ddgan_trains_and_loads_from_its_checkpoint(tmp_path):
    """A few steps of the one training loop; the checkpoint holds the generator's EMA, which samples."""
    cfg = load_config(write_config(tmp_path / "c.yaml", TOY_GAN, train={"steps": 4}))
    train(cfg, tmp_path / "run", progress=False)
    ck = load_checkpoint(tmp_path / "run")
    assert all(k.startswith("gen.") for k in ck.weights), "only G is kept as EMA weights"
    tensors, meta = ck.train_state()
    assert set(meta["optimizers"]) == {"disc", "gen"}
    den = denoiser_from_checkpoint(ck)
    x = sample_ancestral(den, den.schedule, torch.randn(8, 2), time_grid(den.schedule, T))
    assert torch.isfinite(x).all()


def test_ddgan_needs_a_discrete_schedule(tmp_path):
    from trilemma.errors import TrilemmaError

    cfg = load_config(write_config(tmp_path / "c.yaml", TOY_GAN, schedule={"name": "vp-sde"}))
    with pytest.raises(TrilemmaError, match="discrete schedule"):
        build_family(cfg, (2,))


@pytest.mark.parametrize("key", ["lazy_reg", "mapping_layers"])
def test_ddgan_rejects_a_non_positive_gan_count(tmp_path, key):
    from trilemma.errors import TrilemmaError

    with pytest.raises(TrilemmaError, match=f"gan.{key} must be >= 1, got 0"):  # when loaded, or when built
        build_family(load_config(write_config(tmp_path / "c.yaml", DIGITS_GAN, gan={key: 0})), (1, 8, 8))


def test_r1_penalty_is_the_squared_input_gradient(tmp_path):
    """The disc loss with R1 minus the loss without it equals r1_gamma / 2 ||grad_x D(x_real)||^2."""
    cfg = load_config(write_config(tmp_path / "c.yaml", TOY_GAN))
    torch.manual_seed(0)
    fam = build_family(cfg, (2,))
    from trilemma.training import ShardedRNG

    x = torch.randn(16, 2)
    with_r1 = fam.loss("disc", fam.modules, x, ShardedRNG(5), step=0)  # lazy_reg 2: step 0 has R1
    without = fam.loss("disc", fam.modules, x, ShardedRNG(5), step=1)
    t, s, x_s, x_t = step_pairs(fam.schedule, x, *_draws(ShardedRNG(5), x))
    x_s.requires_grad_(True)
    d = fam.modules["disc"](x_s, x_t, fam.schedule.timestep(t).float())
    (g,) = torch.autograd.grad(d.sum(), x_s)
    expected = 0.5 * cfg.gan.r1_gamma * g.square().sum(1)
    torch.testing.assert_close(with_r1 - without, expected, rtol=1e-4, atol=1e-6)
    assert math.isclose(cfg.gan.r1_gamma, 0.05)


def _draws(rng, x):
    return rng.rand(x.shape[0]), rng.randn(x.shape), rng.randn(x.shape)


def test_minibatch_std_groups_consecutive_samples_and_shards_exactly():
    """Each run of `group` consecutive samples gets the mean (over features and positions) of its
    per-feature std; splitting the batch into contiguous halves the group divides changes nothing
    (what keeps a data-parallel discriminator equal to one process)."""
    from trilemma.networks.discriminator import minibatch_std

    g = torch.Generator().manual_seed(0)
    h = torch.randn(8, 3, 2, 2, generator=g)
    out = minibatch_std(h, 4)
    assert out.shape == (8, 4, 2, 2) and torch.equal(out[:, :3], h)
    x = h.numpy().reshape(2, 4, -1)
    expect = np.sqrt(x.var(axis=1) + 1e-8).mean(axis=1)  # (2,) per group
    np.testing.assert_allclose(out[:, 3].numpy(), np.repeat(expect, 4)[:, None, None].repeat(2, 1).repeat(2, 2), rtol=1e-5)
    halves = torch.cat([minibatch_std(h[:4], 4), minibatch_std(h[4:], 4)])
    torch.testing.assert_close(out, halves, rtol=0, atol=0)
    same = minibatch_std(torch.ones(4, 5), 4)  # a collapsed group: zero spread
    assert same.shape == (4, 6) and torch.allclose(same[:, 5], torch.full((4,), 1e-4))


def test_discriminator_fourier_features_do_not_alias_over_the_data_range(tmp_path):
    """Two 2-D inputs one lowest period of the old base (2) apart must differ in some feature other
    than x itself, over the range unit-variance toy data and its noised x_t span; the lowest period is
    gan.d_fourier_period (8 by default), so data at another scale can widen it."""
    from trilemma.errors import TrilemmaError
    from trilemma.networks.discriminator import MLPDiscriminator
    from trilemma.networks.mlp import fourier_features

    base = MLPDiscriminator(fourier=8).fourier_base
    x = torch.tensor([[-1.4, 0.3]], dtype=torch.float64)
    f, f2 = fourier_features(x, 8, base), fourier_features(x + 2.0, 8, base)
    assert (f[:, 2:] - f2[:, 2:]).abs().max() > 0.5
    k = torch.arange(8, dtype=torch.float64)
    np.testing.assert_allclose(f[0, 2:10].numpy(), torch.sin(-1.4 * base * 2 ** k).numpy())
    assert 2 * math.pi / base == 8  # lowest period covers [-4, 4]
    cfg = load_config(write_config(tmp_path / "c.yaml", TOY_GAN, gan={"d_fourier_period": 24.0}))
    disc = build_family(cfg, (2,)).modules["disc"]
    assert math.isclose(disc.fourier_base, 2 * math.pi / 24)
    with pytest.raises(TrilemmaError, match="d_fourier_period"):
        build_family(load_config(write_config(tmp_path / "bad.yaml", TOY_GAN, gan={"d_fourier_period": 0.0})), (2,))


def test_residual_discriminator_input_is_the_forward_noise(tmp_path):
    """With gan.d_residual, D's second input for a real pair is exactly the standard-normal noise that took
    x_{t-1} to x_t (DDPM eq. 2), and for any pair it is a bijection of x_t at fixed x_{t-1} and step."""
    cfg = load_config(write_config(tmp_path / "c.yaml", TOY_GAN, gan={"d_residual": True}))
    fam = build_family(cfg, (2,))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=g)
    e_s, e_step = torch.randn(64, 2, generator=g), torch.randn(64, 2, generator=g)
    t, s, x_s, x_t = step_pairs(fam.schedule, x, torch.rand(64, generator=g, dtype=torch.float64), e_s, e_step)
    seen = {}

    def record(x_prev, second, timestep):
        seen["prev"], seen["second"] = x_prev, second
        return second.sum(1)

    fam.discriminate(record, x_s, x_t, fam.residual_coefs(x_t, t, s), torch.zeros(64), None)
    assert seen["prev"] is x_s
    torch.testing.assert_close(seen["second"], e_step, rtol=1e-5, atol=1e-5)
    a_ts, sig_ts = transition(fam.schedule, t, s)
    torch.testing.assert_close(a_ts.float()[:, None] * x_s + sig_ts.float()[:, None] * seen["second"], x_t)
    plain = build_family(load_config(write_config(tmp_path / "p.yaml", TOY_GAN)), (2,))
    plain.discriminate(record, x_s, x_t, plain.residual_coefs(x_t, t, s), torch.zeros(64), None)
    assert seen["second"] is x_t  # off by default: D sees the pair itself


def test_bounded_fourier_inputs_and_generator_features(tmp_path):
    """gan.d_raw_input: false zeroes the x columns of the discriminator's features and keeps the rest;
    model.fourier gives the MLP (generator or denoiser) Fourier input features; a discriminator left with
    no input at all is refused."""
    from trilemma.errors import TrilemmaError
    from trilemma.networks.mlp import fourier_features

    x = torch.tensor([[0.5, -2.0]])
    full, bounded = fourier_features(x, 3, 1.0), fourier_features(x, 3, 1.0, include_input=False)
    assert bounded.shape == full.shape and torch.equal(bounded[:, :2], torch.zeros(1, 2))
    torch.testing.assert_close(bounded[:, 2:], full[:, 2:], rtol=0, atol=0)
    cfg = load_config(write_config(tmp_path / "c.yaml", TOY_GAN, gan={"d_raw_input": False},
                                   model={"hidden": 32, "depth": 2, "fourier": 3, "fourier_period": 12.0}))
    mods = build_family(cfg, (2,)).modules
    assert mods["disc"].raw_input is False and mods["gen"].inp.in_features == 2 * (1 + 2 * 3)
    assert math.isclose(mods["gen"].fourier_base, 2 * math.pi / 12)
    # off by default, so MLPs trained before these keys (the shipped toy2d-ddpm) load unchanged
    plain = build_family(load_config(write_config(tmp_path / "p.yaml", TOY_GAN)), (2,)).modules
    assert plain["gen"].inp.in_features == 2 and plain["disc"].raw_input is True
    bad = load_config(write_config(tmp_path / "bad.yaml", TOY_GAN, gan={"d_raw_input": False, "d_fourier": 0}))
    with pytest.raises(TrilemmaError, match="d_raw_input"):
        build_family(bad, (2,))
    with pytest.raises(TrilemmaError, match="model.fourier_period"):
        build_family(load_config(write_config(tmp_path / "bad2.yaml", TOY_GAN,
                                              model={"fourier": 2, "fourier_period": 0.0})), (2,))


def test_coarse_to_fine_discriminator_bands(tmp_path):
    """gan.d_fourier_anneal: band k of D's Fourier features is weighted (1 - cos(pi clamp(b - k, 0, 1))) / 2
    with b = d_fourier * min(step / anneal, 1) bands on (the Nerfies/BARF window, computed here from its
    definition). At step 0 a bounded-feature D sees nothing of the pair, so its logit depends only on t; once
    the anneal is over it is the plain D; the key is refused where D has no Fourier features."""
    from trilemma.errors import TrilemmaError
    from trilemma.networks.mlp import coarse_to_fine_window, fourier_features

    w = coarse_to_fine_window(4, 1.25, dtype=torch.float64)
    torch.testing.assert_close(w, torch.tensor([1.0, (1 - math.cos(math.pi / 4)) / 2, 0.0, 0.0], dtype=torch.float64))
    x = torch.tensor([[0.5, -2.0]], dtype=torch.float64)
    n, base = 3, 0.7
    half = fourier_features(x, n, base, bands=1.5)
    for k, wk in enumerate([1.0, 0.5, 0.0]):  # columns: x (2), sin (d, k), cos (d, k)
        for d in range(2):
            arg = x[0, d].item() * base * 2**k
            assert math.isclose(half[0, 2 + d * n + k].item(), wk * math.sin(arg), abs_tol=1e-12)
            assert math.isclose(half[0, 2 + 2 * n + d * n + k].item(), wk * math.cos(arg), abs_tol=1e-12)
    torch.testing.assert_close(fourier_features(x, n, base, bands=float(n)), fourier_features(x, n, base))

    cfg = load_config(write_config(tmp_path / "c.yaml", TOY_GAN,
                                   gan={"d_fourier": 4, "d_raw_input": False, "d_fourier_anneal": 100}))
    fam = build_family(cfg, (2,))
    assert fam.fourier_bands(0) == 0.0 and fam.fourier_bands(25) == 1.0 and fam.fourier_bands(100) == 4.0 and fam.fourier_bands(10**6) == 4.0
    disc, g = fam.modules["disc"], torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(8, 2, generator=g) for _ in range(3))
    ts = torch.full((8,), 3.0)
    with torch.no_grad():
        torch.testing.assert_close(disc(a, b, ts, bands=0.0), disc(c, a, ts, bands=0.0))
        assert not torch.allclose(disc(a, b, ts, bands=1.0), disc(c, a, ts, bands=1.0))
        torch.testing.assert_close(disc(a, b, ts, bands=4.0), disc(a, b, ts))
    assert build_family(load_config(write_config(tmp_path / "p.yaml", TOY_GAN)), (2,)).fourier_bands(0) is None
    for gan in ({"d_fourier_anneal": -1}, {"d_fourier_anneal": 10, "d_fourier": 0}):
        with pytest.raises(TrilemmaError, match="d_fourier_anneal"):
            build_family(load_config(write_config(tmp_path / "bad.yaml", TOY_GAN, gan=gan)), (2,))
    img = load_config(write_config(tmp_path / "img.yaml", DIGITS_GAN, gan={"d_fourier_anneal": 10}))
    with pytest.raises(TrilemmaError, match="d_fourier_anneal"):
        build_family(img, (1, 8, 8))
