"""VDM: the learned schedule, the variational bound and its terms, bits/dim, training and sampling."""

import math

import pytest
import torch
from torch import nn

from helpers import TOY_VDM, write_config
from trilemma.config import load_config
from trilemma.errors import TrilemmaError
from trilemma.families import build_family
from trilemma.bounds import decoder_logits, decoder_nll
from trilemma.families.vdm import VDMDenoiser, stratified, vdm_terms
from trilemma.metrics.likelihood import evaluate_bound
from trilemma.networks import MLP
from trilemma.schedules import GradScale, LearnedGamma, LinearGamma

def _bent(seed: int, gamma_min=-13.3, gamma_max=5.0) -> LearnedGamma:
    """A learned schedule whose shape is far from linear: raw weights of both signs, a strong sigmoid part."""
    torch.manual_seed(seed)
    s = LearnedGamma(gamma_min, gamma_max, hidden=16)
    with torch.no_grad():
        s.l1_w.fill_(-0.5)  # negative raw weights: abs makes them count positively
        s.l2_w.mul_(8.0)
        s.l2_b.normal_(0.0, 4.0)
        s.l3_w.mul_(40.0)
    return s


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_learned_gamma_is_monotone_and_hits_its_endpoints_exactly(seed):
    s = _bent(seed)
    with torch.no_grad():
        s.gamma_0.add_(seed - 1.0)  # as an optimizer step moves the endpoints
        s.width.sub_(seed)
        g0, g1 = s.endpoints()
        t = torch.linspace(0, 1, 10_001, dtype=torch.float64)
        g = s(t)
    assert g[0].item() == g0.item() and g[-1].item() == g1.item(), (g[0].item(), g0.item(), g[-1].item(), g1.item())
    assert g1 > g0
    diffs = g.diff()
    assert (diffs >= 0).all(), f"decreases by {diffs.min().item():.3e} somewhere"
    lin = g0 + (g1 - g0) * t
    assert (g - lin).abs().max() > 1.0, "the test schedule should be far from linear"
    # gamma' by autograd is the slope of gamma (central differences) and non-negative
    tt = torch.rand(64, dtype=torch.float64) * 0.98 + 0.01
    _, dg = s(tt, derivative=True)
    with torch.no_grad():
        fd = (s(tt + 1e-6) - s(tt - 1e-6)) / 2e-6
    torch.testing.assert_close(dg.detach(), fd, rtol=1e-5, atol=1e-5)
    assert (dg >= 0).all()


class Float32Net(nn.Module):
    """A fixed random MLP eps-network evaluated in float32 on float64 inputs."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = MLP(2, 32, 2).eval().requires_grad_(False)

    def forward(self, z, cond):
        return self.net(z.float(), cond).double()


def _fixed_net(seed=0):
    return Float32Net(seed)


def _diffusion_nats(schedule, x, u, eps, timesteps=0):
    den = VDMDenoiser(_fixed_net(), schedule)
    with torch.no_grad():
        return vdm_terms(den, schedule, x, u, eps, eps, levels=None, timesteps=timesteps).diffusion


def _draws(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64) * 0.7
    return x, torch.rand(n, generator=g, dtype=torch.float64), torch.randn(n, 2, generator=g, dtype=torch.float64)


def test_continuous_loss_depends_on_the_schedule_only_through_its_endpoints():
    """VDM's invariance: with the network conditioned on gamma, L_inf = 0.5 int_{gamma_0}^{gamma_1} E||eps - eps_hat||^2
    dgamma, so a bent schedule with the same endpoints has the same expectation (within 4 standard errors of
    the difference of two independent Monte-Carlo means) and a schedule with another gamma_0 does not."""
    n = 60_000
    x, u, eps = _draws(n, 0)
    means = {}
    for name, sched in {"linear": LinearGamma(-13.3, 5.0), "bent": _bent(0), "other": LinearGamma(-9.0, 5.0)}.items():
        d = _diffusion_nats(sched, x, u, eps)
        means[name] = (d.mean().item(), d.std().item() / math.sqrt(n))
    (a, sa), (b, sb), (c, sc) = means["linear"], means["bent"], means["other"]
    se = math.hypot(sa, sb)
    assert abs(a - b) < 4 * se, f"same endpoints: {a:.4f} vs {b:.4f} (se {se:.4f})"
    assert abs(a - c) > 10 * math.hypot(sa, sc), f"other endpoints: {a:.4f} vs {c:.4f}"


def test_discrete_loss_tends_to_the_continuous_one():
    """L_T -> L_inf as T grows : on common draws the mean gap shrinks like 1/T, and at T = 1000
    it is below 2% of the loss (this random network's loss is far from optimal, so its gap is large)."""
    n = 60_000
    x, u, eps = _draws(n, 1)
    sched = LinearGamma(-13.3, 5.0)
    cont = _diffusion_nats(sched, x, u, eps)
    gaps = {T: (_diffusion_nats(sched, x, u, eps, T) - cont).mean().item() for T in (2, 10, 100, 1000)}
    assert abs(gaps[2]) > abs(gaps[10]) > abs(gaps[100]) > abs(gaps[1000]), gaps
    assert abs(gaps[100]) > 5 * abs(gaps[1000]), f"first order in 1/T: {gaps}"
    assert abs(gaps[1000]) < 0.02 * cont.mean().item(), (gaps, cont.mean().item())


@pytest.mark.parametrize("levels", [17, 256])
@pytest.mark.parametrize("log_var", [-13.3, -8.0, -3.0])
def test_decoder_is_a_distribution_over_the_levels(levels, log_var):
    """The decoder's probabilities over the levels sum to 1, and the windowed NLL used in training equals the
    NLL from the full softmax over all levels."""
    g = torch.Generator().manual_seed(levels)
    x = torch.randint(0, levels, (6, 1, 4, 4), generator=g).double() * 2 / (levels - 1) - 1
    mean = x + math.exp(log_var / 2) * torch.randn(x.shape, generator=g, dtype=torch.float64)
    probs = torch.softmax(decoder_logits(mean, torch.tensor(log_var, dtype=torch.float64), levels), -1)
    torch.testing.assert_close(probs.sum(-1), torch.ones_like(mean), rtol=0, atol=1e-12)
    k = ((x + 1) * (levels - 1) / 2).round().long()
    full = -probs.log().gather(-1, k[..., None]).squeeze(-1).flatten(1).sum(1)
    torch.testing.assert_close(decoder_nll(x, mean, torch.tensor(log_var, dtype=torch.float64), levels), full, rtol=1e-9, atol=1e-9)
    # a mean far outside [-1, 1] (a model's x0_hat can be) still gets a finite NLL, the full softmax's
    far = mean + torch.where(x > 0, 40.0, -40.0) * 2 / (levels - 1)
    full_far = -torch.log_softmax(decoder_logits(far, torch.tensor(log_var, dtype=torch.float64), levels), -1)
    full_far = full_far.gather(-1, k[..., None]).squeeze(-1).flatten(1).sum(1)
    torch.testing.assert_close(decoder_nll(x, far, torch.tensor(log_var, dtype=torch.float64), levels), full_far,
                               rtol=1e-9, atol=1e-9)


class GaussianEps(nn.Module):
    """The exact eps-prediction for data x ~ N(0, s^2 I): E[eps | z] = sigma z / (alpha^2 s^2 + sigma^2)."""

    def __init__(self, s: float, cond_min=-13.3, cond_max=5.0):
        super().__init__()
        self.s2, self.lo, self.hi = s * s, cond_min, cond_max

    def forward(self, z, cond):
        g = (cond.double() / 1000 * (self.hi - self.lo) + self.lo)[:, None]
        a2, s2 = torch.sigmoid(-g), torch.sigmoid(g)
        return s2.sqrt() * z / (a2 * self.s2 + s2)


def gaussian_bound_closed_form(s: float, g0: float, g1: float) -> dict:
    """The expected VDM bound per dimension (nats) for x ~ N(0, s^2) with the exact denoiser: prior
    0.5 (sigma_1^2 + alpha_1^2 s^2 - log sigma_1^2 - 1); Gaussian decoder 0.5 (log 2 pi + gamma_0 + 1);
    diffusion 0.5 int_{g0}^{g1} s^2 / (s^2 + e^g) dg = 0.5 [g - log(s^2 + e^g)]_{g0}^{g1}."""
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    prior = 0.5 * (sig(g1) + sig(-g1) * s * s - math.log(sig(g1)) - 1)
    recon = 0.5 * (math.log(2 * math.pi) + g0 + 1)
    f = lambda g: g - math.log(s * s + math.exp(g))  # noqa: E731
    return {"prior": prior, "recon": recon, "diffusion": 0.5 * (f(g1) - f(g0))}


@pytest.mark.parametrize("s,g0,g1", [(0.5, -13.3, 5.0), (1.0, -6.0, 8.0)])
def test_gaussian_bits_per_dim_match_the_closed_form(s, g0, g1):
    """Monte-Carlo bits/dim of each term (evaluate_bound, 20,000 points x 2 dims) against the closed form,
    within 4 standard errors; and the closed-form total is the Gaussian's true NLL 0.5 log(2 pi e s^2) up to
    the prior and decoder gaps, which vanish as the endpoints widen."""
    n, D = 20_000, 2
    x = torch.randn(n, D, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * s
    sched = LinearGamma(g0, g1)
    den = VDMDenoiser(GaussianEps(s), sched)
    res = evaluate_bound(lambda x, u, e, e0: vdm_terms(den, sched, x, u, e, e0, levels=None), x,
                         to_bpd=lambda v: v / (D * math.log(2)), batch_size=5000, draws=1, seed=1)
    exact = {k: v / math.log(2) for k, v in gaussian_bound_closed_form(s, g0, g1).items()}
    exact["total"] = sum(exact.values())
    for k, want in exact.items():
        got, ci = res["terms"][k]["mean"], res["terms"][k]["ci95"]
        assert abs(got - want) <= 4 * ci / 1.96 + 1e-9, f"{k}: {got:.5f} vs closed form {want:.5f} (ci {ci:.5f})"
    nll = 0.5 * math.log(2 * math.pi * math.e * s * s)
    wide = sum(gaussian_bound_closed_form(s, -30.0, 30.0).values())
    assert abs(wide - nll) < 1e-6, (wide, nll)
    assert sum(gaussian_bound_closed_form(s, g0, g1).values()) >= nll


def test_shape_gradient_is_that_of_the_squared_diffusion_loss():
    """VDM's variance minimisation in one backward pass: with shape_loss variance the shape parameters get the gradient
    of mean(L_diff^2) (L in bits/dim), the endpoints and the network that of the bound mean(L)."""
    cfg = load_config(None, ["family=vdm", "schedule.name=learned", "schedule.hidden=16", "vdm.fourier=false",
                             "model.hidden=16", "model.depth=1"])
    fam = build_family(cfg, (2,))
    from trilemma.training import ShardedRNG

    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    fam.loss("model", fam.modules, x, ShardedRNG(5), 0).mean().backward()
    got = {n: p.grad.clone() for n, p in fam.modules.named_parameters()}
    fam.modules.zero_grad()
    rng = ShardedRNG(5)
    t = fam.terms(fam.modules, x, rng.stratified(32), rng.randn(x.shape), rng.randn(x.shape))
    bound, diff = fam.to_bpd(t.total()).mean(), fam.to_bpd(t.diffusion)
    shape = [p for n, p in fam.modules.named_parameters() if n.startswith("schedule.l")]
    want_shape = torch.autograd.grad(diff.square().mean(), shape, retain_graph=True)
    bound.backward()
    for (n, p) in fam.modules.named_parameters():
        want = want_shape[[q is p for q in shape].index(True)] if any(q is p for q in shape) else p.grad
        torch.testing.assert_close(got[n], want, rtol=1e-4, atol=1e-7, msg=lambda m: f"{n}: {m}")
    assert any(g.abs().sum() > 0 for g in want_shape)


def test_stratified_times_cover_the_unit_interval_once():
    u = stratified(torch.tensor([0.37], dtype=torch.float64), 8)
    assert ((u >= 0) & (u < 1)).all()
    torch.testing.assert_close(torch.sort(u).values.diff(), torch.full((7,), 1 / 8, dtype=torch.float64))


def test_ddpm_refuses_a_schedule_it_would_not_train():
    with pytest.raises(TrilemmaError, match="learned schedule needs family: vdm"):
        build_family(load_config(None, ["family=ddpm", "schedule.name=learned"]), (2,))


@pytest.mark.parametrize("overrides,fragment", [
    (["schedule.name=linear-beta"], "continuous-time schedule"),
    (["schedule.name=cosine"], "needs both finite"),
    (["vdm.timesteps=10"], "shape_loss: bound"),
    (["vdm.shape_loss=elbo"], "vdm.shape_loss"),
    (["vdm.fourier_min=9", "vdm.fourier_max=8"], "vdm.fourier_max"),
    (["schedule.gamma_min=5", "schedule.gamma_max=-5"], "gamma_max > gamma_min"),
])
def test_bad_vdm_configs_are_one_line_errors(overrides, fragment):
    with pytest.raises(TrilemmaError, match=fragment.replace("(", r"\(")):  # when loaded, or when built
        build_family(load_config(None, ["family=vdm", "schedule.name=learned", *overrides]), (1, 8, 8))


def test_vdm_trains_samples_and_reports_three_bound_terms(tmp_path):
    """A tiny VDM trains; the ancestral (VDM), DDIM and DPM-Solver++ samplers run on it through the denoiser
    contract; `trilemma eval --bpd` prints prior, reconstruction and diffusion separately and the total is
    their sum."""
    import json

    from click.testing import CliRunner

    from trilemma.checkpoint import load_checkpoint
    from trilemma.cli import main
    from trilemma.denoiser import CountNFE
    from trilemma.loading import denoiser_from_checkpoint
    from trilemma.samplers import generate
    from trilemma.training import train

    run = tmp_path / "vdm"
    train(load_config(write_config(tmp_path / "vdm.yaml", TOY_VDM)), run, progress=False)
    den = CountNFE(denoiser_from_checkpoint(load_checkpoint(run)))
    for sampler, steps in (("ddpm", 7), ("ddim", 5), ("dpmpp", 4)):
        den.nfe = 0
        a = generate(den, 16, (2,), sampler=sampler, steps=steps, seed=3)
        b = generate(den, 16, (2,), sampler=sampler, steps=steps, seed=3)
        assert a.shape == (16, 2) and torch.isfinite(a).all() and torch.equal(a, b)
        assert den.nfe == 2 * steps
    res = CliRunner().invoke(main, ["eval", str(run), "--bpd", "-n", "200", "--draws", "2", "--quiet",
                                    "--json", str(tmp_path / "bpd.json")])
    assert res.exit_code == 0, res.output
    for label in ("prior", "reconstruction", "diffusion", "total", "Monte-Carlo variance"):
        assert label in res.output
    out = json.loads((tmp_path / "bpd.json").read_text())
    terms = out["terms"]
    assert out["images"] == 200 and out["draws"] == 2
    assert abs(terms["total"]["mean"] - sum(terms[k]["mean"] for k in ("prior", "recon", "diffusion"))) < 1e-6
